"""Child processes for the benchmarks: started, timestamped, always cleaned up.

Every child runs in a session of its own, so a Ctrl-C at the terminal reaches only the
harness, which then stops its children itself (SIGTERM to the process group, SIGKILL after
a grace period) on the way out. The harness timestamps each stderr line of a child as it
arrives (``trio.current_time()``, the harness's monotonic clock) and records when a line
first matched one of the child's markers, e.g. ``"decided"`` for ``"decided: "``: the pipe
adds some tens of microseconds, far below the figures measured.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field

import trio

__all__ = ["Proc", "ProcSet", "cpu_seconds", "open_procs", "task_cpu_seconds"]

STOP_GRACE = 5.0
"""Seconds a child gets between SIGTERM and SIGKILL."""

_MAX_KEPT_OUTPUT = 1 << 20


@dataclass(eq=False)
class Proc:
    """One child: when the harness started it and what it has said so far."""

    name: str
    process: trio.Process
    started: float
    """Harness time just before the ``exec``."""
    markers: Mapping[str, str]
    """Marker name -> substring of a line (stderr or stdout)."""
    marks: dict[str, float] = field(default_factory=dict)
    """Marker name -> harness time of the first line that contained it."""
    stdout: bytearray = field(default_factory=bytearray)
    stderr_lines: list[str] = field(default_factory=list)
    exited: float | None = None

    @property
    def pid(self) -> int:
        return self.process.pid

    def tail(self, lines: int = 15) -> str:
        return "\n".join(self.stderr_lines[-lines:])


class ProcSet:
    """The children of one measurement. Use ``open_procs()``."""

    def __init__(self, nursery: trio.Nursery, env: Mapping[str, str]) -> None:
        self._nursery = nursery
        self._env = dict(env)
        self.procs: list[Proc] = []
        self._changed = trio.Event()

    async def spawn(
        self,
        argv: Sequence[str],
        name: str,
        markers: Mapping[str, str] | None = None,
    ) -> Proc:
        """Start ``argv``; read its stdout and its stderr lines."""
        started = trio.current_time()
        process = await trio.lowlevel.open_process(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=self._env,
            start_new_session=True,
        )
        proc = Proc(name, process, started, dict(markers or {}))
        self.procs.append(proc)
        self._nursery.start_soon(self._read_stdout, proc)
        self._nursery.start_soon(self._read_stderr, proc)
        self._nursery.start_soon(self._reap, proc)
        return proc

    async def wait_changed(self) -> None:
        """Return at the next marker hit or exit of any child."""
        await self._changed.wait()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    async def _read_stdout(self, proc: Proc) -> None:
        stream = proc.process.stdout
        assert stream is not None
        async with stream:
            while chunk := await stream.receive_some(65536):
                now = trio.current_time()
                start = len(proc.stdout)
                if start < _MAX_KEPT_OUTPUT:
                    proc.stdout += chunk
                # Markers match stdout lines too (serf prints its banner there).
                head = bytes(proc.stdout[max(0, start - 4096) : start]).rsplit(b"\n", 1)[-1]
                for line in (head + chunk).split(b"\n"):
                    if self._mark(proc, line.decode(errors="replace"), now):
                        self._notify()

    async def _read_stderr(self, proc: Proc) -> None:
        stream = proc.process.stderr
        assert stream is not None
        buffer = b""
        async with stream:
            while chunk := await stream.receive_some(65536):
                now = trio.current_time()
                buffer += chunk
                *lines, buffer = buffer.split(b"\n")
                for raw in lines:
                    self._line(proc, raw.decode(errors="replace"), now)
        if buffer:
            self._line(proc, buffer.decode(errors="replace"), trio.current_time())

    def _line(self, proc: Proc, line: str, now: float) -> None:
        if len(proc.stderr_lines) < 10_000:
            proc.stderr_lines.append(line)
        if self._mark(proc, line, now):
            self._notify()

    @staticmethod
    def _mark(proc: Proc, line: str, now: float) -> bool:
        hit = False
        for marker, needle in proc.markers.items():
            if marker not in proc.marks and needle in line:
                proc.marks[marker] = now
                hit = True
        return hit

    async def _reap(self, proc: Proc) -> None:
        await proc.process.wait()
        proc.exited = trio.current_time()
        self._notify()

    async def stop_all(self, grace: float = STOP_GRACE) -> None:
        """SIGTERM every child's group, SIGKILL what is left after ``grace``; reap all."""
        with trio.CancelScope(shield=True):
            for proc in self.procs:
                _signal_group(proc, signal.SIGTERM)
            with trio.move_on_after(grace):
                for proc in self.procs:
                    await proc.process.wait()
            for proc in self.procs:
                _signal_group(proc, signal.SIGKILL)
            with trio.move_on_after(grace):
                for proc in self.procs:
                    await proc.process.wait()


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a running process so far (0.0 once it is gone)."""
    try:
        stat = open(f"/proc/{pid}/stat").read()  # noqa: SIM115
    except OSError:
        return 0.0
    fields = stat.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def task_cpu_seconds(pid: int) -> float:
    """CPU time of a running process so far, summed over its threads from
    ``/proc/PID/task/*/schedstat`` (nanoseconds, where ``/proc/PID/stat`` counts 10 ms
    ticks); 0.0 once it is gone. Threads that already exited are not counted: sample just
    before stopping the process."""
    total = 0
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return 0.0
    for tid in tasks:
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat") as schedstat:
                total += int(schedstat.read().split()[0])
        except (OSError, ValueError, IndexError):
            continue  # the thread ended meanwhile
    return total / 1e9


def _signal_group(proc: Proc, signum: signal.Signals) -> None:
    if proc.process.returncode is not None:
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.process.pid, signum)


@contextlib.asynccontextmanager
async def open_procs(env: Mapping[str, str] | None = None) -> AsyncIterator[ProcSet]:
    """A ``ProcSet`` whose children are all stopped when the block ends, however it ends."""
    async with trio.open_nursery() as nursery:
        procs = ProcSet(nursery, os.environ if env is None else env)
        try:
            yield procs
        finally:
            await procs.stop_all()
            nursery.cancel_scope.cancel()
