"""The Rancher HelmChart manifest written on the init node when ``rancherVersion`` is set.

Values follow the original rancherd (``pkg/rancher/run.go`` ``defaultValues``, documented in
its README and ``config-example.yaml``): Rancher without ingress, reached on host port
8443, multi-cluster management off, no default admin, up to three replicas with required
anti-affinity, external TLS; then ``systemDefaultRegistry``; then ``rancherValues``, merged
recursively (maps merge key by key, anything else replaces), as ``data.MergeMaps`` does.

Departures:

- The original ran Rancher's installer image (``rancher/system-agent-installer-rancher``)
  through system-agent. We write a ``helm.cattle.io/v1`` ``HelmChart`` into the runtime's
  auto-deploy directory, which k3s's and rke2's helm controller install; so
  ``rancherInstallerImage`` is not used.
- ``hostPort``: rancherd keeps gossiping (the beacon late joiners find) on
  ``discovery.port``, 8443 by default, the same port as Rancher's default host port. A
  host port is a DNAT rule: it would capture the beacon's traffic on every node running a
  Rancher pod. When discovery uses 8443 and ``rancherValues`` does not set ``hostPort``,
  Rancher gets 9443 instead, and the plan says so in a note.
- Version: an exact version (``v2.9.3``) installs that chart version from the ``latest``
  chart repository (every release is published there); a channel (``stable``, ``latest``,
  ``alpha``) installs that repository's newest chart; an ``https://`` URL is taken as the
  chart repository. The original resolved channels over the network at plan time.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import yaml

__all__ = [
    "DEFAULT_HOST_PORT",
    "DEFAULT_VALUES",
    "GOSSIP_SAFE_HOST_PORT",
    "RANCHER_CHANNELS",
    "RancherVersionError",
    "merge_values",
    "rancher_chart_source",
    "rancher_manifest",
]

DEFAULT_HOST_PORT = 8443
GOSSIP_SAFE_HOST_PORT = 9443

DEFAULT_VALUES: Mapping[str, Any] = {
    "ingress": {"enabled": False},
    "features": "multi-cluster-management=false",
    "antiAffinity": "required",
    "replicas": -3,
    "tls": "external",
    "hostPort": DEFAULT_HOST_PORT,
    "noDefaultAdmin": True,
}
"""The original's defaults (its README: "By default Rancher is installed with...")."""

RANCHER_CHANNELS = ("stable", "latest", "alpha")
CHART_REPO = "https://releases.rancher.com/server-charts/{channel}"

_VERSION = re.compile(r"v?(\d+\.\d+\.\d+(?:[-+][0-9A-Za-z.-]+)?)")


class RancherVersionError(ValueError):
    """``rancherVersion`` is neither a version, a channel nor a chart repository URL."""


def rancher_chart_source(rancher_version: str) -> tuple[str, str | None]:
    """``(chart repository, chart version or None for the newest)``."""
    text = rancher_version.strip()
    match = _VERSION.fullmatch(text)
    if match is not None:
        return CHART_REPO.format(channel="latest"), match.group(1)
    if text in RANCHER_CHANNELS:
        return CHART_REPO.format(channel=text), None
    if text.startswith("https://") and " " not in text:
        return text.removesuffix("/index.yaml").rstrip("/"), None
    raise RancherVersionError(
        f"rancherVersion {rancher_version!r} is neither a version (v2.9.3), a channel "
        f"({', '.join(RANCHER_CHANNELS)}) nor a chart repository URL (https://...)"
    )


def merge_values(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """Recursive merge: maps merge key by key; any other value in ``override`` wins."""
    out = dict(base)
    for key, value in override.items():
        old = out.get(key)
        if isinstance(old, Mapping) and isinstance(value, Mapping):
            out[key] = merge_values(old, value)
        else:
            out[key] = value
    return out


def rancher_manifest(
    rancher_version: str,
    values: Mapping[str, Any],
) -> str:
    """The cattle-system Namespace and the Rancher HelmChart, as one YAML stream."""
    repo, version = rancher_chart_source(rancher_version)
    spec: dict[str, Any] = {"chart": "rancher", "repo": repo}
    if version is not None:
        spec["version"] = version
    spec["targetNamespace"] = "cattle-system"
    spec["valuesContent"] = _Literal(yaml.safe_dump(dict(values), sort_keys=True))
    documents = [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "cattle-system"}},
        {
            "apiVersion": "helm.cattle.io/v1",
            "kind": "HelmChart",
            "metadata": {"name": "rancher", "namespace": "kube-system"},
            "spec": spec,
        },
    ]
    return yaml.dump_all(documents, Dumper=_Dumper, sort_keys=False)


class _Literal(str):
    """A string written as a YAML literal block (``|``), as people write valuesContent."""

    __slots__ = ()


class _Dumper(yaml.SafeDumper):
    pass


def _literal(dumper: yaml.SafeDumper, value: _Literal) -> yaml.ScalarNode:
    return dumper.represent_scalar("tag:yaml.org,2002:str", str(value), style="|")


_Dumper.add_representer(_Literal, _literal)
