"""Which Kubernetes distribution a node runs, which version, and where its files live.

``kubernetesVersion`` selects the runtime and the version as in the original rancherd
(``pkg/versions/versions.go`` ``K8sVersion`` and ``getVersionOrURL``, ``pkg/config/runtime.go``
``GetRuntime``):

- unset: k3s's ``stable`` channel;
- a ``:k3s`` or ``:rke2`` suffix names the runtime (``stable:rke2``, ``v1.31:rke2``);
- otherwise a version containing ``rke2`` is rke2, anything else k3s;
- ``v<major>.<minor>.<patch>...`` (``v`` and more than two dots' worth of parts) is an exact
  version; so is anything ending in ``-head`` or containing ``/`` (the original passes
  those on unresolved);
- ``v1.20.5-k3s1`` and ``v1.21.3-rke2r1``, the image tag spelling the original's installer
  images used (``pkg/images`` replaces ``+`` by ``-``), are the releases ``v1.20.5+k3s1``
  and ``v1.21.3+rke2r1``: the install scripts download a release by its exact name;
- an ``http(s)://`` URL is a channel URL; anything else (``stable``, ``latest``,
  ``testing``, ``v1.31``) is a channel name.

Departure: the original resolved a channel to a version over the network when it built
the plan. We never touch the network at plan time: the channel goes to the official install
script (``INSTALL_K3S_CHANNEL`` / ``INSTALL_RKE2_CHANNEL``, with ``..._CHANNEL_URL`` for a
URL), which resolves it when it runs. So ``rancherd plan`` is pure, and ``stable:rke2`` is
known to be rke2 from its suffix rather than from the version it resolves to.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum
from urllib.parse import urlsplit

__all__ = [
    "DEFAULT_CHANNEL",
    "Runtime",
    "RuntimeVersion",
    "VersionError",
    "resolve_kubernetes_version",
]

DEFAULT_CHANNEL = "stable"
"""The original's default ``kubernetesVersion``: k3s's stable channel."""

_CHANNEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}")
_VERSION = re.compile(r"[A-Za-z0-9][A-Za-z0-9.+_/-]{0,127}")
_IMAGE_TAG_SUFFIX = re.compile(r"(?<=\d)-((?:k3s|rke2r)\d+)$")
"""``v1.20.5-k3s1``: the image tag spelling of release ``v1.20.5+k3s1`` (tags have no +)."""


class VersionError(ValueError):
    """``kubernetesVersion`` cannot be turned into a runtime and a version or channel."""


class Runtime(StrEnum):
    """The Kubernetes distribution; its value is the name used in every path."""

    K3S = "k3s"
    RKE2 = "rke2"

    @property
    def supervisor_port(self) -> int:
        """Port joining nodes talk to (``server:`` and ``/cacerts``): 6443 k3s, 9345 rke2."""
        return 6443 if self is Runtime.K3S else 9345

    @property
    def config_dir(self) -> str:
        return f"/etc/rancher/{self.value}"

    @property
    def config_drop_in(self) -> str:
        """Our drop-in, as the original writes it (``runtime.GetConfigLocation``)."""
        return f"{self.config_dir}/config.yaml.d/40-rancherd.yaml"

    @property
    def registries_file(self) -> str:
        return f"{self.config_dir}/registries.yaml"

    @property
    def kubeconfig(self) -> str:
        """Admin kubeconfig the server writes (``kubectl.Env`` in the original)."""
        return f"{self.config_dir}/{self.value}.yaml"

    @property
    def data_dir(self) -> str:
        return f"/var/lib/rancher/{self.value}"

    @property
    def manifests_dir(self) -> str:
        """The auto-deploy directory: servers apply every manifest written here."""
        return f"{self.data_dir}/server/manifests"

    @property
    def server_ca(self) -> str:
        """The cluster CA, served at ``/cacerts`` and hashed into K10 tokens."""
        return f"{self.data_dir}/server/tls/server-ca.crt"

    @property
    def server_token(self) -> str:
        """The join token the server writes (K10 form) when none was configured."""
        return f"{self.data_dir}/server/token"

    @property
    def apiserver_client_cert(self) -> str:
        return f"{self.data_dir}/server/tls/client-kube-apiserver.crt"

    @property
    def apiserver_client_key(self) -> str:
        return f"{self.data_dir}/server/tls/client-kube-apiserver.key"

    @property
    def binary_paths(self) -> tuple[str, ...]:
        """Where the install script (or a pre-baked image) puts the binary, in order."""
        if self is Runtime.K3S:
            return ("/usr/local/bin/k3s", "/opt/bin/k3s", "/usr/bin/k3s")
        return ("/usr/local/bin/rke2", "/opt/rke2/bin/rke2", "/usr/bin/rke2")

    @property
    def install_script_url(self) -> str:
        return "https://get.k3s.io" if self is Runtime.K3S else "https://get.rke2.io"

    @property
    def env_prefix(self) -> str:
        """``INSTALL_K3S_`` or ``INSTALL_RKE2_``."""
        return f"INSTALL_{self.value.upper()}_"

    def service(self, *, server: bool) -> str:
        """The systemd unit the install script creates: k3s, k3s-agent, rke2-server..."""
        if self is Runtime.K3S:
            return "k3s.service" if server else "k3s-agent.service"
        return "rke2-server.service" if server else "rke2-agent.service"


@dataclass(frozen=True, slots=True)
class RuntimeVersion:
    """What ``kubernetesVersion`` asks for: exactly one of ``version`` and ``channel``."""

    runtime: Runtime
    version: str | None = None
    """An exact release, ``v1.31.4+k3s1``."""
    channel: str | None = None
    """A channel name (``stable``, ``v1.31``), resolved by the install script."""
    channel_url: str | None = None
    """The channel server, when ``kubernetesVersion`` was a URL."""

    def install_env(self) -> dict[str, str]:
        """The install script's version variables."""
        prefix = self.runtime.env_prefix
        if self.version is not None:
            return {f"{prefix}VERSION": self.version}
        env = {f"{prefix}CHANNEL": self.channel or DEFAULT_CHANNEL}
        if self.channel_url is not None:
            env[f"{prefix}CHANNEL_URL"] = self.channel_url
        return env

    def describe(self) -> str:
        if self.version is not None:
            return f"{self.runtime} {self.version}"
        where = f" from {self.channel_url}" if self.channel_url else ""
        return f"{self.runtime}, channel {self.channel}{where}"


def resolve_kubernetes_version(text: str | None) -> RuntimeVersion:
    """``kubernetesVersion`` to a runtime and an exact version or a channel (no network)."""
    if text is None or not text.strip():
        return RuntimeVersion(Runtime.K3S, channel=DEFAULT_CHANNEL)
    original = text
    text = text.strip()
    runtime: Runtime | None = None
    for candidate in Runtime:
        if text.endswith(f":{candidate.value}"):
            runtime = candidate
            text = text.removesuffix(f":{candidate.value}")
            break
    if not text:
        text = DEFAULT_CHANNEL
    if runtime is None:
        runtime = Runtime.RKE2 if Runtime.RKE2.value in text else Runtime.K3S

    if text.startswith(("https://", "http://")):
        try:
            url = urlsplit(text)
        except ValueError:
            url = None
        path = url.path.rstrip("/") if url is not None else ""
        base, _, channel = path.rpartition("/")
        if url is None or not url.hostname or not _CHANNEL_NAME.fullmatch(channel):
            raise VersionError(
                f"kubernetesVersion {original!r}: a channel URL ends in the channel name, "
                "like https://update.k3s.io/v1-release/channels/stable"
            )
        return RuntimeVersion(
            runtime, channel=channel, channel_url=f"{url.scheme}://{url.netloc}{base}"
        )
    if (text.startswith("v") and len(text.split(".")) > 2) or (
        text.endswith("-head") or "/" in text
    ):
        if not _VERSION.fullmatch(text):
            raise VersionError(f"kubernetesVersion {original!r} is not a release name")
        return RuntimeVersion(runtime, version=_IMAGE_TAG_SUFFIX.sub(r"+\1", text))
    if not _CHANNEL_NAME.fullmatch(text):
        raise VersionError(
            f"kubernetesVersion {original!r} is neither a version (v1.31.4+k3s1) nor a "
            "channel (stable, latest, testing, v1.31, stable:rke2)"
        )
    return RuntimeVersion(runtime, channel=text)
