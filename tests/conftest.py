from __future__ import annotations

import os

import pytest
import trio
from fake_runtime import FakeServer, Tls, make_tls
from hypothesis import HealthCheck, settings

settings.register_profile("dev", max_examples=100)
settings.register_profile(
    "ci", max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "dev"))

# The tiers are folders (tests/unit, integration, real, sim); each test carries its folder's
# marker, so `-m unit`, `-m "not real"` and the like select them. Harness modules shared
# by the tiers (cli_harness, driver_harness, netns, ...) live here, beside this file.
TIERS = frozenset({"unit", "integration", "real", "sim"})


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        tier = item.path.parent.name
        if tier in TIERS:
            item.add_marker(tier)


# The fake k3s/rke2 (tests/fake_runtime/): one CA per module, a server per test.


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> Tls:
    return make_tls(tmp_path_factory.mktemp("tls"))


@pytest.fixture
async def server(nursery: trio.Nursery, tls: Tls, monkeypatch: pytest.MonkeyPatch) -> FakeServer:
    monkeypatch.setenv("FAKE_RUNTIME_TLS", str(tls.directory))
    """``/cacerts``, ``/readyz`` and ``/healthz`` of a runtime that is up."""
    fake = FakeServer(
        tls,
        {"/cacerts": (200, tls.ca_pem), "/readyz": (200, b"ok"), "/healthz": (200, b"ok")},
    )
    await fake.start(nursery)
    return fake
