"""Apply a plan: run its steps in order under a root prefix, resumably.

Every path of the plan is taken under ``root`` (``/`` in production, a temporary directory
in tests). With ``/``, commands run as written. Under any other root, every command's
program (and its ``#!`` interpreter) is found inside the root or the step fails as refused,
and the child's ``PATH`` holds the root's directories only (``inroot``): nothing of the
host's runs, no ``sh``, ``curl`` or ``systemctl``. Commands get ``RANCHERD_ROOT`` in their
env so install scripts know where to write; their working directory, if any, is under the
root.

Progress is recorded after each step in ``<state_dir>/plan-progress.json`` (atomically,
with fsync), with the plan's digest. A rerun of the same plan resumes at the first step
not done; the waits and the server CA check before that step run again (they are about
the peers' state now, and a server that waited for its turn before a crash must wait
again), everything else before it is not re-run. A changed plan starts over from the first
step, and the result says so. A failed step raises ``StepFailed`` naming the step, with the
last lines of its output; the done stamp (when asked for) is written only after every step
succeeded.

The caller's ``Hooks`` run the waits (the lead's bootstrap answers them from gossip) and
hear of every step (to publish install progress).
"""

from __future__ import annotations

import json
import logging
import os
import signal
import ssl
import subprocess
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from enum import StrEnum
from functools import partial
from pathlib import Path
from typing import Any, Protocol

import trio

from rancherd.files import write_atomic
from rancherd.install.cacerts import ServerCAError, check_server_ca
from rancherd.install.http import HttpError, describe_error, http_get
from rancherd.install.inroot import CommandRefused, is_host_root, resolve_command, under_root
from rancherd.install.plan import (
    BinaryPresent,
    Plan,
    ProbeUrl,
    RunCommand,
    Step,
    VerifyServerCA,
    WaitForPeers,
    WriteFile,
    resolve_step,
)

__all__ = [
    "OUTPUT_TAIL_LINES",
    "PROGRESS_FILE",
    "ROOT_ENV",
    "ApplyResult",
    "Hooks",
    "NoPeers",
    "StepFailed",
    "StepState",
    "apply_plan",
    "under_root",
]

log = logging.getLogger(__name__)

PROGRESS_FILE = "plan-progress.json"
ROOT_ENV = "RANCHERD_ROOT"
OUTPUT_TAIL_LINES = 40
_TAIL_BYTES = 64 * 1024
_SAVED_OUTPUT_BYTES = 1024 * 1024
_PIPE_GRACE = 2.0
"""After a command exits, how long to wait for children that still hold its output open."""
_PROBE_ATTEMPT = 10.0
_VERSION_TIMEOUT = 30.0
_KILL_GRACE = 5.0


class StepState(StrEnum):
    STARTED = "started"
    RETRYING = "retrying"
    """Still trying (a probe, the CA check); ``detail`` says why."""
    DONE = "done"
    SKIPPED = "skipped"
    ALREADY_DONE = "already-done"
    """Done by an earlier run of the same plan."""
    FAILED = "failed"


class Hooks(Protocol):
    """What the caller provides: the waits on peers, and a view of the progress."""

    async def wait_for_peers(self, step: WaitForPeers) -> None:
        """Return when the peers allow the next step (cancel or raise otherwise)."""
        ...

    def on_step(self, step_id: str, step: Step, state: StepState, detail: str) -> None:
        """Called for every change of state; must not block."""
        ...


class NoPeers:
    """Hooks without gossip: waits return at once (a ``server:`` join without discovery
    relies on the CA check's retries to wait for the server)."""

    async def wait_for_peers(self, step: WaitForPeers) -> None:
        return None

    def on_step(self, step_id: str, step: Step, state: StepState, detail: str) -> None:
        return None


class StepFailed(Exception):
    """A step failed; the message names it and carries the end of its output."""

    def __init__(
        self,
        step_id: str,
        name: str,
        reason: str,
        *,
        returncode: int | None = None,
        output_tail: str = "",
    ) -> None:
        self.step_id = step_id
        self.name = name
        self.reason = reason
        self.returncode = returncode
        self.output_tail = output_tail
        message = f"step {step_id} failed: {reason}"
        if output_tail:
            count = len(output_tail.splitlines())
            message += f"\n--- last {count} lines of its output ---\n{output_tail.rstrip()}"
        super().__init__(message)


@dataclass(frozen=True, slots=True)
class ApplyResult:
    ran: tuple[str, ...]
    skipped: tuple[str, ...]
    already_done: tuple[str, ...]
    notes: tuple[str, ...]
    """E.g. "the plan changed since the last run: starting over"."""


async def apply_plan(
    plan: Plan,
    *,
    root: Path,
    state_dir: Path,
    hooks: Hooks | None = None,
    done_stamp: Path | None = None,
) -> ApplyResult:
    """Apply ``plan`` under ``root``; raise ``StepFailed`` at the first failing step.

    ``state_dir`` and ``done_stamp`` are real paths (not taken under ``root``).
    """
    hooks = hooks or NoPeers()
    digest = plan.digest()
    progress_path = state_dir / PROGRESS_FILE
    notes: list[str] = []
    previous = await trio.to_thread.run_sync(_load_progress, progress_path)
    done: list[str] = []
    if previous is not None:
        if previous.get("plan") == digest:
            done = [sid for sid in previous.get("done", []) if isinstance(sid, str)]
        else:
            notes.append("the plan changed since the last run: starting over from the first step")
    ids = plan.step_ids()
    pending = [index for index, sid in enumerate(ids) if sid not in done]
    first_pending = pending[0] if pending else len(ids)
    if done and pending:
        notes.append(f"resuming at step {ids[first_pending]}")

    runner = _Runner(plan, root, state_dir, hooks)
    ran: list[str] = []
    skipped: list[str] = []
    already: list[str] = []
    for index, (step_id, step) in enumerate(plan.numbered()):
        if index < first_pending and not _rerun_on_resume(step):
            hooks.on_step(step_id, step, StepState.ALREADY_DONE, "")
            already.append(step_id)
            continue
        log.info("plan step %s: starting", step_id)
        hooks.on_step(step_id, step, StepState.STARTED, "")
        try:
            skip_reason = await runner.run(step_id, step)
        except StepFailed as failed:
            # One line: the output tail comes once, in the error the command ends with.
            log.warning("step %s failed: %s", failed.step_id, failed.reason)
            hooks.on_step(step_id, step, StepState.FAILED, failed.reason)
            await _save_progress(progress_path, digest, done, failed)
            raise
        if skip_reason is not None:
            hooks.on_step(step_id, step, StepState.SKIPPED, skip_reason)
            skipped.append(step_id)
        else:
            hooks.on_step(step_id, step, StepState.DONE, "")
            ran.append(step_id)
        if step_id not in done:
            done.append(step_id)
            await _save_progress(progress_path, digest, done, None)
    notes.extend(runner.notes)
    if done_stamp is not None:
        stamp = {"runtime": plan.runtime, "role": plan.role.value, "server": plan.server_url}
        data = (json.dumps(stamp, indent=2) + "\n").encode()
        await trio.to_thread.run_sync(write_atomic, done_stamp, data, 0o644, None)
    return ApplyResult(tuple(ran), tuple(skipped), tuple(already), tuple(notes))


def _rerun_on_resume(step: Step) -> bool:
    return isinstance(step, WaitForPeers | VerifyServerCA)


class _Runner:
    def __init__(self, plan: Plan, root: Path, state_dir: Path, hooks: Hooks) -> None:
        self.plan = plan
        self.root = root
        self.state_dir = state_dir
        self.hooks = hooks
        self.notes: list[str] = []

    async def run(self, step_id: str, step: Step) -> str | None:
        """Run one step; the reason it was skipped, or None when it ran."""
        if isinstance(step, WriteFile):
            await self.write(step_id, step)
        elif isinstance(step, RunCommand):
            return await self.command(step_id, step)
        elif isinstance(step, ProbeUrl):
            await self.probe(step_id, step)
        elif isinstance(step, WaitForPeers):
            await self.wait(step_id, step)
        else:
            await self.verify_ca(step_id, step)
        return None

    def fail(self, step_id: str, step: Step, reason: str, **kwargs: Any) -> StepFailed:
        tail = self.plan.redact(kwargs.pop("output_tail", ""))
        return StepFailed(step_id, step.name, self.plan.redact(reason), output_tail=tail, **kwargs)

    # -- files --

    async def write(self, step_id: str, step: WriteFile) -> None:
        target = under_root(self.root, step.path)
        owner = (step.uid, step.gid) if os.geteuid() == 0 else None
        try:
            await trio.to_thread.run_sync(write_atomic, target, step.content, step.mode, owner)
        except OSError as exc:
            raise self.fail(
                step_id, step, f"cannot write {target}: {describe_error(exc)}"
            ) from None
        if owner is None and (step.uid, step.gid) != (os.geteuid(), os.getegid()):
            self.notes.append(
                f"not root: {step.path} is owned by uid {os.geteuid()}, not {step.uid}"
            )

    # -- commands --

    async def command(self, step_id: str, step: RunCommand) -> str | None:
        if step.skip_if is not None:
            reason = await self.binary_present(step.skip_if)
            if reason is not None:
                return reason
        env = dict(os.environ)
        env.update(step.env)
        env[ROOT_ENV] = str(self.root)
        cwd = None if step.cwd is None else under_root(self.root, step.cwd)
        argv = step.argv
        if not is_host_root(self.root):
            try:
                resolved = await trio.to_thread.run_sync(resolve_step, self.root, step)
            except CommandRefused as exc:
                raise self.fail(step_id, step, f"refused: {exc}") from None
            argv = resolved.argv
            env["PATH"] = resolved.path_env
        output = _Tail(_SAVED_OUTPUT_BYTES if step.save_output else _TAIL_BYTES)
        returncode: int | None = None
        try:
            with trio.fail_after(step.timeout):
                returncode = await _run(argv, env, cwd, output)
        except trio.TooSlowError:
            reason = f"{step.argv[0]} did not finish within {step.timeout:g}s"
        except OSError as exc:
            raise self.fail(
                step_id, step, f"cannot run {step.argv[0]}: {describe_error(exc)}"
            ) from None
        else:
            reason = None if returncode == 0 else f"{step.argv[0]} exited with status {returncode}"
        text = self.plan.redact(output.value().decode("utf-8", "replace"))
        if step.save_output:
            path = self.state_dir / "output" / f"{step_id}.log"
            await trio.to_thread.run_sync(write_atomic, path, text.encode(), 0o600, None)
        if reason is not None:
            tail = "\n".join(text.splitlines()[-OUTPUT_TAIL_LINES:])
            raise self.fail(step_id, step, reason, returncode=returncode, output_tail=tail)
        return None

    async def binary_present(self, check: BinaryPresent) -> str | None:
        """Why the install can be skipped, or None."""
        for path in check.paths:
            binary = under_root(self.root, path)
            if not await trio.to_thread.run_sync(os.access, binary, os.X_OK):
                continue
            env = {**os.environ, ROOT_ENV: str(self.root)}
            argv: tuple[str, ...] = (str(binary), "--version")
            if not is_host_root(self.root):
                try:
                    resolved = await trio.to_thread.run_sync(
                        resolve_command, self.root, (path, "--version"), {}
                    )
                except CommandRefused as exc:
                    self.notes.append(f"{path} cannot run under the root ({exc}): installing")
                    continue
                argv, env["PATH"] = resolved.argv, resolved.path_env
            output = _Tail(_TAIL_BYTES)
            try:
                with trio.fail_after(_VERSION_TIMEOUT):
                    code = await _run(argv, env, None, output)
            except (OSError, trio.TooSlowError):
                continue
            words = output.value().decode("utf-8", "replace").split()
            reported = words[2] if code == 0 and len(words) > 2 else None
            if reported is None:
                continue
            if check.version is None:
                return f"{path} is installed ({reported}); no exact version was asked for"
            if reported == check.version:
                return f"{path} is already {reported}"
            self.notes.append(f"{path} is {reported}, not {check.version}: installing")
        return None

    # -- probes and waits --

    async def probe(self, step_id: str, step: ProbeUrl) -> None:
        last = "no answer yet"
        try:
            with trio.fail_after(step.timeout):
                while (reason := await self.probe_once(step)) is not None:
                    last = reason
                    self.hooks.on_step(step_id, step, StepState.RETRYING, reason)
                    await trio.sleep(step.interval)
                return
        except trio.TooSlowError:
            raise self.fail(
                step_id,
                step,
                f"{step.url} did not answer {step.expect_status} within {step.timeout:g}s "
                f"(last: {last})",
            ) from None

    async def probe_once(self, step: ProbeUrl) -> str | None:
        try:
            context = self.probe_context(step) if step.url.startswith("https:") else None
        except (OSError, ssl.SSLError) as exc:
            return f"certificates not ready: {describe_error(exc)}"
        response = None
        with trio.move_on_after(_PROBE_ATTEMPT):
            try:
                response = await http_get(step.url, ssl_context=context)
            except (OSError, trio.BrokenResourceError, HttpError) as exc:
                return describe_error(exc)
        if response is None:
            return f"no answer within {_PROBE_ATTEMPT:g}s"
        if response.status != step.expect_status:
            return f"HTTP status {response.status}"
        return None

    def probe_context(self, step: ProbeUrl) -> ssl.SSLContext:
        cafile = None if step.ca_file is None else under_root(self.root, step.ca_file)
        context = ssl.create_default_context(cafile=cafile)
        if step.client_cert is not None:
            key = None if step.client_key is None else under_root(self.root, step.client_key)
            context.load_cert_chain(under_root(self.root, step.client_cert), key)
        return context

    async def wait(self, step_id: str, step: WaitForPeers) -> None:
        scope: AbstractContextManager[object] = (
            nullcontext() if step.timeout is None else trio.fail_after(step.timeout)
        )
        try:
            with scope:
                await self.hooks.wait_for_peers(step)
        except trio.TooSlowError:
            raise self.fail(
                step_id, step, f"peers did not allow {step.kind} within {step.timeout:g}s"
            ) from None

    async def verify_ca(self, step_id: str, step: VerifyServerCA) -> None:
        last = "no answer yet"

        def retrying(reason: str) -> None:
            nonlocal last
            last = reason
            self.hooks.on_step(step_id, step, StepState.RETRYING, reason)

        try:
            with trio.fail_after(step.timeout):
                found = await check_server_ca(
                    step.server_url, step.ca_hash, interval=step.interval, on_retry=retrying
                )
        except ServerCAError as exc:
            raise self.fail(step_id, step, str(exc)) from None
        except trio.TooSlowError:
            raise self.fail(
                step_id,
                step,
                f"{step.server_url} did not serve /cacerts within {step.timeout:g}s (last: {last})",
            ) from None
        if not found.verified:
            self.notes.append(
                f"{step.server_url}: the token is not in K10 form, so the server's CA "
                f"(sha256 {found.ca_hash}) was not compared with anything"
            )


# --- Processes ------------------------------------------------------------------------


class _Tail:
    """The last ``limit`` bytes of a stream."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.data = bytearray()

    def feed(self, chunk: bytes) -> None:
        self.data += chunk
        if len(self.data) > 2 * self.limit:
            del self.data[: len(self.data) - self.limit]

    def value(self) -> bytes:
        return bytes(self.data[-self.limit :])


async def _terminate_group(process: trio.Process) -> None:
    """On cancel: SIGTERM to the command's process group, SIGKILL if it lingers."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(process.pid, sig)
        except (ProcessLookupError, PermissionError):
            return
        with trio.move_on_after(_KILL_GRACE):
            await process.wait()
            return


async def _run(argv: tuple[str, ...], env: dict[str, str], cwd: Path | None, tail: _Tail) -> int:
    """Run ``argv`` with stdout and stderr merged into ``tail``; its exit status.

    ``tail`` keeps what was read even when the run is cancelled (a timeout)."""
    drained = trio.Event()
    returncode: int | None = None
    start_error: OSError | None = None
    async with trio.open_nursery() as nursery:
        try:
            process: trio.Process = await nursery.start(
                partial(
                    trio.run_process,
                    list(argv),
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT,
                    check=False,
                    env=env,
                    cwd=cwd,
                    start_new_session=True,
                    deliver_cancel=_terminate_group,
                )
            )
        except OSError as exc:  # raised here, not as an ExceptionGroup of the nursery
            start_error = exc
        else:
            stdout = process.stdout
            assert stdout is not None

            async def drain() -> None:
                try:
                    async for chunk in stdout:
                        tail.feed(bytes(chunk))
                except (trio.ClosedResourceError, trio.BrokenResourceError):
                    pass
                drained.set()

            nursery.start_soon(drain)
            returncode = await process.wait()
            # A child that outlives the command (a daemon) may hold the pipe open.
            with trio.move_on_after(_PIPE_GRACE):
                await drained.wait()
            nursery.cancel_scope.cancel()
    if start_error is not None:
        raise start_error
    assert returncode is not None
    return returncode


# --- Files ----------------------------------------------------------------------------


def _load_progress(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


async def _save_progress(
    path: Path, digest: str, done: list[str], failed: StepFailed | None
) -> None:
    data: dict[str, Any] = {"format": 1, "plan": digest, "done": list(done), "failed": None}
    if failed is not None:
        data["failed"] = {"step": failed.step_id, "reason": failed.reason}
    payload = (json.dumps(data, indent=2) + "\n").encode()
    await trio.to_thread.run_sync(write_atomic, path, payload, 0o600, None)
