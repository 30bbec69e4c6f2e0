"""A plan is data: the ordered steps that turn a decided node into a running one.

The original rancherd handed an ``applyinator.Plan`` (files, then instructions, then
probes) to rancher/system-agent. Ours is one ordered list of frozen steps, each with a
stable id (``NN-name``) so an interrupted apply resumes where it stopped:

- ``WriteFile``: a file with its mode and owner (written atomically, under the root);
- ``RunCommand``: a command with its env and timeout, optionally skipped when a binary of
  the right version is already there (``BinaryPresent``: pre-baked images);
- ``ProbeUrl``: poll a URL until it answers with the expected status;
- ``WaitForPeers``: wait for the init node to be ready, or for this server's turn to join
  (executed by the caller's hooks, with gossip);
- ``VerifyServerCA``: fetch ``/cacerts`` from the server and check it against the K10
  token's CA hash before anything is sent to it.

A plan holds the token (inside the runtime config file). It is never shown as is:
``to_text`` and ``to_json_dict`` show each file's ``shown`` text (built with secrets
redacted), hide env values whose names look secret, and finally replace any occurrence of
the plan's secrets with ``<redacted>``. ``repr`` leaves out file contents, argv and env.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, TypeAlias

from rancherd.config import REDACTED, Secret, is_secret_name
from rancherd.gossip.election import JoinRole
from rancherd.install.inroot import (
    CommandRefused,
    Resolved,
    is_host_root,
    resolve_command,
    resolve_in_root,
)
from rancherd.install.runtime import RuntimeVersion

__all__ = [
    "REDACTED",
    "BinaryPresent",
    "CommandWhere",
    "PeerWait",
    "Plan",
    "ProbeUrl",
    "RunCommand",
    "Step",
    "VerifyServerCA",
    "WaitForPeers",
    "WriteFile",
    "is_secret_name",
    "redact_text",
    "redact_tree",
    "resolve_step",
]


@dataclass(frozen=True, slots=True)
class WriteFile:
    """Write ``content`` to ``path`` (absolute, on the node; prefixed by the root)."""

    name: str
    path: str
    content: bytes = field(repr=False)
    shown: str = field(repr=False)
    """The content as ``rancherd plan`` prints it: secrets replaced by ``<redacted>``."""
    mode: int = 0o644
    uid: int = 0
    gid: int = 0


@dataclass(frozen=True, slots=True)
class BinaryPresent:
    """True when one of ``paths`` (under the root) runs and reports ``version``.

    With ``version`` None (a channel was asked for), any working binary counts: a
    pre-baked image decides the version.
    """

    paths: tuple[str, ...]
    version: str | None


@dataclass(frozen=True, slots=True)
class RunCommand:
    """Run ``argv`` (not prefixed by the root; ``RANCHERD_ROOT`` is set in its env)."""

    name: str
    argv: tuple[str, ...] = field(repr=False)
    """Left out of ``repr``: instruction arguments may hold secrets."""
    env: tuple[tuple[str, str], ...] = field(default=(), repr=False)
    """Added to rancherd's own environment."""
    timeout: float = 600.0
    cwd: str | None = None
    skip_if: BinaryPresent | None = None
    save_output: bool = False
    """Keep the whole output in ``<state dir>/output/<step id>.log`` (instructions)."""
    path_args: tuple[int, ...] = ()
    """Positions of arguments that are files on the node (``sh <script>``): under a root
    they are taken inside it, as the program is."""


@dataclass(frozen=True, slots=True)
class ProbeUrl:
    """Poll ``url`` every ``interval`` seconds until it answers ``expect_status``.

    Files (CA, client certificate and key) are on the node and prefixed by the root.
    """

    name: str
    url: str
    ca_file: str | None = None
    client_cert: str | None = None
    client_key: str | None = None
    expect_status: int = 200
    interval: float = 2.0
    timeout: float = 600.0


class PeerWait(StrEnum):
    INIT_READY = "init-ready"
    """The init node has installed its runtime and serves ``server_url``."""
    JOIN_TURN = "join-turn"
    """It is this server's turn: k3s and rke2 fail on simultaneous server joins."""


@dataclass(frozen=True, slots=True)
class WaitForPeers:
    """Wait until peers (seen through gossip) allow the next step; run by the hooks."""

    name: str
    kind: PeerWait
    server_url: str
    timeout: float | None = None
    """None: as long as it takes (a boot-time daemon waits for its cluster)."""


@dataclass(frozen=True, slots=True)
class VerifyServerCA:
    """Fetch ``https://<server>/cacerts`` and check it before joining.

    With ``ca_hash`` (from a K10 token) a different CA stops the plan. The server's
    certificate must then verify against the fetched CA, as k3s itself checks.
    """

    name: str
    server_url: str
    ca_hash: str | None
    timeout: float = 600.0
    interval: float = 2.0


Step: TypeAlias = WriteFile | RunCommand | ProbeUrl | WaitForPeers | VerifyServerCA

_KINDS: Mapping[type, str] = {
    WriteFile: "write-file",
    RunCommand: "run-command",
    ProbeUrl: "probe-url",
    WaitForPeers: "wait-for-peers",
    VerifyServerCA: "verify-server-ca",
}


def step_kind(step: Step) -> str:
    return _KINDS[type(step)]


@dataclass(frozen=True, slots=True)
class Plan:
    """What a node applies, in order. Build it with ``rancherd.install.build_plan``."""

    role: JoinRole
    version: RuntimeVersion
    server_url: str | None
    """The server joined (None on the init node)."""
    steps: tuple[Step, ...] = field(repr=False)
    notes: tuple[str, ...] = ()
    """Things the reader should know: ignored keys, departures from the original."""
    secrets: tuple[Secret, ...] = field(default=(), repr=False)
    """Values never shown, wherever they appear."""
    root: str = "/"
    """Where it is applied; under any other root its commands must be found inside it."""

    @property
    def runtime(self) -> str:
        return self.version.runtime.value

    def step_ids(self) -> tuple[str, ...]:
        """Stable ids: position and name, ``03-write-k3s-config``."""
        return tuple(f"{index:02d}-{step.name}" for index, step in enumerate(self.steps, 1))

    def numbered(self) -> Iterator[tuple[str, Step]]:
        return zip(self.step_ids(), self.steps, strict=True)

    def digest(self) -> str:
        """sha256 over every step, contents included: a changed plan starts over.

        It depends on the token: keep it where the token may be (the state dir).
        """
        data = {
            "role": self.role.value,
            "version": [self.version.runtime.value, self.version.version, self.version.channel],
            "server": self.server_url,
            "steps": [_step_dict(step, exact=True) for step in self.steps],
        }
        canonical = json.dumps(data, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()

    # -- Showing it --

    def redact(self, text: str) -> str:
        """``text`` with every secret of the plan replaced by ``<redacted>``."""
        return redact_text(text, self.secrets)

    def to_json_dict(self) -> dict[str, Any]:
        """The plan as ``rancherd plan --json`` prints it (redacted)."""
        steps = []
        for step_id, step in self.numbered():
            shown = {"id": step_id, **_step_dict(step, exact=False)}
            steps.append(shown)
        data = {
            "runtime": self.runtime,
            "role": self.role.value,
            "kubernetesVersion": {"version": self.version.version, "channel": self.version.channel}
            | ({"channelUrl": self.version.channel_url} if self.version.channel_url else {}),
            "server": self.server_url,
            "notes": list(self.notes),
            "steps": steps,
        }
        if not is_host_root(Path(self.root)):
            data["root"] = self.root
            data["commands"] = [
                {"id": step_id, **where.as_dict()} for step_id, where in self.commands_in_root()
            ]
        redacted: dict[str, Any] = redact_tree(data, self.secrets)
        return redacted

    def to_text(self) -> str:
        """The plan for people: one numbered paragraph per step (redacted)."""
        target = f", joining {self.server_url}" if self.server_url else ""
        lines = [f"Plan: {self.role.value} node, {self.version.describe()}{target}"]
        lines.extend(f"note: {note}" for note in self.notes)
        for step_id, step in self.numbered():
            lines.append("")
            lines.extend(_step_lines(step_id, step, self.redact))
        if not is_host_root(Path(self.root)):
            lines.append("")
            lines.append(
                f"Under the root {self.root}, each command runs from inside it, or its step "
                "is refused; nothing of this host runs (as the root is now):"
            )
            lines.extend(f"{step_id}: {where.text()}" for step_id, where in self.commands_in_root())
        return self.redact("\n".join(lines) + "\n")

    def commands_in_root(self) -> list[tuple[str, CommandWhere]]:
        """Where each command of the plan would be found under ``root``, as it is now
        (a program an earlier step installs may be missing yet)."""
        found = []
        for step_id, step in self.numbered():
            if not isinstance(step, RunCommand):
                continue
            try:
                resolved = resolve_step(Path(self.root), step)
            except CommandRefused as exc:
                found.append((step_id, CommandWhere(step.argv[0], (), str(exc))))
            else:
                found.append((step_id, CommandWhere(step.argv[0], resolved.chain, None)))
        return found


@dataclass(frozen=True, slots=True)
class CommandWhere:
    """A command's program under the root: the files that run, or why it is refused."""

    command: str
    chain: tuple[str, ...]
    """Interpreter first, then the program (inside the root)."""
    refused: str | None

    def text(self) -> str:
        if self.refused is not None:
            return f"{self.command}: REFUSED (would fail): {self.refused}"
        runs = self.chain[-1]
        via = f" (through #! {' then '.join(self.chain[:-1])})" if len(self.chain) > 1 else ""
        return f"{self.command} -> {runs}{via}"

    def as_dict(self) -> dict[str, Any]:
        return {"command": self.command, "runs": list(self.chain), "refused": self.refused}


def resolve_step(root: Path, step: RunCommand) -> Resolved:
    """How ``step`` runs under ``root``: its program and its file arguments
    (``path_args``) taken inside the root, links followed there. Raises
    ``CommandRefused``."""
    argv = list(step.argv)
    for index in step.path_args:
        if 0 < index < len(argv):
            argv[index] = str(resolve_in_root(root, argv[index]))
    return resolve_command(root, argv, dict(step.env), step.cwd)


def redact_text(text: str, secrets: Sequence[Secret]) -> str:
    """``text`` with every occurrence of each secret replaced by ``<redacted>``."""
    for secret in secrets:
        value = secret.reveal()
        if value:
            text = text.replace(value, REDACTED)
    return text


def redact_tree(value: Any, secrets: Sequence[Secret]) -> Any:
    """Plain data (dicts, lists, strings) with ``redact_text`` applied to every string.

    Applied to data before it is serialised: once in YAML or JSON, a secret may be
    escaped, quoted or folded across lines, and a search for it would miss it.
    """
    if not secrets:
        return value
    if isinstance(value, str):
        return redact_text(value, secrets)
    if isinstance(value, Mapping):
        return {redact_text(str(k), secrets): redact_tree(v, secrets) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact_tree(item, secrets) for item in value]
    return value


def _shown_env(env: tuple[tuple[str, str], ...]) -> dict[str, str]:
    return {name: REDACTED if is_secret_name(name) else value for name, value in env}


def _step_dict(step: Step, *, exact: bool) -> dict[str, Any]:
    """A step as plain data; ``exact`` keeps what matters for the digest, unredacted."""
    out: dict[str, Any] = {"kind": step_kind(step), "name": step.name}
    if isinstance(step, WriteFile):
        out |= {"path": step.path, "mode": f"{step.mode:04o}", "uid": step.uid, "gid": step.gid}
        if exact:
            out["sha256"] = hashlib.sha256(step.content).hexdigest()
        else:
            out["content"] = step.shown
    elif isinstance(step, RunCommand):
        out |= {
            "argv": list(step.argv),
            "env": dict(step.env) if exact else _shown_env(step.env),
            "timeout": step.timeout,
            "cwd": step.cwd,
            "saveOutput": step.save_output,
        }
        if step.path_args:
            out["pathArgs"] = list(step.path_args)
        if step.skip_if is not None:
            out["skipIf"] = {
                "binaryPresent": list(step.skip_if.paths),
                "version": step.skip_if.version,
            }
    elif isinstance(step, ProbeUrl):
        out |= {
            "url": step.url,
            "caFile": step.ca_file,
            "clientCert": step.client_cert,
            "clientKey": step.client_key,
            "expectStatus": step.expect_status,
            "interval": step.interval,
            "timeout": step.timeout,
        }
    elif isinstance(step, WaitForPeers):
        out |= {"wait": step.kind.value, "server": step.server_url, "timeout": step.timeout}
    else:
        out |= {
            "server": step.server_url,
            "caHash": step.ca_hash,
            "interval": step.interval,
            "timeout": step.timeout,
        }
    return out


def _step_lines(step_id: str, step: Step, redact: Callable[[str], str]) -> list[str]:
    if isinstance(step, WriteFile):
        lines = [f"{step_id}: write {step.path} (mode {step.mode:04o}, uid {step.uid})"]
        lines.extend(f"    | {line}" for line in step.shown.splitlines())
        return lines
    if isinstance(step, RunCommand):
        # Redact each argument before quoting: quoting escapes characters of a secret.
        lines = [f"{step_id}: run {' '.join(_quote(redact(arg)) for arg in step.argv)}"]
        for name, value in _shown_env(step.env).items():
            lines.append(f"    env {name}={value}")
        lines.append(f"    timeout {step.timeout:g}s" + (f", in {step.cwd}" if step.cwd else ""))
        if step.skip_if is not None:
            wanted = step.skip_if.version or "any version"
            lines.append(f"    skipped when {' or '.join(step.skip_if.paths)} reports {wanted}")
        return lines
    if isinstance(step, ProbeUrl):
        lines = [
            f"{step_id}: probe {step.url} until it answers {step.expect_status} "
            f"(every {step.interval:g}s, at most {step.timeout:g}s)"
        ]
        if step.ca_file:
            lines.append(f"    trusting {step.ca_file}")
        if step.client_cert:
            lines.append(f"    client certificate {step.client_cert}")
        return lines
    if isinstance(step, WaitForPeers):
        what = (
            f"the init node to be ready at {step.server_url}"
            if step.kind is PeerWait.INIT_READY
            else "this server's turn to join (one server joins at a time)"
        )
        return [f"{step_id}: wait for {what}"]
    check = (
        f"check that its sha256 is {step.ca_hash} (from the K10 token)"
        if step.ca_hash
        else "the token has no CA hash: nothing to compare it with"
    )
    return [f"{step_id}: fetch {step.server_url}/cacerts; {check}"]


def _quote(arg: str) -> str:
    return arg if arg and re.fullmatch(r"[\w@%+=:,./-]+", arg) else json.dumps(arg)
