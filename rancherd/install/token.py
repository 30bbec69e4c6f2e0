"""``rancherd get-token``: the token other nodes join this cluster with.

The original asked Rancher for its ``ClusterRegistrationToken`` (``pkg/token``). We join
k3s/rke2 directly, so the join token is the runtime's: the configured token in the secure
K10 form, ``K10<sha256 of the cluster CA>::server:<token>``, once the runtime's CA exists
(a joining node can then check that it talks to this cluster); the configured token as is
before that. Without a configured token (a lone ``cluster-init`` node), k3s/rke2 generated
one and wrote it, in K10 form, to ``/var/lib/rancher/<runtime>/server/token``.

It prints a secret, so it refuses unless run as root or as the owner of the file the token
comes from.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from rancherd.config import Config
from rancherd.install.apply import under_root
from rancherd.install.cacerts import (
    NoCertificateError,
    TokenError,
    format_k10,
    hash_ca,
    parse_token,
)
from rancherd.install.runtime import VersionError, resolve_kubernetes_version

__all__ = ["GetTokenError", "JoinTokenAnswer", "join_token"]


class GetTokenError(Exception):
    """No token can be given; the message says why."""


@dataclass(frozen=True, slots=True)
class JoinTokenAnswer:
    token: str = field(repr=False)
    warnings: tuple[str, ...] = ()


def join_token(
    config: Config, *, token_file: Path | None, root: Path = Path("/"), euid: int | None = None
) -> JoinTokenAnswer:
    """The join token; ``token_file`` is the config file that set ``token``."""
    euid = os.geteuid() if euid is None else euid
    if config.token is not None and euid != 0:
        owner = None if token_file is None else _owner(token_file)
        if owner != euid:
            where = "the config" if token_file is None else str(token_file)
            raise GetTokenError(
                f"the join token is a secret: run get-token as root or as the owner of "
                f"{where} (you are uid {euid})"
            )
    try:
        runtime = resolve_kubernetes_version(config.kubernetes_version).runtime
    except VersionError as exc:
        raise GetTokenError(str(exc)) from None
    ca_path = under_root(root, runtime.server_ca)
    if config.token is None:
        path = under_root(root, runtime.server_token)
        try:
            generated = path.read_text().strip()
        except FileNotFoundError:
            raise GetTokenError(
                f"the config has no token and {runtime} has not written one yet "
                f"({path} does not exist): has {runtime} started on this node?"
            ) from None
        except OSError as exc:
            raise GetTokenError(f"cannot read {path}: {exc.strerror or exc}") from None
        except UnicodeDecodeError:
            raise GetTokenError(f"{path} is not UTF-8 text: not a token {runtime} wrote") from None
        if not generated:
            raise GetTokenError(f"{path} is empty")
        return JoinTokenAnswer(generated)
    token = config.token.reveal()
    try:
        parsed = parse_token(token)
    except TokenError as exc:
        raise GetTokenError(f"token: {exc}") from None
    try:
        bundle = ca_path.read_bytes()
    except FileNotFoundError:
        return JoinTokenAnswer(
            token,
            (f"{ca_path} does not exist yet, so the token is not in the secure K10 form",),
        )
    except OSError as exc:
        raise GetTokenError(f"cannot read {ca_path}: {exc.strerror or exc}") from None
    warnings: tuple[str, ...] = ()
    try:
        local_hash = hash_ca(bundle)
    except NoCertificateError as exc:
        raise GetTokenError(f"{ca_path} {exc}: no secure K10 token can be made from it") from None
    if parsed.ca_hash is not None and parsed.ca_hash != local_hash:
        warnings = (
            f"the configured token names CA sha256 {parsed.ca_hash}, but this node's CA "
            f"({ca_path}) is {local_hash}: the token printed carries this node's",
        )
    return JoinTokenAnswer(format_k10(bundle, token), warnings)


def _owner(path: Path) -> int | None:
    try:
        return path.stat().st_uid
    except OSError:
        return None
