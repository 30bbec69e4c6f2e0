"""``build_plan``: a config and a decision to the plan for k3s or rke2.

The steps, in order (``rancherd plan`` prints them):

1. on the init node, ``preInstructions``, as host commands;
2. joining nodes: wait for the init node to be ready, check its ``/cacerts`` against the
   K10 token's CA hash; joining servers then wait for their turn (one at a time);
3. ``registries.yaml`` and the runtime config drop-in ``40-rancherd.yaml`` (mode 0600:
   it holds the token); on the init node, the Rancher HelmChart and ``resources`` into
   the auto-deploy manifests directory;
4. the official install script, skipped when the binary of the right version is there;
5. ``systemctl daemon-reload`` and ``systemctl enable --now`` of the runtime's unit;
6. probes: the API server's ``/readyz`` on servers, the kubelet's ``/healthz`` everywhere;
7. on the init node, ``postInstructions``.

Instructions run on the cluster-init node only, as in the original (``toInitPlan`` adds
them; ``toJoinPlan`` does not): rancher/os2's ``/usr/sbin/ros-operator-install`` is for the
node that creates the cluster. A joining node's plan says in a note that it skips them.

``server:`` is a Rancher URL in the original's meaning (``config-example.yaml``: "The URL
to Rancher to join a node"): the node joins the runtime's supervisor on that host, port
6443 (k3s) or 9345 (rke2), whatever port the URL names (Harvester writes Rancher's 443,
the original's examples 8443), unless it names the supervisor's port already.

Runtime config keys, as the original's ``pkg/runtime/role.go`` maps them, except where k3s
and rke2 have no such key: ``tlsSans`` -> ``tls-san``, ``nodeName`` -> ``node-name``,
``taints`` -> ``node-taint``, ``labels`` -> ``node-label``, ``token`` -> ``token``, and
(departure: the original wrote ``address``/``internal-address``, which only Rancher's
system-agent understood) ``address`` -> ``node-external-ip``, ``internalAddress`` ->
``node-ip``, as docs/CONFIG.md documents. ``extraConfig`` comes first and rancherd's own keys
win over it, as in the original. ``cluster-init: true`` is written for k3s only, as in the
original's ``ToBootstrapFile``: rke2 has no such flag (its first server always starts
etcd), so DESIGN.md's "cluster-init on the init node" means "no ``server:``" for rke2.

Departure: the original wrote everything but ``extraConfig`` only on the init node and let
Rancher's system-agent configure the others; we join k3s/rke2 directly, so every node
gets its full config with ``server: https://<init>:6443`` (k3s) or ``:9345`` (rke2).

Environment hooks for tests and image builds (read by ``PlanOptions.from_env``):
``$RANCHERD_INSTALL_SCRIPT`` replaces the official install script (a path or a URL);
``$RANCHERD_SYSTEMCTL`` is the systemctl the plan runs (a fake one, or a wrapper). Under
a root prefix both name files inside the root. ``$RANCHERD_TEST_JOIN_AT_ONCE=1`` is a test
switch, for the end-to-end tests only: joining servers do not wait for their turn.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import urlsplit

import yaml

from rancherd.addresses import bracketed
from rancherd.config import Config, Instruction, Secret, config_to_dict
from rancherd.gossip.election import JoinRole
from rancherd.install.plan import (
    REDACTED,
    BinaryPresent,
    PeerWait,
    Plan,
    ProbeUrl,
    RunCommand,
    Step,
    VerifyServerCA,
    WaitForPeers,
    WriteFile,
    redact_tree,
)
from rancherd.install.rancher import (
    DEFAULT_HOST_PORT,
    DEFAULT_VALUES,
    GOSSIP_SAFE_HOST_PORT,
    RancherVersionError,
    merge_values,
    rancher_manifest,
)
from rancherd.install.runtime import (
    Runtime,
    RuntimeVersion,
    VersionError,
    resolve_kubernetes_version,
)
from rancherd.join_token import TokenError, parse_token

__all__ = [
    "INSTALL_SCRIPT_ENV",
    "JOIN_AT_ONCE_ENV",
    "SYSTEMCTL_ENV",
    "PlanError",
    "PlanOptions",
    "build_plan",
    "runtime_server_url",
]

INSTALL_SCRIPT_ENV = "RANCHERD_INSTALL_SCRIPT"
"""A path or URL that replaces the official install script (mirrors, air gaps, tests)."""

SYSTEMCTL_ENV = "RANCHERD_SYSTEMCTL"
"""The systemctl command the plan runs (tests and image builds put a fake one here)."""

JOIN_AT_ONCE_ENV = "RANCHERD_TEST_JOIN_AT_ONCE"
"""A test switch (``1``): joining servers skip the wait for their turn, so they join at
once. Only the end-to-end tests set it, to show that the stagger matters (etcd breaks);
the plan says so in a note whenever it is on."""

_FETCH_AND_RUN = (
    "script=$(mktemp) || exit 1; trap 'rm -f \"$script\"' EXIT; "
    'curl -sfL --retry 5 -o "$script" "$1" && sh "$script"'
)
"""Download the script to a file first: ``curl | sh`` runs an empty script on a failed
download and reports success."""


_HEADER = "# Written by rancherd; it is rewritten when rancherd applies its plan.\n"


class PlanError(ValueError):
    """The config and decision cannot make a plan; the message says why and what to do."""


@dataclass(frozen=True, slots=True)
class PlanOptions:
    """How the plan reaches the host: commands, URLs and timeouts (tests replace them)."""

    install_script: str | None = None
    """Path or URL of the install script; None: get.k3s.io or get.rke2.io."""
    systemctl: str = "systemctl"
    supervisor_port: int | None = None
    """The port joining nodes reach the init node's supervisor on; None: the runtime's."""
    apiserver_probe_url: str = "https://127.0.0.1:6443/readyz"
    kubelet_probe_url: str = "http://127.0.0.1:10248/healthz"
    install_timeout: float = 1800.0
    start_timeout: float = 900.0
    probe_timeout: float = 600.0
    probe_interval: float = 2.0
    instruction_timeout: float = 1800.0
    cacerts_timeout: float = 600.0
    cacerts_interval: float = 2.0
    root: str = "/"
    """Where the plan is applied: under any other root, ``rancherd plan`` shows where each
    command is found in it (``Plan.root``)."""
    stagger_joins: bool = True
    """False only by the test switch ``$RANCHERD_TEST_JOIN_AT_ONCE``."""

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, *, root: str = "/") -> PlanOptions:
        """Defaults, with ``$RANCHERD_INSTALL_SCRIPT`` and ``$RANCHERD_SYSTEMCTL`` when set
        (and the test switch ``$RANCHERD_TEST_JOIN_AT_ONCE``)."""
        environ = os.environ if environ is None else environ
        options = cls(
            install_script=environ.get(INSTALL_SCRIPT_ENV) or None,
            root=root,
            stagger_joins=environ.get(JOIN_AT_ONCE_ENV) != "1",
        )
        systemctl = environ.get(SYSTEMCTL_ENV)
        return replace(options, systemctl=systemctl) if systemctl else options


def runtime_server_url(
    server: str, runtime: Runtime, *, supervisor_port: int | None = None
) -> tuple[str, str | None]:
    """The URL k3s/rke2 joins for ``server`` (a host, or a URL): ``(url, note or None)``.

    Always the runtime's supervisor port on that host (6443 k3s, 9345 rke2): ``server:``
    names Rancher in the original, which joined through it (8443 in its examples, 443
    behind Harvester's VIP). Any other port is replaced, with a note; k3s and rke2 never
    listen on Rancher's port. ``supervisor_port`` replaces the runtime's (tests).
    """
    text = server.strip()
    port = runtime.supervisor_port if supervisor_port is None else supervisor_port
    if "://" not in text:
        try:
            address = ipaddress.ip_address(text.strip("[]"))
        except ValueError:
            text = f"https://{text}"
        else:
            return f"https://{bracketed(str(address))}:{port}", None
    try:
        parts = urlsplit(text)
        given_port = parts.port
    except ValueError:
        raise PlanError(f"server {server!r} is not a host or an https:// URL") from None
    if parts.scheme != "https" or not parts.hostname:
        raise PlanError(f"server {server!r} is not a host or an https:// URL")
    note = None
    if given_port is not None and given_port != port:
        note = (
            f"server {server}: the original joined through Rancher at that port; "
            f"{runtime} joins on its supervisor port {port} of the same host"
        )
    return f"https://{bracketed(parts.hostname)}:{port}", note


def build_plan(
    config: Config,
    role: JoinRole,
    server: str | None = None,
    *,
    options: PlanOptions | None = None,
) -> Plan:
    """The plan for this node in ``role``; ``server`` is the init node to join (a host or
    a URL; required unless ``role`` is cluster-init). Pure: no files, no network."""
    options = options or PlanOptions()
    _check_role(config, role, server)
    try:
        version = resolve_kubernetes_version(config.kubernetes_version)
    except VersionError as exc:
        raise PlanError(str(exc)) from None
    runtime = version.runtime
    notes: list[str] = []
    server_url = None
    if server is not None and role is not JoinRole.CLUSTER_INIT:
        server_url, note = runtime_server_url(
            server, runtime, supervisor_port=options.supervisor_port
        )
        if note:
            notes.append(note)
    ca_hash = None
    if config.token is not None:
        try:
            ca_hash = parse_token(config.token.reveal()).ca_hash
        except TokenError as exc:
            raise PlanError(f"token: {exc}") from None

    secrets: tuple[Secret, ...] = () if config.token is None else (config.token,)
    plain = config_to_dict(config, redact=False)
    # What plan shows: secret-looking keys hidden, and the token wherever it appears.
    shown = redact_tree(config_to_dict(config, redact=True), secrets)
    kubeconfig_env = (("KUBECONFIG", runtime.kubeconfig),)
    steps: list[Step] = []

    init = role is JoinRole.CLUSTER_INIT
    if init:
        steps.extend(_instructions("pre", config.pre_instructions, kubeconfig_env, options))
    elif config.pre_instructions or config.post_instructions:
        notes.append(
            "preInstructions and postInstructions run on the cluster-init node only, as in "
            "the original; this node joins and skips them"
        )
    if server_url is not None:
        steps.extend(_join_waits(role, server_url, ca_hash, options, notes))
    if config.registries is not None:
        steps.append(
            _yaml_file(
                f"write-{runtime}-registries",
                runtime.registries_file,
                plain["registries"],
                shown["registries"],
                0o400,  # the original's registry.ToFile permissions
            )
        )
    real_config, shown_config, config_notes = _runtime_config(
        config,
        role,
        runtime,
        server_url,
        plain.get("extraConfig", {}),
        shown.get("extraConfig", {}),
        secrets,
    )
    notes.extend(config_notes)
    steps.append(
        _yaml_file(
            f"write-{runtime}-config", runtime.config_drop_in, real_config, shown_config, 0o600
        )
    )
    if init:
        steps.extend(_init_manifests(config, runtime, plain, shown, notes))
    steps.extend(_install_steps(version, role, options))
    steps.extend(_probes(runtime, role, options))
    if init:
        steps.extend(_instructions("post", config.post_instructions, kubeconfig_env, options))
    notes.extend(_unused_key_notes(config, role, runtime))
    return Plan(role, version, server_url, tuple(steps), tuple(notes), secrets, root=options.root)


def _join_waits(
    role: JoinRole, server_url: str, ca_hash: str | None, options: PlanOptions, notes: list[str]
) -> list[Step]:
    """A joiner waits for the init node, checks its CA; a server then waits for its turn."""
    steps: list[Step] = [
        WaitForPeers("wait-init-ready", PeerWait.INIT_READY, server_url),
        VerifyServerCA(
            "verify-server-ca",
            server_url,
            ca_hash,
            timeout=options.cacerts_timeout,
            interval=options.cacerts_interval,
        ),
    ]
    if role is JoinRole.SERVER and options.stagger_joins:
        steps.append(WaitForPeers("wait-join-turn", PeerWait.JOIN_TURN, server_url))
    elif role is JoinRole.SERVER:
        notes.append(
            f"TEST SWITCH ${JOIN_AT_ONCE_ENV}: this server does not wait for its turn; "
            "servers joining at once break k3s's and rke2's etcd (never set it in production)"
        )
    return steps


def _unused_key_notes(config: Config, role: JoinRole, runtime: Runtime) -> list[str]:
    notes = []
    if config.runtime_installer_image:
        notes.append(
            f"runtimeInstallerImage is not used: rancherd installs {runtime} with the "
            f"official install script (set ${INSTALL_SCRIPT_ENV} to use another script)"
        )
    if config.rancher_installer_image:
        notes.append(
            "rancherInstallerImage is not used: Rancher is installed by the runtime's helm "
            "controller from a HelmChart manifest"
        )
    if config.system_default_registry and not (
        role is JoinRole.CLUSTER_INIT and config.rancher_version
    ):
        notes.append(
            "systemDefaultRegistry is passed to Rancher's chart only; for the runtime's own "
            "images set system-default-registry in extraConfig"
        )
    return notes


def _check_role(config: Config, role: JoinRole, server: str | None) -> None:
    if config.role is JoinRole.AGENT and role is not JoinRole.AGENT:
        raise PlanError(f"this node is configured as an agent: it joins as one, never as {role}")
    if config.role is not JoinRole.AGENT and role is JoinRole.AGENT:
        raise PlanError(f"this node is configured as {config.role}: it never joins as an agent")
    if config.role is JoinRole.CLUSTER_INIT and role is not JoinRole.CLUSTER_INIT:
        raise PlanError("this node is configured as cluster-init: it creates the cluster")
    if role is JoinRole.CLUSTER_INIT:
        if server is not None:
            raise PlanError("the cluster-init node creates the cluster: it joins no server")
        return
    if server is None:
        raise PlanError(f"a {role} joins a server: which one is missing")
    if config.token is None:
        raise PlanError("joining a server needs the token; set token in the config")


def _runtime_config(
    config: Config,
    role: JoinRole,
    runtime: Runtime,
    server_url: str | None,
    plain_extra: Mapping[str, Any],
    shown_extra: Mapping[str, Any],
    secrets: Sequence[Secret],
) -> tuple[dict[str, Any], dict[str, Any], list[str]]:
    """The drop-in as written and as shown, and notes on extraConfig keys we replaced."""
    ours: dict[str, Any] = {}
    if config.token is not None:
        ours["token"] = config.token.reveal()
    if role is JoinRole.CLUSTER_INIT:
        if runtime is Runtime.K3S:
            ours["cluster-init"] = True
    else:
        ours["server"] = server_url
    if config.tls_sans and role is not JoinRole.AGENT:
        ours["tls-san"] = list(config.tls_sans)  # a server-only flag
    if config.node_name:
        ours["node-name"] = config.node_name
    if config.internal_address:
        ours["node-ip"] = _ips(config.internal_address)
    if config.address:
        ours["node-external-ip"] = _ips(config.address)
    if config.taints:
        ours["node-taint"] = list(config.taints)
    if config.labels:
        ours["node-label"] = list(config.labels)

    notes = [
        f"extraConfig.{key} is replaced by rancherd's own value"
        for key in sorted(plain_extra)
        if key in ours
    ]
    real = {**plain_extra, **ours}
    shown = redact_tree({**shown_extra, **ours}, secrets)
    if "token" in shown:
        shown["token"] = REDACTED
    return real, shown, notes


def _ips(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def _yaml_file(
    name: str, path: str, real: Any, shown: Any, mode: int, *, stream: bool = False
) -> WriteFile:
    dump = yaml.safe_dump_all if stream else yaml.safe_dump
    content = _HEADER + dump(real, sort_keys=False)
    return WriteFile(
        name, path, content.encode(), _HEADER + dump(shown, sort_keys=False), mode=mode
    )


def _init_manifests(
    config: Config,
    runtime: Runtime,
    plain: Mapping[str, Any],
    shown: Mapping[str, Any],
    notes: list[str],
) -> list[Step]:
    steps: list[Step] = []
    if config.rancher_version:
        defaults = dict(DEFAULT_VALUES)
        if (
            config.discovery is not None
            and config.discovery.port == DEFAULT_HOST_PORT
            and "hostPort" not in config.rancher_values
        ):
            defaults["hostPort"] = GOSSIP_SAFE_HOST_PORT
            notes.append(
                f"Rancher's hostPort is {GOSSIP_SAFE_HOST_PORT}, not the original's "
                f"{DEFAULT_HOST_PORT}: rancherd's discovery listens on {DEFAULT_HOST_PORT} "
                "(set rancherValues.hostPort to choose)"
            )
        if config.system_default_registry:
            defaults["systemDefaultRegistry"] = config.system_default_registry
        real_values = merge_values(defaults, plain.get("rancherValues", {}))
        shown_values = merge_values(defaults, shown.get("rancherValues", {}))
        try:
            content = _HEADER + rancher_manifest(config.rancher_version, real_values)
            shown_content = _HEADER + rancher_manifest(config.rancher_version, shown_values)
        except RancherVersionError as exc:
            raise PlanError(str(exc)) from None
        steps.append(
            WriteFile(
                "write-rancher-manifest",
                f"{runtime.manifests_dir}/rancherd-rancher.yaml",
                content.encode(),
                shown_content,
                mode=0o600,  # values may hold passwords
            )
        )
    if config.resources:
        steps.append(
            _yaml_file(
                "write-resources-manifest",
                f"{runtime.manifests_dir}/rancherd.yaml",  # the original's GetManifests
                plain["resources"],
                shown["resources"],
                0o600,  # a resource may be a Secret
                stream=True,
            )
        )
    return steps


def _install_steps(version: RuntimeVersion, role: JoinRole, options: PlanOptions) -> list[Step]:
    runtime = version.runtime
    server = role is not JoinRole.AGENT
    kind = "server" if server else "agent"
    env = version.install_env()
    prefix = runtime.env_prefix
    if runtime is Runtime.K3S:
        env[f"{prefix}EXEC"] = kind
        env[f"{prefix}SKIP_START"] = "true"  # started by its own step, below
    else:
        env[f"{prefix}TYPE"] = kind
    script = options.install_script or runtime.install_script_url
    path_args: tuple[int, ...] = ()
    if script.startswith(("https://", "http://")):
        argv: tuple[str, ...] = ("sh", "-c", _FETCH_AND_RUN, f"install-{runtime}", script)
    else:
        argv, path_args = ("sh", script), (1,)  # sh reads the script by its path
    unit = runtime.service(server=server)
    return [
        RunCommand(
            f"install-{runtime}",
            argv,
            tuple(sorted(env.items())),
            timeout=options.install_timeout,
            skip_if=BinaryPresent(runtime.binary_paths, version.version),
            path_args=path_args,
        ),
        RunCommand("systemd-daemon-reload", (options.systemctl, "daemon-reload"), timeout=60.0),
        RunCommand(
            f"start-{runtime}",
            (options.systemctl, "enable", "--now", unit),
            timeout=options.start_timeout,
        ),
    ]


def _probes(runtime: Runtime, role: JoinRole, options: PlanOptions) -> list[Step]:
    """The original's probes, less the scheduler's and controller-manager's: their
    insecure ports (10251) are gone from Kubernetes; the API server being ready covers it."""
    steps: list[Step] = []
    if role is not JoinRole.AGENT:
        steps.append(
            ProbeUrl(
                "probe-apiserver",
                options.apiserver_probe_url,
                ca_file=runtime.server_ca,
                client_cert=runtime.apiserver_client_cert,
                client_key=runtime.apiserver_client_key,
                interval=options.probe_interval,
                timeout=options.probe_timeout,
            )
        )
    steps.append(
        ProbeUrl(
            "probe-kubelet",
            options.kubelet_probe_url,
            interval=options.probe_interval,
            timeout=options.probe_timeout,
        )
    )
    return steps


def _instructions(
    phase: str,
    instructions: Sequence[Instruction],
    extra_env: tuple[tuple[str, str], ...],
    options: PlanOptions,
) -> list[Step]:
    """Pre/post instructions as host commands, with ``KUBECONFIG`` added as the original
    does (``kubectl.Env``). Images are refused: system-agent unpacked them; we do not."""
    steps: list[Step] = []
    for index, instruction in enumerate(instructions):
        key = f"{phase}Instructions[{index}]"
        if instruction.image:
            raise PlanError(
                f"{key}: image is not supported: rancherd runs instructions as host "
                "commands; put the command on the host (or in the image the node boots)"
            )
        if not instruction.command:
            raise PlanError(f"{key}: command is required")
        env: list[tuple[str, str]] = []
        for entry in instruction.env:
            name, equals, value = entry.partition("=")
            if not equals or not name:
                raise PlanError(f"{key}: env[{len(env)}] is not NAME=value")
            env.append((name, value))
        label = re.sub(r"[^A-Za-z0-9._-]+", "-", instruction.name or "").strip("-")
        steps.append(
            RunCommand(
                f"{phase}-{label or index + 1}",
                (instruction.command, *instruction.args),
                (*extra_env, *env),
                timeout=options.instruction_timeout,
                save_output=instruction.save_output,
            )
        )
    return steps
