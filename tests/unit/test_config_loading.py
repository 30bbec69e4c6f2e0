"""Where config comes from: paths, directories, drop-ins, cloud-config, merging, sources."""

from __future__ import annotations

import os
import textwrap
from collections.abc import Sequence
from pathlib import Path

import pytest

from rancherd import config as config_module
from rancherd.config import (
    CLOUD_CONFIG_PATHS,
    IMPLICIT_PATHS,
    ConfigError,
    LoadedConfig,
    load_config,
)
from rancherd.config import check as check_module
from rancherd.config import loader as loader_module
from rancherd.discovery.params import MdnsParams
from rancherd.kinds import JoinRole

BASE = """\
role: server
token: base-token
discovery:
  params:
    provider: mdns
    service: rancher-server
"""


def write(root: Path, name: str, text: str) -> Path:
    path = root / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


def load(
    explicit: Path | None = None,
    implicit: Sequence[Path] = (),
    *,
    default: Path | None = None,
    cloud: Sequence[Path] = (),
) -> LoadedConfig:
    return load_config(
        explicit, implicit_paths=implicit, default_path=default, cloud_config_paths=cloud
    )


def issues_of(excinfo: pytest.ExceptionInfo[ConfigError]) -> list[str]:
    return [str(issue) for issue in excinfo.value.issues]


def test_defaults_match_the_original() -> None:
    assert [str(p) for p in IMPLICIT_PATHS] == [
        "/usr/share/oem/rancher/rancherd/config.yaml",
        "/usr/share/rancher/rancherd/config.yaml",
        "/oem/userdata",
        "/oem/99_custom.yaml",
        "/oem/rancher/rancherd/config.yaml",
        "/var/lib/cloud/instance/user-data.txt",
    ]
    assert {str(p) for p in CLOUD_CONFIG_PATHS} == {
        "/oem/userdata",
        "/oem/99_custom.yaml",
        "/var/lib/cloud/instance/user-data.txt",
    }


def test_one_explicit_file(tmp_path: Path) -> None:
    path = write(tmp_path, "config.yaml", BASE)
    loaded = load(path)
    assert loaded.config.role is JoinRole.SERVER
    assert loaded.config.token is not None
    assert loaded.config.token.reveal() == "base-token"
    assert loaded.files == (path,)
    assert dict(loaded.sources) == {"role": path, "token": path, "discovery": path}


def test_implicit_paths_in_order_then_explicit_with_sources(tmp_path: Path) -> None:
    first = write(tmp_path, "usr/config.yaml", BASE + "tlsSans: [a]\nnodeName: first\n")
    second = write(tmp_path, "oem/config.yaml", "tlsSans: [b]\nnodeName: second\n")
    explicit = write(tmp_path, "etc/config.yaml", "tlsSans: [c]\n")
    loaded = load(explicit, [first, tmp_path / "missing.yaml", second])
    assert loaded.config.tls_sans == ("a", "b", "c")  # lists concatenate in load order
    assert loaded.config.node_name == "second"  # the later scalar wins
    assert loaded.files == (first, second, explicit)
    assert loaded.sources["tlsSans"] == explicit
    assert loaded.sources["nodeName"] == second
    assert loaded.sources["role"] == first


def test_maps_merge_recursively_and_the_last_file_is_the_source(tmp_path: Path) -> None:
    base = write(tmp_path, "a.yaml", BASE + "extraConfig: {a: 1, nested: {x: 1, y: 2}}\n")
    over = write(
        tmp_path,
        "b.yaml",
        """\
        discovery:
          expectedServers: 5
        extraConfig: {nested: {y: 3, z: 4}, b: 2}
        """,
    )
    loaded = load(over, [base])
    discovery = loaded.config.discovery
    assert discovery is not None
    assert discovery.expected_servers == 5
    assert discovery.params.typed_as(MdnsParams).service == "rancher-server"  # kept from a.yaml
    assert loaded.config.extra_config == {"a": 1, "nested": {"x": 1, "y": 3, "z": 4}, "b": 2}
    assert loaded.sources["discovery"] == over
    assert loaded.sources["token"] == base


def test_null_overrides_like_the_original(tmp_path: Path) -> None:
    base = write(tmp_path, "a.yaml", BASE + "nodeName: node-1\ntlsSans: [a]\n")
    over = write(tmp_path, "b.yaml", "nodeName:\ntlsSans: ~\n")
    loaded = load(over, [base])
    assert loaded.config.node_name is None
    assert loaded.config.tls_sans == ()


def test_a_later_value_of_another_type_replaces(tmp_path: Path) -> None:
    base = write(tmp_path, "a.yaml", BASE)
    over = write(tmp_path, "b.yaml", "discovery:\n  params: provider=static addrs=10.0.0.1\n")
    loaded = load(over, [base])
    assert loaded.config.discovery is not None
    assert loaded.config.discovery.params.provider == "static"


def test_directory_adds_its_yaml_files_in_name_order(tmp_path: Path) -> None:
    directory = tmp_path / "conf"
    write(tmp_path, "conf/20-b.yml", "tlsSans: [b]\n")
    write(tmp_path, "conf/10-a.yaml", BASE + "tlsSans: [a]\n")
    write(tmp_path, "conf/30-c.YAML", "tlsSans: [c]\n")
    write(tmp_path, "conf/notes.txt", "this: is not read\n")
    write(tmp_path, "conf/.#40-d.yaml", "broken: [\n")  # editor leftovers are skipped
    (directory / "sub.yaml").mkdir()  # a directory named like a file is skipped
    loaded = load(None, [directory])
    assert loaded.config.tls_sans == ("a", "b", "c")
    assert loaded.files == (
        directory / "10-a.yaml",
        directory / "20-b.yml",
        directory / "30-c.YAML",
    )


def test_drop_ins_follow_their_file_in_name_order(tmp_path: Path) -> None:
    first = write(tmp_path, "first.yaml", BASE + "tlsSans: [first]\n")
    write(tmp_path, "first.yaml.d/20-b.yaml", "tlsSans: [first.d/20]\n")
    write(tmp_path, "first.yaml.d/10-a.yml", "tlsSans: [first.d/10]\n")
    write(tmp_path, "first.yaml.d/ignored.json", "{}")
    write(tmp_path, "first.yaml.d/10-a.yml.d/x.yaml", "tlsSans: [first.d/10.d]\n")
    second = write(tmp_path, "second.yaml", "tlsSans: [second]\n")
    write(tmp_path, "second.yaml.d/a.yaml", "tlsSans: [second.d]\nnodeName: from-drop-in\n")
    loaded = load(second, [first])
    assert loaded.config.tls_sans == (
        "first",
        "first.d/10",
        "first.d/10.d",
        "first.d/20",
        "second",
        "second.d",
    )
    assert loaded.sources["nodeName"] == tmp_path / "second.yaml.d/a.yaml"
    assert loaded.sources["tlsSans"] == tmp_path / "second.yaml.d/a.yaml"


def test_drop_ins_of_a_missing_file_are_read(tmp_path: Path) -> None:
    # The original reads FILE.d even when FILE is missing.
    write(tmp_path, "config.yaml.d/a.yaml", BASE)
    write(tmp_path, "usr/config.yaml.d/b.yaml", "tlsSans: [b]\n")
    loaded = load(None, [tmp_path / "usr/config.yaml"], default=tmp_path / "config.yaml")
    assert loaded.files == (
        tmp_path / "usr/config.yaml.d/b.yaml",
        tmp_path / "config.yaml.d/a.yaml",
    )


def test_drop_ins_of_a_missing_explicit_file_do_not_hide_the_error(tmp_path: Path) -> None:
    write(tmp_path, "config.yaml.d/a.yaml", BASE)
    with pytest.raises(ConfigError, match="does not exist"):
        load(tmp_path / "config.yaml")


def test_cloud_config_contributes_only_its_rancherd_key(tmp_path: Path) -> None:
    user_data = write(
        tmp_path,
        "user-data.txt",
        """\
        #cloud-config
        hostname: node-1
        write_files:
          - path: /etc/motd
            content: !!binary aGVsbG8=
        runcmd:
          - [echo, hi]
        rancherd:
          role: server
          token: from-user-data
          discovery:
            params: {provider: mdns, service: rancher-server}
        """,
    )
    loaded = load(None, [user_data])
    assert loaded.config.token is not None
    assert loaded.config.token.reveal() == "from-user-data"
    assert set(loaded.sources) == {"role", "token", "discovery"}


def test_cloud_config_without_rancherd_key_contributes_nothing(tmp_path: Path) -> None:
    user_data = write(tmp_path, "user-data.txt", "#cloud-config\nhostname: node-1\n")
    config = write(tmp_path, "config.yaml", BASE)
    loaded = load(config, [user_data])
    assert loaded.files == (config,)


def test_cloud_config_locations_are_cloud_config_without_the_header(tmp_path: Path) -> None:
    userdata = write(tmp_path, "oem/userdata", "hostname: node-1\nssh_authorized_keys: []\n")
    config = write(tmp_path, "config.yaml", BASE)
    loaded = load(config, [userdata], cloud=[userdata])
    assert loaded.files == (config,)
    # Not a cloud-config location and no header: its keys are ours, and unknown.
    with pytest.raises(ConfigError) as caught:
        load(config, [userdata])
    assert f"{userdata}:1: hostname: unknown key" in issues_of(caught)


def test_rancherd_key_in_a_plain_file_is_the_only_part_read(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "config.yaml",
        """\
        other: things
        rancherd:
          role: server
        """,
    )
    loaded = load(path)
    assert loaded.config.role is JoinRole.SERVER
    assert loaded.sources == {"role": path}


def test_rancherd_key_must_be_a_map(tmp_path: Path) -> None:
    path = write(tmp_path, "config.yaml", "rancherd: [role]\n")
    with pytest.raises(ConfigError) as caught:
        load(path)
    assert issues_of(caught) == [f"{path}:1: rancherd: expected a map"]


def test_empty_rancherd_key_contributes_nothing(tmp_path: Path) -> None:
    user_data = write(tmp_path, "user-data", "#cloud-config\nrancherd:\n")
    config = write(tmp_path, "config.yaml", BASE)
    assert load(config, [user_data]).files == (config,)


def test_explicit_file_must_exist(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load(tmp_path / "nope.yaml")
    assert issues_of(caught) == [f"{tmp_path / 'nope.yaml'}: does not exist"]


def test_default_file_may_be_missing_when_implicit_files_give_config(tmp_path: Path) -> None:
    implicit = write(tmp_path, "usr/config.yaml", BASE)
    loaded = load(None, [implicit], default=tmp_path / "etc/config.yaml")
    assert loaded.files == (implicit,)


def test_default_file_is_read_when_present(tmp_path: Path) -> None:
    default = write(tmp_path, "etc/config.yaml", BASE)
    assert load(None, default=default).files == (default,)


def test_no_config_at_all_lists_where_it_looked(tmp_path: Path) -> None:
    empty = write(tmp_path, "empty.yaml", "")
    comments = write(tmp_path, "comments.yaml", "# nothing yet\n")
    braces = write(tmp_path, "braces.yaml", "{}\n")
    user_data = write(tmp_path, "user-data", "#cloud-config\nhostname: x\n")
    directory = tmp_path / "conf.d"
    directory.mkdir()
    with pytest.raises(ConfigError) as caught:
        load(
            None,
            [tmp_path / "missing.yaml", empty, comments, braces, user_data, directory],
            default=tmp_path / "etc/config.yaml",
        )
    lines = issues_of(caught)
    assert lines[0].startswith("no rancherd config found")
    assert lines[1:] == [
        f"{tmp_path / 'missing.yaml'}: not found",
        f"{empty}: empty",
        f"{comments}: empty",
        f"{braces}: empty",
        f"{user_data}: a cloud-config without a rancherd: key",
        f"{directory}: a directory without *.yaml or *.yml files",
        f"{tmp_path / 'etc/config.yaml'}: not found",
    ]


def test_explicit_directory_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load(tmp_path)
    assert issues_of(caught) == [f"{tmp_path}: is a directory; expected a YAML file"]


def test_special_file_is_an_error(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo.yaml"
    os.mkfifo(fifo)
    with pytest.raises(ConfigError) as caught:
        load(fifo)
    assert issues_of(caught) == [f"{fifo}: is not a regular file"]


def test_unreadable_file_is_an_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path, "config.yaml", BASE)
    real_open = Path.open

    def deny(self: Path, *args: object, **kwargs: object) -> object:
        if self == path:
            raise PermissionError(13, "Permission denied")
        return real_open(self, *args, **kwargs)  # type: ignore[call-overload]

    monkeypatch.setattr(Path, "open", deny)
    with pytest.raises(ConfigError) as caught:
        load(path)
    assert issues_of(caught) == [f"{path}: cannot read: Permission denied"]


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads everything")
def test_unreadable_directory_is_an_error(tmp_path: Path) -> None:  # pragma: no cover
    directory = tmp_path / "conf"
    write(tmp_path, "conf/a.yaml", BASE)
    directory.chmod(0)
    try:
        with pytest.raises(ConfigError) as caught:
            load(None, [directory])
    finally:
        directory.chmod(0o755)
    assert issues_of(caught)[0].startswith(f"{directory}: cannot list")


def test_unstatable_path_is_an_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "locked/config.yaml"
    real_stat = Path.stat

    def deny(self: Path, **kwargs: bool) -> os.stat_result:
        if self == path:
            raise PermissionError(13, "Permission denied")
        return real_stat(self, **kwargs)

    monkeypatch.setattr(Path, "stat", deny)
    with pytest.raises(ConfigError) as caught:
        load(None, [path])
    assert issues_of(caught) == [f"{path}: cannot read: Permission denied"]


def test_invalid_utf8_is_an_error_with_its_line(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_bytes(b"role: server\ntoken: \xff\xfe\n")
    with pytest.raises(ConfigError) as caught:
        load(path)
    assert issues_of(caught) == [f"{path}:2: not valid UTF-8 (byte 0xff); save it as UTF-8"]


def test_utf8_bom_is_fine(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_bytes(b"\xef\xbb\xbf" + BASE.encode())
    assert load(path).config.role is JoinRole.SERVER


def test_oversized_file_is_refused_unread(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(loader_module, "MAX_FILE_SIZE", 64)
    path = write(tmp_path, "config.yaml", BASE + "# " + "x" * 100 + "\n")
    with pytest.raises(ConfigError, match="larger than"):
        load(path)


def test_a_path_with_a_nul_byte_is_an_error() -> None:
    with pytest.raises(ConfigError, match="not a valid path"):
        load(Path("con\0fig.yaml"))


def test_the_same_file_twice_is_read_once(tmp_path: Path) -> None:
    path = write(tmp_path, "config.yaml", BASE + "tlsSans: [a]\n")
    link = tmp_path / "link.yaml"
    link.symlink_to(path)
    loaded = load(link, [path])
    assert loaded.config.tls_sans == ("a",)


def test_drop_in_symlink_loop_ends(tmp_path: Path) -> None:
    write(tmp_path, "config.yaml", BASE)
    write(tmp_path, "config.yaml.d/x.yaml", "tlsSans: [x]\n")
    (tmp_path / "config.yaml.d/x.yaml.d").symlink_to(tmp_path / "config.yaml.d")
    loaded = load(tmp_path / "config.yaml")
    assert loaded.config.tls_sans == ("x",)


def test_errors_of_all_files_are_reported_in_read_order(tmp_path: Path) -> None:
    first = write(tmp_path, "a.yaml", "role: server\nbogus: 1\n")
    broken = write(tmp_path, "b.yaml", "tlsSans: [\n")
    last = write(tmp_path, "c.yaml", "nodeNme: x\n")
    with pytest.raises(ConfigError) as caught:
        load(last, [first, broken])
    lines = issues_of(caught)
    assert lines[0] == f"{first}:2: bogus: unknown key"
    assert lines[1].startswith(f"{broken}:2: YAML syntax error")
    assert lines[2] == f"{last}:1: nodeNme: unknown key; did you mean 'nodeName'?"
    assert len(lines) == 3


def test_a_bug_in_the_loader_is_still_a_config_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: object, **kwargs: object) -> None:
        raise KeyError(TOKEN_LIKE)

    monkeypatch.setattr(check_module.Checker, "config", broken)
    with pytest.raises(ConfigError) as caught:
        load(write(tmp_path, "config.yaml", BASE))
    assert issues_of(caught) == ["internal error while reading the config (KeyError)"]


TOKEN_LIKE = "base-token"


def test_limits_match_the_wire_format() -> None:
    from rancherd.gossip import codec

    assert config_module.MAX_EXPECTED_SERVERS == codec.MAX_VIEW
    assert config_module.MAX_ADVERTISE_ADDRESSES == codec.MAX_ADDRESSES
