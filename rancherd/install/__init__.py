"""The installer: a decision becomes a plan (data), and the plan is applied.

``build_plan(config, role, server)`` makes the plan for k3s or rke2 (``builders``); it is
printed by ``rancherd plan`` (``plan``) and applied, resumably and under a root prefix, by
``apply_plan`` (``apply``), which calls the caller's ``Hooks`` for the waits on peers and
for progress. ``cacerts`` checks a server's CA against a K10 token; ``token`` gives
``rancherd get-token`` its answer.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
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

# Imported on first use: the CLI's commands that install nothing (discover, peers,
# config...) must not pay for the installer and x509 at start-up.
_WHERE = {
    "ApplyResult": "rancherd.install.apply",
    "BinaryPresent": "rancherd.install.plan",
    "CAHashMismatch": "rancherd.install.cacerts",
    "Hooks": "rancherd.install.apply",
    "JoinToken": "rancherd.install.cacerts",
    "NoCertificateError": "rancherd.install.cacerts",
    "NoPeers": "rancherd.install.apply",
    "PeerWait": "rancherd.install.plan",
    "Plan": "rancherd.install.plan",
    "PlanError": "rancherd.install.builders",
    "PlanOptions": "rancherd.install.builders",
    "ProbeUrl": "rancherd.install.plan",
    "RunCommand": "rancherd.install.plan",
    "Runtime": "rancherd.install.runtime",
    "RuntimeVersion": "rancherd.install.runtime",
    "ServerCAError": "rancherd.install.cacerts",
    "Step": "rancherd.install.plan",
    "StepFailed": "rancherd.install.apply",
    "StepState": "rancherd.install.apply",
    "TokenError": "rancherd.install.cacerts",
    "VerifyServerCA": "rancherd.install.plan",
    "WaitForPeers": "rancherd.install.plan",
    "WriteFile": "rancherd.install.plan",
    "apply_plan": "rancherd.install.apply",
    "build_plan": "rancherd.install.builders",
    "check_server_ca": "rancherd.install.cacerts",
    "format_k10": "rancherd.install.cacerts",
    "hash_ca": "rancherd.install.cacerts",
    "parse_token": "rancherd.install.cacerts",
    "resolve_kubernetes_version": "rancherd.install.runtime",
    "runtime_server_url": "rancherd.install.builders",
    "under_root": "rancherd.install.apply",
}


def __getattr__(name: str) -> object:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


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
