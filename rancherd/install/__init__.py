"""The installer: a decision becomes a plan (data), and the plan is applied.

``build_plan(config, role, server)`` makes the plan for k3s or rke2 (``builders``); it is
printed by ``rancherd plan`` (``plan``) and applied, resumably and under a root prefix, by
``apply_plan`` (``apply``), which calls the caller's ``Hooks`` for the waits on peers and
for progress. ``cacerts`` checks a server's CA against a K10 token; ``token`` gives
``rancherd get-token`` its answer.
"""

from rancherd.install.apply import (
    ApplyResult,
    Hooks,
    NoPeers,
    StepFailed,
    StepState,
    apply_plan,
    under_root,
)
from rancherd.install.builders import PlanError, PlanOptions, build_plan, runtime_server_url
from rancherd.install.cacerts import (
    CAHashMismatch,
    JoinToken,
    NoCertificateError,
    ServerCAError,
    TokenError,
    check_server_ca,
    format_k10,
    hash_ca,
    parse_token,
)
from rancherd.install.plan import (
    BinaryPresent,
    PeerWait,
    Plan,
    ProbeUrl,
    RunCommand,
    Step,
    VerifyServerCA,
    WaitForPeers,
    WriteFile,
)
from rancherd.install.runtime import Runtime, RuntimeVersion, resolve_kubernetes_version

__all__ = [
    "ApplyResult",
    "BinaryPresent",
    "CAHashMismatch",
    "Hooks",
    "JoinToken",
    "NoCertificateError",
    "NoPeers",
    "PeerWait",
    "Plan",
    "PlanError",
    "PlanOptions",
    "ProbeUrl",
    "RunCommand",
    "Runtime",
    "RuntimeVersion",
    "ServerCAError",
    "Step",
    "StepFailed",
    "StepState",
    "TokenError",
    "VerifyServerCA",
    "WaitForPeers",
    "WriteFile",
    "apply_plan",
    "build_plan",
    "check_server_ca",
    "format_k10",
    "hash_ca",
    "parse_token",
    "resolve_kubernetes_version",
    "runtime_server_url",
    "under_root",
]
