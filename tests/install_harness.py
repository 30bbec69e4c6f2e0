"""Plan options that point the installer at the fake runtime (tests/fake_runtime/) inside
a test's root (``populate_root``): the unit tests of the installer and the integration test
of sd_notify run plans with them."""

from __future__ import annotations

from fake_runtime import ROOT_INSTALL_SCRIPT, FakeServer

from rancherd.install import PlanOptions

__all__ = ["options"]


def options(server: FakeServer) -> PlanOptions:
    return PlanOptions(
        install_script=ROOT_INSTALL_SCRIPT,  # inside the root, as is systemctl
        supervisor_port=server.https_port,
        apiserver_probe_url=f"{server.https_url}/readyz",
        kubelet_probe_url=f"{server.http_url}/healthz",
        probe_interval=0.05,
        probe_timeout=10,
        cacerts_interval=0.05,
        cacerts_timeout=10,
    )
