"""k3s/rke2 join tokens, parsed as k3s's ``pkg/clientaccess/token.go`` does; data only.

- a secure ("K10") token is ``K10<CA hash>::<credentials>``; the hash is 64 hex characters
  (sha256), the credentials ``username:password`` or a kubeadm-style bootstrap token
  (``abcdef.0123456789abcdef``); ``K10::creds`` and a bare ``K10creds`` carry no hash;
- any other token is a short token: no hash, the whole string is the password.

Departure: k3s's parser takes any 64 characters as the hash and only fails later, when
the CA it downloads does not match; a hash that is not hexadecimal can match no CA, so
we refuse it when the config is read. ``tpm://`` tokens (the original's TPM attestation
to Rancher) are refused too: nothing here can attest with a TPM, and sent to k3s as a
password the token would only fail the join.

Here, not in ``rancherd.install.cacerts``, so that the config loader can check the token
without importing trio or cryptography.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

__all__ = [
    "CA_HASH_LENGTH",
    "K10_PREFIX",
    "TPM_PREFIX",
    "JoinToken",
    "TokenError",
    "parse_token",
]

K10_PREFIX = "K10"
CA_HASH_LENGTH = 64
TPM_PREFIX = "tpm://"
"""The original's TPM attestation token (rancher/os2 registration)."""

_BOOTSTRAP_TOKEN = re.compile(r"[a-z0-9]{6}\.[a-z0-9]{16}")
_HEX = re.compile(r"[0-9a-fA-F]*")


class TokenError(ValueError):
    """The token cannot be a k3s/rke2 join token. The message never contains it."""


@dataclass(frozen=True, slots=True)
class JoinToken:
    """A parsed token. ``credentials`` is secret: it is left out of ``repr``."""

    ca_hash: str | None
    """Lower-case hex sha256 of the cluster CA, or None for a short token."""
    credentials: str = field(repr=False)
    """``username:password`` or a bootstrap token, as k3s sends it."""


def parse_token(token: str) -> JoinToken:
    """Parse a join token as k3s does; ``TokenError`` names what is wrong, not the token."""
    if not token:
        raise TokenError("the token is empty")
    if token.startswith(TPM_PREFIX):
        raise TokenError(
            "TPM tokens are not supported: tpm:// asked the original rancherd to attest to "
            "Rancher with the node's TPM; give the cluster's join token instead"
        )
    if not token.startswith(K10_PREFIX):
        if _BOOTSTRAP_TOKEN.fullmatch(token):
            return JoinToken(None, token)
        return JoinToken(None, f"server:{token}")
    rest = token[len(K10_PREFIX) :]
    ca_hash: str | None = None
    if "::" in rest:
        ca_hash, rest = rest.split("::", 1)
        if ca_hash and len(ca_hash) != CA_HASH_LENGTH:
            raise TokenError(
                f"the K10 token's CA hash has {len(ca_hash)} characters, not "
                f"{CA_HASH_LENGTH} (a sha256 in hex)"
            )
        if not _HEX.fullmatch(ca_hash):
            raise TokenError(
                "the K10 token's CA hash is not hexadecimal, so it can match no CA "
                "(rancherd get-token on the cluster's first server prints the right token)"
            )
        ca_hash = ca_hash.lower() or None
    if _BOOTSTRAP_TOKEN.fullmatch(rest):
        return JoinToken(ca_hash, rest)
    username, colon, password = rest.partition(":")
    if not colon or not password:
        raise TokenError("the K10 token has no username:password after its CA hash")
    return JoinToken(ca_hash, f"{username}:{password}")
