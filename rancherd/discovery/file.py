"""``provider=file``: addresses listed in a file, read again whenever it changes.

The file holds ``host``, ``host:port``, ``[v6]:port`` entries separated by spaces or
newlines; ``#`` starts a comment. The provider stats it every second (device, inode, size,
mtime, ctime: an edit in place, an atomic rename and a chmod all show) and reads it again
when any of them changed, or while the last read failed. A missing file is an empty answer
and one log line; a bad entry is logged with its line number and skipped.

The file is small and local, so it is read in the trio thread: a stat and a read of at most
``MAX_FILE_BYTES`` take microseconds and keep the provider exact under a ``MockClock``.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import trio

from rancherd.addresses import parse_host_port
from rancherd.discovery.params import DiscoveryParams, FileParams
from rancherd.discovery.provider import (
    DEFAULT_REFRESH,
    Advertisement,
    AnswerSender,
    OnceLogger,
    Provider,
    ProviderSettings,
    emit_while_changing,
)

__all__ = ["MAX_FILE_BYTES", "POLL_INTERVAL", "FileProvider", "parse_address_list"]

log = logging.getLogger(__name__)

POLL_INTERVAL = 1.0
"""Seconds between two looks at the file."""

MAX_FILE_BYTES = 1 << 20
"""A longer file is an operator error (it would hold some 50,000 addresses)."""

_Signature = tuple[int, int, int, int, int]


def parse_address_list(text: str, default_port: int) -> tuple[frozenset[str], list[str]]:
    """Endpoints listed in ``text``, and one message per entry that is not an address.

    Entries are separated by whitespace; ``#`` comments run to the end of the line. A
    missing port is ``default_port``. Messages name the line: ``line 3: 'x:y': ...``.
    """
    endpoints: set[str] = set()
    problems: list[str] = []
    for number, line in enumerate(text.splitlines(), start=1):
        for word in line.partition("#")[0].split():
            try:
                address = parse_host_port(word)
            except ValueError as exc:
                problems.append(f"line {number}: {exc}")
                continue
            endpoints.add(address.endpoint(default_port))
    return frozenset(endpoints), problems


class FileProvider(Provider):
    """Answers the addresses listed in a file; advertises nothing."""

    name = "file"

    def __init__(
        self,
        params: FileParams,
        *,
        default_port: int,
        refresh: float = DEFAULT_REFRESH,
        poll_interval: float = POLL_INTERVAL,
    ) -> None:
        super().__init__(refresh=refresh)
        self.path = Path(params.path)
        self.default_port = default_port
        self.poll_interval = poll_interval
        self._signature: _Signature | None = None
        self._answer: frozenset[str] = frozenset()
        self._trouble = OnceLogger(log)

    @classmethod
    def create(cls, params: DiscoveryParams, settings: ProviderSettings) -> FileProvider:
        return cls(
            params.typed_as(FileParams),
            default_port=settings.default_port,
            refresh=settings.refresh,
        )

    async def run(
        self,
        advertisement: Advertisement | None,
        answers: AnswerSender,
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        self.poll()
        task_status.started()

        async def wait_change(deadline: float) -> frozenset[str]:
            before = self._answer
            while trio.current_time() < deadline:
                await trio.sleep_until(min(deadline, trio.current_time() + self.poll_interval))
                self.poll()
                if self._answer != before:
                    break
            return self._answer

        await emit_while_changing(answers, self.refresh, wait_change)

    def poll(self) -> frozenset[str]:
        """Look at the file; read it again if it changed. Returns the current answer."""
        try:
            stat = os.stat(self.path)
        except (FileNotFoundError, NotADirectoryError):
            self._signature = None
            self._answer = frozenset()
            self._trouble.report(
                logging.WARNING,
                f"discovery file {self.path} does not exist; no addresses until it does",
            )
            return self._answer
        except OSError as exc:
            return self._failed(exc)
        signature = (stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns)
        if signature == self._signature:
            return self._answer
        try:
            data = _read_bounded(self.path)
        except OSError as exc:
            return self._failed(exc)
        self._signature = signature
        if data is None:
            self._answer = frozenset()
            self._trouble.report(
                logging.ERROR,
                f"discovery file {self.path} is longer than {MAX_FILE_BYTES} bytes; "
                "ignoring it until it is shorter",
            )
            return self._answer
        answer, problems = parse_address_list(
            data.decode("utf-8", errors="replace"), self.default_port
        )
        for problem in problems:
            log.warning("discovery file %s, %s; skipped", self.path, problem)
        self._trouble.clear(f"discovery file {self.path} can be read now")
        if answer != self._answer:
            log.info("discovery file %s lists %d addresses", self.path, len(answer))
        self._answer = answer
        return answer

    def _failed(self, exc: OSError) -> frozenset[str]:
        # No signature: the next poll tries again, whatever the stat says.
        self._signature = None
        self._answer = frozenset()
        self._trouble.report(
            logging.ERROR,
            f"cannot read discovery file {self.path}: {exc.strerror or exc}; "
            f"retrying every {self.poll_interval:g}s",
        )
        return self._answer


def _read_bounded(path: Path) -> bytes | None:
    """The file's bytes, or None if it is longer than MAX_FILE_BYTES."""
    with path.open("rb") as stream:
        data = stream.read(MAX_FILE_BYTES + 1)
    return None if len(data) > MAX_FILE_BYTES else data
