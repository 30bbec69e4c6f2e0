"""The event loop: one thread, virtual time, a heap of ``(time, seq, handler, args)``.

``seq`` breaks ties in scheduling order, so two events at the same virtual time always run
in the order they were scheduled. A handler returns a trace record (a tuple of ``str``,
``int``, ``float``, ``bool``, ``None`` and nested tuples) when the event was delivered, or
``None`` when it was stale (a timer superseded, a message for a crashed incarnation). The
trace hash is SHA-256 over ``repr((time, record))`` of every delivered event: ``repr`` of
those types is canonical (floats print their shortest round-trip form), so two runs with
the same seed produce the same hash, in any process, and any divergence changes it.
"""

from __future__ import annotations

import hashlib
import heapq
from collections.abc import Callable
from typing import Any

TraceRecord = tuple[Any, ...]
Handler = Callable[..., TraceRecord | None]


class StopSimulation(Exception):
    """Raised by an ``after_event`` hook to end the run at once (an invariant broke)."""


class EventLoop:
    def __init__(self) -> None:
        self._heap: list[tuple[float, int, Handler, tuple[Any, ...]]] = []
        self._seq = 0
        self._first_seq = -(1 << 62)
        self.now = 0.0
        self.stop_at = float("inf")
        """Run no event later than this; hooks may lower it (early stop after settling)."""
        self.delivered = 0
        self.after_event: Callable[[], None] | None = None
        self._trace = hashlib.sha256()
        self._record_trace: Callable[[TraceRecord], None] | None = None

    def call_at(self, when: float, handler: Handler, *args: Any) -> None:
        """Run ``handler(*args)`` at virtual time ``when`` (never in the past)."""
        if when < self.now:
            raise ValueError(f"cannot schedule at {when!r}, before now ({self.now!r})")
        self._seq += 1
        heapq.heappush(self._heap, (when, self._seq, handler, args))

    def call_first_at(self, when: float, handler: Handler, *args: Any) -> None:
        """Like ``call_at``, but before every ordinary event at the same time: a fault's
        change of state (``sim/faults.py``) holds from the instant it is due, whatever was
        scheduled for that instant. Such handlers return ``None`` (not traced)."""
        if when < self.now:
            raise ValueError(f"cannot schedule at {when!r}, before now ({self.now!r})")
        self._first_seq += 1
        heapq.heappush(self._heap, (when, self._first_seq, handler, args))

    def call_later(self, delay: float, handler: Handler, *args: Any) -> None:
        self.call_at(self.now + delay, handler, *args)

    def record_to(self, sink: Callable[[TraceRecord], None] | None) -> None:
        """Also hand every delivered ``(time, *record)`` to ``sink`` (``--trace``)."""
        self._record_trace = sink

    def run(self, until: float) -> None:
        """Deliver events in order until the heap is empty or the next is past the limit."""
        heap = self._heap
        trace = self._trace
        while heap:
            when = heap[0][0]
            if when > until or when > self.stop_at:
                break
            _, _, handler, args = heapq.heappop(heap)
            self.now = when
            record = handler(*args)
            if record is None:
                continue
            self.delivered += 1
            trace.update(repr((when, record)).encode())
            if self._record_trace is not None:
                self._record_trace((when, *record))
            if self.after_event is not None:
                self.after_event()

    @property
    def pending(self) -> int:
        return len(self._heap)

    @property
    def trace_hash(self) -> str:
        return self._trace.hexdigest()
