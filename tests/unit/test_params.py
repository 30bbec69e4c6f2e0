from __future__ import annotations

from pathlib import PurePosixPath

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rancherd.addresses import HostPort, parse_host_port
from rancherd.discovery.params import (
    GO_DISCOVER_PROVIDERS,
    PROVIDERS,
    SUPPORTED_PROVIDERS,
    DiscoveryParams,
    FileParams,
    MdnsParams,
    ParamIssue,
    ParamsError,
    ParamSpec,
    StaticParams,
    check_params,
    format_params,
    parse_params_string,
)

# --- The one-line form -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("provider=mdns service=rancher-server", {"provider": "mdns", "service": "rancher-server"}),
        ("  provider=mdns   service=x  ", {"provider": "mdns", "service": "x"}),
        (
            'provider=static addrs="10.0.0.1 10.0.0.2"',
            {"provider": "static", "addrs": "10.0.0.1 10.0.0.2"},
        ),
        ('"some key"="some \\"value\\""', {"some key": 'some "value"'}),
        ('k="a\\\\b\\tc\\x41\\u00e9\\U0001F600\\101"', {"k": "a\\b\tcA\u00e9\U0001f600A"}),
        ('k=""', {"k": ""}),
        ("k = v", {"k": "v"}),  # go-discover's lexer skips spaces around '='
        ("provider=mdns\nservice=x", {"provider": "mdns", "service": "x"}),  # folded YAML
        ("", {}),
    ],
)
def test_parse_string(text: str, expected: dict[str, str]) -> None:
    assert parse_params_string(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("provider", "missing '='"),
        ("provider=", "missing value"),
        ("provider==mdns", "missing value"),
        ("a=b a=c", "given twice"),
        ("=x", "no key"),
        ('a="b', "unbalanced quotes"),
        ('a="b\\', "unbalanced quotes"),
        ('a=b"c', "quote inside"),
        ('a="\\q"', "unknown escape"),
        ('a="\\x4"', "bad escape"),
        ('a="\\x80"', "bad escape"),  # a lone byte, not UTF-8
        ('a="\\ud800"', "bad escape"),  # a surrogate
        ('a="\\9"', "unknown escape"),
    ],
)
def test_parse_string_errors(text: str, message: str) -> None:
    with pytest.raises(ParamsError, match=message):
        parse_params_string(text)


def test_format_puts_provider_first_and_quotes_what_needs_it() -> None:
    values = {"service": "x", "provider": "mdns", "addrs": "a b", "q": 'say "hi"', "e": ""}
    assert format_params(values) == 'provider=mdns addrs="a b" e="" q="say \\"hi\\"" service=x'


@given(st.dictionaries(st.text(), st.text(), max_size=8))
def test_string_form_round_trips(values: dict[str, str]) -> None:
    assert parse_params_string(format_params(values)) == values


# --- Providers -------------------------------------------------------------------------


def test_supported_providers() -> None:
    assert SUPPORTED_PROVIDERS == ("mdns", "static", "file", "srv")
    assert set(PROVIDERS) == set(SUPPORTED_PROVIDERS)


def test_provider_is_required() -> None:
    assert check_params({}) == [ParamIssue("provider", "required: one of mdns, static, file, srv")]
    assert check_params({"provider": ""})[0].param == "provider"


@pytest.mark.parametrize("provider", sorted(GO_DISCOVER_PROVIDERS - {"mdns", "srv"}))
def test_go_discover_provider_not_supported_yet(provider: str) -> None:
    (issue,) = check_params({"provider": provider, "whatever": "x"})
    assert issue == ParamIssue(
        "provider", f"{provider!r} is not supported yet; supported: mdns, static, file, srv"
    )


@pytest.mark.parametrize(
    ("provider", "guess"), [("mnds", "mdns"), ("statik", "static"), ("MDNS", None)]
)
def test_unknown_provider(provider: str, guess: str | None) -> None:
    (issue,) = check_params({"provider": provider})
    assert issue.param == "provider"
    assert f"unknown provider {provider!r}" in issue.message
    assert "supported: mdns, static, file" in issue.message
    if guess:
        assert f"did you mean {guess!r}" in issue.message


@pytest.mark.parametrize(
    ("provider", "param"), [("mdns", "service"), ("static", "addrs"), ("file", "path")]
)
def test_required_parameter(provider: str, param: str) -> None:
    for values in ({"provider": provider}, {"provider": provider, param: ""}):
        (issue,) = check_params(values)
        assert issue.param == param
        assert f"required by provider {provider}" in issue.message


def test_unknown_parameters_and_every_other_problem_are_all_reported() -> None:
    issues = check_params(
        {
            "provider": "mdns",
            "service": "rancher-server",
            "servce": "x",
            "v4": "no",
            "timeout": "5",
            "interfaces": "eth0 a/b",
        }
    )
    assert [issue.param for issue in issues] == ["servce", "v4", "timeout", "interfaces"]
    assert "did you mean 'service'?" in issues[0].message
    assert "'no' is not true or false" in issues[1].message
    assert "write 5s" in issues[2].message
    assert "'a/b'" in issues[3].message


@pytest.mark.parametrize("service", ["rancher-server", "_rancher-server._tcp", "Rancher-Server"])
def test_mdns(service: str) -> None:
    params = DiscoveryParams.from_mapping({"provider": "mdns", "service": service})
    mdns = params.typed_as(MdnsParams)
    assert mdns == MdnsParams(service="rancher-server")
    assert mdns.service_type == "_rancher-server._tcp.local."


def test_mdns_options() -> None:
    params = DiscoveryParams.parse(
        "provider=mdns service=rancher-server domain=local. v4=true v6=F timeout=2.5s "
        'interface=eth0 interfaces="eth1,eth0 bond0"'
    )
    assert params.typed_as(MdnsParams) == MdnsParams(
        service="rancher-server",
        v6=False,
        timeout=2.5,
        interfaces=("eth0", "eth1", "bond0"),
    )


@pytest.mark.parametrize(
    ("values", "param", "message"),
    [
        ({"service": "a_b"}, "service", "not a DNS-SD service name"),
        ({"service": "sixteen-letters1"}, "service", "not a DNS-SD service name"),
        ({"service": "-x"}, "service", "not a DNS-SD service name"),
        ({"service": "a--b"}, "service", "not a DNS-SD service name"),
        ({"service": "123"}, "service", "not a DNS-SD service name"),
        ({"service": "x", "domain": "example.com"}, "domain", "only works in the domain local"),
        ({"service": "x", "v4": "yes"}, "v4", "not true or false"),
        ({"service": "x", "v4": "false", "v6": "0"}, "v6", "both false"),
        ({"service": "x", "timeout": "-1s"}, "timeout", "is negative: go-discover would stop"),
        ({"service": "x", "timeout": "-0.5ms"}, "timeout", "is negative"),
        ({"service": "x", "timeout": "soon"}, "timeout", "not a duration"),
        ({"service": "x", "interface": "a/b"}, "interface", "not a network interface name"),
        ({"service": "x", "interface": "much-too-long-name"}, "interface", "not a network"),
    ],
)
def test_mdns_errors(values: dict[str, str], param: str, message: str) -> None:
    issues = check_params({"provider": "mdns", **values})
    assert [issue.param for issue in issues] == [param]
    assert message in issues[0].message


@pytest.mark.parametrize("text", ["0", "0s", "-0", "+0ms"])
def test_mdns_zero_timeout_means_the_default_as_in_go_discover(text: str) -> None:
    # hashicorp/mdns replaces a zero Timeout by its default; so do we (None: the provider's).
    params = DiscoveryParams.from_mapping({"provider": "mdns", "service": "x", "timeout": text})
    assert params.typed_as(MdnsParams).timeout is None
    set_one = DiscoveryParams.from_mapping({"provider": "mdns", "service": "x", "timeout": "2s"})
    assert set_one.typed_as(MdnsParams).timeout == 2.0


def test_empty_optional_value_means_default() -> None:
    params = DiscoveryParams.from_mapping({"provider": "mdns", "service": "x", "v4": ""})
    assert params.typed_as(MdnsParams).v4 is True


def test_static() -> None:
    params = DiscoveryParams.parse('provider=static addrs="10.0.0.1 node-2:9000 [fd00::3]:8443"')
    assert params.typed_as(StaticParams).addrs == (
        HostPort("10.0.0.1"),
        HostPort("node-2", 9000),
        HostPort("fd00::3", 8443),
    )


def test_static_reports_every_bad_address() -> None:
    issues = check_params({"provider": "static", "addrs": "10.0.0.1:0 bad_host 10.0.0.2,10.0.0.3"})
    assert [issue.param for issue in issues] == ["addrs"] * 3
    assert "separate addresses with spaces" in issues[2].message


def test_file() -> None:
    params = DiscoveryParams.from_mapping({"provider": "file", "path": "/etc/rancherd/servers"})
    assert params.typed_as(FileParams).path == PurePosixPath("/etc/rancherd/servers")
    (issue,) = check_params({"provider": "file", "path": "servers.txt"})
    assert issue == ParamIssue("path", "'servers.txt' must be an absolute path")


def test_typed_view_of_another_provider_is_refused() -> None:
    params = DiscoveryParams.from_mapping({"provider": "file", "path": "/x"})
    assert params.typed() == params.typed_as(FileParams)
    with pytest.raises(ValueError, match="the provider is file"):
        params.typed_as(MdnsParams)
    with pytest.raises(ValueError, match="the provider is file"):
        params.typed_as(StaticParams)


def test_from_mapping_raises_every_issue() -> None:
    with pytest.raises(ParamsError) as caught:
        DiscoveryParams.from_mapping({"provider": "mdns", "sevice": "x"})
    assert [issue.param for issue in caught.value.issues] == ["sevice", "service"]


def test_params_are_frozen() -> None:
    params = DiscoveryParams.parse("provider=mdns service=x")
    with pytest.raises(TypeError):
        params.values["service"] = "y"  # type: ignore[index]


_SERVICE = st.from_regex(r"[a-z][a-z0-9]{0,6}(-[a-z0-9]{1,6})?", fullmatch=True)
_HOST = st.one_of(
    st.ip_addresses().map(str),
    st.from_regex(r"[a-z][a-z0-9-]{0,10}[a-z0-9](\.[a-z]{2,5}){0,2}", fullmatch=True),
)
_HOST_PORT = st.builds(HostPort, _HOST, st.none() | st.integers(1, 65535))
_VALID = st.one_of(
    st.builds(
        lambda service, v6, timeout: {
            "provider": "mdns",
            "service": service,
            "v6": v6,
            **({"timeout": timeout} if timeout else {}),
        },
        _SERVICE,
        st.sampled_from(["true", "false", "1", "0"]),
        st.sampled_from(["", "1s", "250ms", "1m30s"]),
    ),
    st.builds(
        lambda addrs: {"provider": "static", "addrs": " ".join(str(a) for a in addrs)},
        st.lists(_HOST_PORT, min_size=1, max_size=5),
    ),
    st.builds(
        lambda name: {"provider": "file", "path": f"/etc/{name}"},
        st.text(st.characters(blacklist_characters="/\0", blacklist_categories=["Cs"]), min_size=1),
    ),
)


@given(_VALID)
def test_valid_params_round_trip_through_the_string_form(values: dict[str, str]) -> None:
    params = DiscoveryParams.from_mapping(values)
    text = params.to_string()
    assert DiscoveryParams.parse(text) == params
    assert parse_params_string(text) == values
    assert params.as_dict() == values


@given(_HOST_PORT)
def test_host_port_round_trips(address: HostPort) -> None:
    host = address.host
    if ":" in host and address.port is None:
        assert parse_host_port(host) == address  # a bare IPv6 address
    assert parse_host_port(str(address)) == address


@pytest.mark.parametrize(
    "text",
    [
        "",
        "host:",
        "host:0",
        "host:65536",
        "host:８０",  # full-width digits
        "[fd00::1",
        "[fd00::1]x",
        "[10.0.0.1]:80",
        "10.0.0.256",
        "1.2.3",
        "-bad",
        "bad-",
        "a..b",
        "fd00::1::2",
        "a b",
    ],
)
def test_bad_host_port(text: str) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - the messages are checked elsewhere
        parse_host_port(text)


# --- The registry -------------------------------------------------------------------------


def test_every_registered_provider_loads_its_class() -> None:
    from rancherd.discovery.params import REGISTRY
    from rancherd.discovery.provider import Provider

    for name, entry in REGISTRY.items():
        cls = entry.load()
        assert issubclass(cls, Provider)
        assert cls.name == name


def test_a_half_registered_provider_fails_at_import() -> None:
    from rancherd.discovery.params import ProviderEntry, RegistryError, _register, _specs

    spec = _specs(ParamSpec("path", True, None, "a path"))

    def check(values: object, issues: object) -> FileParams:
        return FileParams(PurePosixPath("/"))

    good = ProviderEntry("x", FileParams, spec, check, "rancherd.discovery.file:FileProvider")
    assert set(_register(good)) == {"x"}
    broken = [
        (ProviderEntry("x", dict, spec, check, good.implementation), "not a dataclass"),
        (ProviderEntry("x", FileParams, {}, check, good.implementation), "specs"),
        (ProviderEntry("x", FileParams, spec, check, "file:FileProvider"), "implementation"),
        (ProviderEntry("x", FileParams, spec, check, "rancherd.discovery.nope:X"), "no module"),
        (ProviderEntry("X y", FileParams, spec, check, good.implementation), "lowercase"),
    ]
    for entry, message in broken:
        with pytest.raises(RegistryError, match=message):
            _register(entry)
    with pytest.raises(RegistryError, match="registered twice"):
        _register(good, good)
    wrong_class = ProviderEntry("x", FileParams, spec, check, "rancherd.discovery.srv:SrvProvider")
    with pytest.raises(RegistryError, match="whose name is 'x'"):
        wrong_class.load()
