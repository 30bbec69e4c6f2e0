"""Rules between keys: role, token, server and discovery must make sense together.

Checked only when every file could be read: with a file missing, they would mislead.
"""

from __future__ import annotations

from rancherd.config.read import Reader
from rancherd.config.yamlvalues import Entry, Map, Scalar
from rancherd.kinds import JoinRole

__all__ = ["check_relations"]


def check_relations(reader: Reader, root: Map, role: JoinRole | None) -> None:
    def given(key: str) -> Entry | None:
        entry = root.entries.get(key)
        if entry is None or (isinstance(entry.value, Scalar) and entry.value.value is None):
            return None
        return entry

    role_entry, discovery, server = given("role"), given("discovery"), given("server")
    if role_entry is None:
        where = root.entries["role"].key_origin if "role" in root.entries else root.origin
        reader.fail(where, "role", "required: server, agent or cluster-init")
    _check_token(reader, given("token") is None, server, discovery)
    if role is JoinRole.AGENT and role_entry is not None and not (server or discovery):
        reader.fail(
            reader.where(role_entry),
            "role",
            "an agent needs server or discovery to find a server to join",
        )
    if role is JoinRole.CLUSTER_INIT:
        for key, entry in (("server", server), ("discovery", discovery)):
            if entry is not None:
                verb = "join" if key == "server" else "discover"
                reader.fail(
                    entry.key_origin,
                    key,
                    f"role cluster-init creates a new cluster; use role: server to {verb} one",
                )


def _check_token(
    reader: Reader, no_token: bool, server: Entry | None, discovery: Entry | None
) -> None:
    # A token written wrong is reported as such, not as missing: ``no_token`` is "not given".
    if discovery is not None and no_token:
        reader.fail(
            discovery.key_origin,
            "token",
            "required with discovery: nodes prove to each other with it that they belong",
        )
    if server is not None and no_token:
        reader.fail(server.key_origin, "token", "required to join a server")
    if server is not None and discovery is not None:
        reader.fail(
            discovery.key_origin,
            "discovery",
            "set either server (join that server) or discovery (find the servers), not both",
        )
