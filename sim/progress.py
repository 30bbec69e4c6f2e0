"""A plain-text progress bar on stderr (wall clock only; never on a simulated path)."""

from __future__ import annotations

import sys
import time
from typing import TextIO

WIDTH = 30


class Progress:
    def __init__(
        self, total: int, label: str, *, stream: TextIO | None = None, enabled: bool = True
    ) -> None:
        self.total = max(total, 1)
        self.label = label
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = enabled
        self.done = 0
        self.started = time.monotonic()
        self._tty = self.stream.isatty()
        self._last_draw = 0.0
        self._last_tenth = -1

    def advance(self, count: int = 1) -> None:
        self.done += count
        if not self.enabled:
            return
        if self._tty:
            now = time.monotonic()
            if now - self._last_draw >= 0.1 or self.done >= self.total:
                self._last_draw = now
                self.stream.write("\r" + self._line())
                self.stream.flush()
        else:
            tenth = self.done * 10 // self.total
            if tenth != self._last_tenth:
                self._last_tenth = tenth
                self.stream.write(self._line() + "\n")
                self.stream.flush()

    def advance_one(self, _result: object) -> None:
        """Callback form: one more item is done (its value is ignored)."""
        self.advance()

    def _line(self) -> str:
        filled = WIDTH * self.done // self.total
        elapsed = time.monotonic() - self.started
        return (
            f"{self.label} [{'#' * filled}{'.' * (WIDTH - filled)}] "
            f"{self.done}/{self.total} {elapsed:.0f}s"
        )

    def finish(self) -> None:
        if self.enabled and self._tty:
            self.stream.write("\n")
            self.stream.flush()
