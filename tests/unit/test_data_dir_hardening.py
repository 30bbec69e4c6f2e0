"""A data dir that cannot be subverted, and clear errors where tracebacks were (issue 15,
items 5 and 7): each test reproduces one case of the issue."""

from __future__ import annotations

import errno
import json
import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from rancherd.cli import cli
from rancherd.gossip.core import PersistedState
from rancherd.gossip.messages import Decision, Vote
from rancherd.state import MAX_STATE_FILE, DataDir, DoneStamp, StateError

A, B = "a" * 32, "b" * 32
PLANTED = "0123456789abcdef0123456789abcdef"


def run(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args), env={"RANCHERD_IMPLICIT_PATHS": ""})


def clean_exit(result: Result, code: int = 1) -> None:
    """The command ended with exit code ``code`` and a message, not a traceback."""
    assert result.exit_code == code, result.output
    assert isinstance(result.exception, SystemExit), result.exception
    assert "Traceback" not in result.output


def discover(tmp_path: Path, data_dir: Path) -> Result:
    """``rancherd discover`` on ``data_dir`` with ``discovery_config``, for one second."""
    config = discovery_config(tmp_path)
    return run("discover", "--config", str(config), "--data-dir", str(data_dir), "--timeout", "1")


def discovery_config(tmp_path: Path, token: str = "a-long-test-token") -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(
        f"role: server\ntoken: {json.dumps(token)}\naddress: 127.0.0.1\n"
        "discovery:\n  params: 'provider=static addrs=127.0.0.1'\n  expectedServers: 2\n"
        "  listenAddress: 127.0.0.1\n  port: 1\n  preset: local\n"
    )
    return path


def private_dir(path: Path) -> Path:
    path.mkdir(mode=0o700)
    return path


# --- item 5: a data dir not owned by us, or writable by others, is refused ---------------


def test_a_world_writable_data_dir_is_refused_and_its_node_id_never_used(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    (shared / "node-id").write_text(PLANTED + "\n")
    with pytest.raises(StateError, match=r"writable by group or others \(mode 0777\)") as error:
        DataDir(shared).node_id(random.Random(1).randbytes)
    assert f"chmod 700 {shared}" in str(error.value)
    with pytest.raises(StateError, match="writable by group or others"):
        DataDir(shared).lock()
    assert not (shared / "lock").exists()
    result = run("discover", "--config", str(discovery_config(tmp_path)), "--data-dir", str(shared))
    clean_exit(result)
    assert "chmod 700" in result.stderr
    assert PLANTED not in result.output


def test_a_group_writable_data_dir_is_refused_by_reset(tmp_path: Path) -> None:
    data = tmp_path / "d"
    DataDir(data).save_gossip(PersistedState(vote=Vote(A, 1, 2)))
    data.chmod(0o770)
    result = run("reset", "--data-dir", str(data), "--yes")
    clean_exit(result)
    assert "mode 0770" in result.stderr
    data.chmod(0o700)
    assert DataDir(data).load_gossip() == PersistedState(vote=Vote(A, 1, 2))


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to give a directory to another user")
def test_a_data_dir_of_another_user_is_refused(tmp_path: Path) -> None:
    theirs = private_dir(tmp_path / "theirs")
    (theirs / "node-id").write_text(PLANTED + "\n")
    os.chown(theirs, 65534, 65534)
    with pytest.raises(StateError, match="belongs to uid 65534, not to this user") as error:
        DataDir(theirs).read_node_id()
    assert f"chown 0 {theirs}" in str(error.value)
    info = run("info", "--data-dir", str(theirs), "--json")
    assert info.exit_code == 0, info.output
    answer = json.loads(info.stdout)
    assert answer["node_id"] is None
    assert "belongs to uid 65534" in answer["problems"][0]


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to make another user's symlink")
def test_a_data_dir_symlink_of_another_user_is_refused(tmp_path: Path) -> None:
    target = private_dir(tmp_path / "target")  # ours and safe: only the link is theirs
    link = tmp_path / "link"
    link.symlink_to(target)
    os.lchown(link, 65534, 65534)
    with pytest.raises(StateError, match="is a symlink made by uid 65534"):
        DataDir(link).lock()
    assert list(target.iterdir()) == []
    os.lchown(link, 0, 0)
    mine = DataDir(link)
    mine.lock()  # root's own link (a data dir moved to a bigger disk) is fine
    mine.unlock()


def test_a_lock_symlink_is_not_followed(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    data = private_dir(tmp_path / "d")
    (data / "lock").symlink_to(victim)
    with pytest.raises(StateError, match="lock is a symlink"):
        DataDir(data).lock()
    assert victim.read_text() == "precious\n"
    assert DataDir(data).in_use() is False


def test_a_state_file_symlink_is_not_read(tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere.json"
    DataDir(tmp_path / "other").save_gossip(PersistedState(vote=Vote(A, 1, 2)))
    shutil.copy(tmp_path / "other" / "gossip.json", elsewhere)
    data = private_dir(tmp_path / "d")
    (data / "gossip.json").symlink_to(elsewhere)
    with pytest.raises(StateError, match=r"gossip\.json is a symlink"):
        DataDir(data).load_gossip()


def test_a_fifo_is_refused_without_waiting_for_a_writer(tmp_path: Path) -> None:
    data = private_dir(tmp_path / "d")
    os.mkfifo(data / "gossip.json")
    with pytest.raises(StateError, match="not a regular file"):
        DataDir(data).load_gossip()
    os.mkfifo(data / "node-id")
    with pytest.raises(StateError, match="not a regular file"):
        DataDir(data).node_id(random.Random(1).randbytes)


def test_a_huge_state_file_is_refused_unread(tmp_path: Path) -> None:
    data = private_dir(tmp_path / "d")
    with open(data / "gossip.json", "wb") as file:
        file.truncate(MAX_STATE_FILE + 1)  # sparse: the test writes nothing
    with pytest.raises(StateError, match=f"is {MAX_STATE_FILE + 1} bytes"):
        DataDir(data).load_gossip()


# --- item 7: damaged state files, state the wire would refuse ------------------------------


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
        (bytes(range(256)) * 4, "not UTF-8 text"),
    ],
    ids=["deep", "binary"],
)
def test_deep_or_binary_state_files_are_clear_errors(
    tmp_path: Path, content: bytes, message: str
) -> None:
    data = DataDir(tmp_path / "d")
    data.create()
    data.gossip_file.write_bytes(content)
    data.done_file.write_bytes(content)
    with pytest.raises(StateError, match=message):
        data.load_gossip()
    with pytest.raises(StateError, match=message):
        data.load_done()
    result = run("info", "--data-dir", str(data.path))
    assert result.exit_code == 0
    assert message in result.stdout


def _gossip_json(tmp_path: Path, **changes: object) -> DataDir:
    data = DataDir(tmp_path / "d")
    decision = Decision("c1", A, "10.0.0.1", 0, (A, B))
    data.save_gossip(PersistedState(incarnation=3, vote=Vote(A, 1, 2), decision=decision))
    document = json.loads(data.gossip_file.read_bytes())
    for key, value in changes.items():
        if key.startswith("decision."):
            document["decision"][key.removeprefix("decision.")] = value
        else:
            document[key] = value
    data.gossip_file.write_text(json.dumps(document))
    return data


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"decision.cluster_id": "not-hex!"}, "decision would be refused on the wire"),
        ({"decision.init_host": "10.0.0.1\nextra: line"}, "decision would be refused"),
        ({"decision.members": [B, A]}, "decision would be refused"),
        ({"incarnation": 2**64 - 1}, "incarnation is 18446744073709551615"),
        ({"next_round": 2**64 - 1}, "next_round is 18446744073709551615"),
    ],
    ids=["cluster-id", "init-host", "members-order", "incarnation", "next-round"],
)
def test_state_the_wire_would_refuse_is_refused_at_start(
    tmp_path: Path, changes: dict[str, object], message: str
) -> None:
    data = _gossip_json(tmp_path, **changes)
    with pytest.raises(StateError, match=message):
        data.load_gossip()
    result = discover(tmp_path, data.path)
    clean_exit(result)
    assert message in result.stderr


def test_a_full_disk_while_persisting_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = DataDir(tmp_path / "d")
    data.create()

    def full(path: Path, data: bytes, mode: int = 0o600, owner: object = None) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr("rancherd.state.write_atomic", full)
    with pytest.raises(StateError, match=r"No space left on device.*free some space"):
        data.save_gossip(PersistedState(vote=Vote(A, 1, 2)))
    with pytest.raises(StateError, match="No space left"):
        data.save_done(DoneStamp("server", None, None, "k3s", 0.0))
    # The node's first write (its node id) or its first persisted state: the same error.
    result = discover(tmp_path, data.path)
    clean_exit(result)
    assert "No space left on device" in result.stderr


def test_a_read_only_data_dir_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = DataDir(tmp_path / "d")
    data.save_gossip(PersistedState(vote=Vote(A, 1, 2)))
    real_open = os.open

    def read_only(path: object, flags: int, *args: object, **kwargs: object) -> int:
        if flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))
        return real_open(path, flags, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr("rancherd.state.os.open", read_only)
    for args in (("reset", "--yes"), ("discover", "--config", str(discovery_config(tmp_path)))):
        result = run(*args, "--data-dir", str(data.path))
        clean_exit(result)
        assert "Read-only file system" in result.stderr
        assert "writable file system" in result.stderr


def test_a_surrogate_in_the_token_is_a_clear_error(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    text = discovery_config(tmp_path).read_text().replace("a-long-test-token", "abc\\ud800defghij")
    config.write_text(text)
    for args in (("discover", "--data-dir", str(tmp_path / "d")), ("get-token",)):
        result = run(*args, "--config", str(config))
        clean_exit(result, 2)
        assert "lone surrogate" in result.stderr
        assert "defghij" not in result.output


async def test_a_node_refuses_a_token_it_cannot_derive_keys_from(tmp_path: Path) -> None:
    import dataclasses

    from node_harness import make_config, make_node

    from rancherd.config import Secret
    from rancherd.gossip.memory_transport import MemoryNetwork
    from rancherd.node import NodeError

    config = dataclasses.replace(make_config(0, 1, tmp_path), token=Secret("abc\ud800defghij"))
    with pytest.raises(NodeError, match="lone surrogate"):
        await make_node(MemoryNetwork(), config).run()


# --- the same, with a real read-only mount and a real full file system --------------------


def _in_mount_namespace(script: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "sh", "-euc", script],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        env={**os.environ, "RANCHERD_IMPLICIT_PATHS": "", "PYTHON": sys.executable},
        check=False,
    )


@pytest.mark.real
@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to mount a tmpfs")
@pytest.mark.skipif(shutil.which("unshare") is None, reason="needs unshare (util-linux)")
def test_real_read_only_and_full_data_dirs(tmp_path: Path) -> None:
    config = discovery_config(tmp_path)
    (tmp_path / "ro").mkdir()
    (tmp_path / "full").mkdir()
    script = f"""
mount -t tmpfs -o size=64k,mode=0700 tmpfs ro
"$PYTHON" -c 'from pathlib import Path; from rancherd.state import DataDir
from rancherd.gossip.core import PersistedState; from rancherd.gossip.messages import Vote
DataDir(Path("ro")).save_gossip(PersistedState(vote=Vote("a" * 32, 1, 2)))'
mount -o remount,ro ro
"$PYTHON" -m rancherd reset --data-dir ro --yes > reset.out 2>&1 || echo "reset $?" >> codes
"$PYTHON" -m rancherd discover --config {config} --data-dir ro --timeout 1 > ro.out 2>&1 \\
  || echo "discover-ro $?" >> codes
mount -t tmpfs -o size=8k,mode=0700 tmpfs full
dd if=/dev/zero of=full/filler bs=1k count=64 2>/dev/null || true
"$PYTHON" -m rancherd discover --config {config} --data-dir full --timeout 1 > full.out 2>&1 \\
  || echo "discover-full $?" >> codes
"""
    done = _in_mount_namespace(script, tmp_path)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "codes").read_text().split("\n")[:3] == [
        "reset 1",
        "discover-ro 1",
        "discover-full 1",
    ]
    for name, expected in (
        ("reset", "Read-only file system"),
        ("ro", "Read-only file system"),
        ("full", "No space left on device"),
    ):
        output = (tmp_path / f"{name}.out").read_text()
        assert expected in output, output
        assert "Traceback" not in output


def test_a_binary_runtime_token_file_is_a_clear_error(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("role: server\nkubernetesVersion: v1.31.4+k3s1\n")
    token_file = tmp_path / "root/var/lib/rancher/k3s/server/token"
    token_file.parent.mkdir(parents=True)
    token_file.write_bytes(b"abc\xed\xa0\x80def\n")  # an encoded surrogate: not UTF-8
    result = run("get-token", "--config", str(config), "--root", str(tmp_path / "root"))
    clean_exit(result)
    assert "is not UTF-8 text" in result.stderr


async def test_a_full_disk_at_the_vote_stops_the_node_before_it_acks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ENOSPC exactly when a server persists its vote: the node stops with the error (no
    exception group, no traceback), and its peer never sees an ack or a decision."""
    import trio
    from node_harness import make_config, make_node

    from rancherd.files import write_atomic
    from rancherd.gossip.memory_transport import MemoryNetwork
    from rancherd.node import single_errors

    network = MemoryNetwork()
    configs = [make_config(i, 2, tmp_path) for i in range(2)]
    healthy, failing = (make_node(network, c) for c in configs)

    def full_at_the_vote(path: Path, data: bytes, mode: int = 0o600, owner: object = None) -> None:
        if path.parent == configs[1].data_dir and b'"vote": {' in data:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        write_atomic(path, data, mode)

    monkeypatch.setattr("rancherd.state.write_atomic", full_at_the_vote)
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            await nursery.start(healthy.run)

            async def run_failing() -> None:
                with single_errors():  # as discover and bootstrap run a node
                    async with trio.open_nursery() as inner:
                        await inner.start(failing.run)
                        await trio.sleep_forever()

            with pytest.raises(StateError, match="No space left on device") as error:
                await run_failing()
            nursery.cancel_scope.cancel()
    assert "gossip.json" in str(error.value)
    assert healthy.outcome() is None
    assert DataDir(configs[1].data_dir).load_gossip() in (None, PersistedState(incarnation=1))
