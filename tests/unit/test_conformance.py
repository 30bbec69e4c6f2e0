"""Every upstream case of ``../shared/conformance/cases/`` against rancherd.

The cases are real inputs nobody on this project wrote (their README names each source and
commit): configs of the original rancherd and of the projects that used it, with
``configs/cases.json`` saying what the original does with each; Go's ``ParseDuration``
table; go-discover's parser and mDNS tests and its provider list; the flag names of k3s and
rke2; k3s's join-token vectors; the HelmChart schema. They are read where they are, never
copied into the project; without them (a clone elsewhere) this module skips and says why.

Each case must give the original's result, or a departure that our docs state: a case we
treat differently names the sentence of the doc that says so, and the test checks that the
sentence is there.
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from rancherd.bootstrap import decide_statically
from rancherd.config import (
    CLOUD_CONFIG_PATHS,
    DEFAULT_CONFIG_PATH,
    IMPLICIT_PATHS,
    Config,
    ConfigError,
    LoadedConfig,
    Secret,
    config_to_dict,
    load_config,
)
from rancherd.discovery.params import (
    GO_DISCOVER_PROVIDERS,
    SUPPORTED_PROVIDERS,
    DiscoveryParams,
    ParamsError,
    check_params,
    format_params,
    parse_params_string,
)
from rancherd.durations import DurationError, parse_duration_ns
from rancherd.gossip.election import JoinRole
from rancherd.install import PlanError, RunCommand, WriteFile, build_plan
from rancherd.install.cacerts import NoCertificateError, format_k10, hash_ca
from rancherd.install.rancher import DEFAULT_VALUES, rancher_manifest
from rancherd.install.runtime import Runtime, resolve_kubernetes_version
from rancherd.join_token import TokenError, parse_token

REPO = Path(__file__).resolve().parents[2]
CASES = REPO.parent / "shared" / "conformance" / "cases"

if not (CASES / "configs" / "cases.json").is_file():
    pytest.skip(
        f"upstream conformance cases not found at {CASES} (they live beside the repository, "
        "in shared/conformance)",
        allow_module_level=True,
    )


def doc_has(doc: str, quote: str) -> None:
    """The departure is written where the case says (or in CONFIG.md's table)."""
    text = (REPO / doc).read_text()
    assert quote in text, f"{doc} does not say: {quote}"


def load_json(name: str) -> Any:
    return json.loads((CASES / name).read_text())


# --- configs/cases.json ----------------------------------------------------------------

CONFIG_CASES: list[dict[str, Any]] = load_json("configs/cases.json")["cases"]


def rerooted(root: Path, path: Path | str) -> Path:
    return root / str(path).lstrip("/")


def load_case(case: Mapping[str, Any], root: Path) -> LoadedConfig:
    """Lay the case's files out under ``root`` and read them as rancherd reads a machine."""
    for target, source in case["files"].items():
        path = rerooted(root, target)
        path.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(CASES / "configs" / source, path)
    return load_config(
        None,
        implicit_paths=[rerooted(root, p) for p in IMPLICIT_PATHS],
        default_path=rerooted(root, DEFAULT_CONFIG_PATH),
        cloud_config_paths={rerooted(root, p) for p in CLOUD_CONFIG_PATHS},
    )


def at(data: Any, dotted: str) -> Any:
    """``rancherValues.features`` or ``preInstructions.0.image`` in plain data."""
    for part in dotted.split("."):
        data = data[int(part)] if isinstance(data, list) else data[part]
    return data


def resources_of(path: Path) -> list[Any]:
    document: dict[str, Any] = yaml.safe_load(path.read_text()) or {}
    document = document.get("rancherd", document)
    return [*(document.get("resources") or []), *(document.get("bootstrapResources") or [])]


def check_meaning(case: Mapping[str, Any], loaded: LoadedConfig, root: Path) -> None:
    config = loaded.config
    shown = config_to_dict(config)  # redacted, as `rancherd config` shows it
    for key, want in case.get("meaning", {}).items():
        if key == "$token":
            assert config.token is not None
            assert config.token.reveal() == want
        elif key == "$resources_from":
            expected = [item for f in want for item in resources_of(rerooted(root, f))]
            assert config_to_dict(config, redact=False)["resources"] == expected
        else:
            assert at(shown, key) == want, key


def decide(case: Mapping[str, Any], config: Config) -> tuple[JoinRole, str | None]:
    if config.discovery is not None:
        # The election's outcome is not in the files; the case says which role to plan.
        return JoinRole(case["plan"].get("role", "cluster-init")), None
    decision = decide_statically(config)
    return decision.role, decision.server_url


def check_plan(case: Mapping[str, Any], config: Config) -> None:
    want = case["plan"]
    role, server = decide(case, config)
    if "role_is" in want:
        assert role.value == want["role_is"]
    refusals = want.get("refusals", [])
    if refusals:
        # The original makes this plan; only a departure our docs state may stop it.
        with pytest.raises(PlanError) as caught:
            build_plan(config, role, server)
        matching = [r for r in refusals if re.search(r["match"], str(caught.value))]
        assert matching, f"plan refused: {caught.value}"
        for refusal in matching:
            doc_has(refusal["departure"]["doc"], refusal["departure"]["quote"])
        return
    plan = build_plan(config, role, server)
    if "server_port" in want:
        assert plan.server_url is not None
        assert urlsplit(plan.server_url).port == want["server_port"]
        written = next(s for s in plan.steps if isinstance(s, WriteFile) and "40-" in s.path)
        assert yaml.safe_load(written.content)["server"] == plan.server_url
    if want.get("join_without_instructions"):
        names = [step.name for step in plan.steps]
        assert not [n for n in names if n.startswith(("pre-", "post-"))], names
    if "install_env" in want:
        install = next(s for s in plan.steps if isinstance(s, RunCommand) and "install" in s.name)
        assert dict(install.env).items() >= want["install_env"].items()


@pytest.mark.parametrize("case", CONFIG_CASES, ids=[c["id"] for c in CONFIG_CASES])
def test_config_case(case: dict[str, Any], tmp_path: Path) -> None:
    try:
        loaded = load_case(case, tmp_path)
    except ConfigError as exc:
        messages = [str(issue) for issue in exc.issues]
        assert case["expect"] == "reject", messages
        for reason in case["reasons"]:
            assert any(re.search(reason["match"], m) for m in messages), (reason, messages)
            if "departure" in reason:
                doc_has(reason["departure"]["doc"], reason["departure"]["quote"])
        return
    assert case["expect"] == "accept", f"accepted; the original refuses: {case['reasons']}"
    check_meaning(case, loaded, tmp_path)
    if "plan" in case:
        check_plan(case, loaded.config)


def test_known_gaps_are_in_the_departures_table() -> None:
    gaps = [r for c in CONFIG_CASES for r in c.get("reasons", []) if r.get("gap")]
    assert gaps, "cases.json names known gaps"
    table = departures_table()
    assert "tpm://" in table
    assert "not supported yet" in table


def departures_table() -> str:
    text = (REPO / "docs" / "CONFIG.md").read_text()
    start = text.index("## Departures from the original")
    end = text.find("\n## ", start + 1)
    return text[start : end if end != -1 else len(text)]


# --- durations/: Go's time.ParseDuration table ------------------------------------------

DURATIONS = load_json("durations/go_parse_duration.json")


@pytest.mark.parametrize("case", DURATIONS["valid"], ids=[c["in"] for c in DURATIONS["valid"]])
def test_go_duration(case: dict[str, Any]) -> None:
    assert parse_duration_ns(case["in"]) == case["want_ns"]


def _error_input(case: Mapping[str, Any]) -> str:
    if "in" in case:
        return str(case["in"])
    # Bytes that are not UTF-8 reach us as surrogates, as Python decodes a file name.
    return bytes.fromhex(case["in_bytes_hex"]).decode("utf-8", "surrogateescape")


@pytest.mark.parametrize("case", DURATIONS["errors"], ids=lambda c: repr(_error_input(c)))
def test_go_duration_error(case: dict[str, Any]) -> None:
    with pytest.raises(DurationError):
        parse_duration_ns(_error_input(case))


# --- discover/: go-discover's parser, its mDNS test, its providers ----------------------

DISCOVER_CONFIG = load_json("discover/go_discover_config.json")
MDNS_CASES = load_json("discover/go_discover_mdns.json")["cases"]


@pytest.mark.parametrize("case", DISCOVER_CONFIG["parse"], ids=lambda c: repr(c["in"]))
def test_go_discover_parse(case: dict[str, Any]) -> None:
    if case["want_error"] is not None:
        with pytest.raises(ParamsError):
            parse_params_string(case["in"])
    else:
        assert parse_params_string(case["in"]) == case["want"]


@pytest.mark.parametrize("case", DISCOVER_CONFIG["string"], ids=lambda c: repr(c["in"]))
def test_go_discover_string(case: dict[str, Any]) -> None:
    assert format_params(parse_params_string(case["in"])) == case["want"]


@pytest.mark.parametrize("text", DISCOVER_CONFIG["roundtrip"])
def test_go_discover_round_trip(text: str) -> None:
    assert format_params(parse_params_string(text)) == text


MDNS_DEPARTURES = {
    # go-discover accepts these; rancherd refuses them and CONFIG.md says why.
    "valid config - no addresses": (
        {"service", "v6"},
        "`_rancher-server._tcp` is accepted too). Servers advertise **and** browse",
    ),
    "valid config - one address": (
        {"service"},
        "`_rancher-server._tcp` is accepted too). Servers advertise **and** browse",
    ),
}


@pytest.mark.parametrize("case", MDNS_CASES, ids=[c["desc"] for c in MDNS_CASES])
def test_go_discover_mdns(case: dict[str, Any]) -> None:
    issues = check_params(case["args"])
    params = {issue.param for issue in issues}
    if case["fail"]:
        assert case["bad_param"] in params, issues
    elif issues:
        departed, quote = MDNS_DEPARTURES[case["desc"]]
        assert params <= departed, issues
        doc_has("docs/CONFIG.md", quote)


GO_PROVIDERS = [
    line.strip()
    for line in (CASES / "discover" / "go_discover_providers.txt").read_text().splitlines()
    if line.strip() and not line.startswith("#")
]
README_EXAMPLES = [
    line.strip()
    for line in (CASES / "discover" / "go_discover_readme_examples.txt").read_text().splitlines()
    if line.strip().startswith("provider=")
]


def test_every_go_discover_provider_is_known() -> None:
    assert set(GO_PROVIDERS) <= GO_DISCOVER_PROVIDERS
    # mdns and srv work; every other one is a cloud or platform API, "not supported yet".
    assert set(SUPPORTED_PROVIDERS) & GO_DISCOVER_PROVIDERS == {"mdns", "srv"}


@pytest.mark.parametrize("line", README_EXAMPLES, ids=lambda line: line.split()[0])
def test_go_discover_readme_examples(line: str) -> None:
    values = parse_params_string(line)
    provider = values["provider"]
    issues = check_params(values)
    if provider in SUPPORTED_PROVIDERS:
        assert issues == []
        DiscoveryParams.from_mapping(values).typed()
    else:
        assert [i.param for i in issues] == ["provider"]
        assert f"{provider!r} is not supported yet" in issues[0].message


# --- token/: k3s's join-token vectors -----------------------------------------------------

TOKENS = load_json("token/k3s_token.json")


def digest_of(name: str) -> str:
    return hash_ca((CASES / "token" / name).read_bytes())


def with_digest(text: str, ca_file: str = TOKENS["ca_file"]) -> str:
    return text.replace("{digest}", digest_of(ca_file))


TOKEN_DEPARTURES = {
    # k3s parses it and fails later at the CA check; a non-hex hash can match no CA.
    "K10" + "X" * 64 + "::username:password": "a hash that is not hexadecimal can match no CA",
}


@pytest.mark.parametrize("case", TOKENS["valid"], ids=lambda c: c["token"][:24])
def test_k3s_valid_token(case: dict[str, Any]) -> None:
    token = with_digest(case["token"])
    if case["token"] in TOKEN_DEPARTURES:
        with pytest.raises(TokenError):
            parse_token(token)
        doc_has("rancherd/join_token.py", TOKEN_DEPARTURES[case["token"]])
        doc_has("docs/CONFIG.md", "a CA hash that is not hexadecimal")
        return
    parsed = parse_token(token)
    if case["bootstrap"]:
        assert parsed.credentials == case["bootstrap"]
        return
    username, _, password = parsed.credentials.partition(":")
    assert password == case["password"]
    # k3s leaves the user empty where the server's default ("server") applies.
    assert username == case["username"] or (not case["username"] and username in ("", "server"))


@pytest.mark.parametrize("case", TOKENS["invalid"], ids=lambda c: c["token"][:24] or "empty")
def test_k3s_invalid_token(case: dict[str, Any]) -> None:
    with pytest.raises(TokenError):
        parse_token(with_digest(case["token"]))


@pytest.mark.parametrize("case", TOKENS["invalid_servers"], ids=lambda c: repr(c["server"]))
def test_k3s_invalid_server(case: dict[str, Any], tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(f"role: agent\ntoken: t\nserver: {json.dumps(case['server'])}\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path, implicit_paths=(), default_path=None)
    assert [issue.key for issue in caught.value.issues] == ["server"]


@pytest.mark.parametrize(
    "case", TOKENS["hash_ca"], ids=lambda c: c["file"] if "file" in c else repr(c["bytes"])
)
def test_k3s_hash_ca(case: dict[str, Any]) -> None:
    if "file" in case:
        bundle = (CASES / "token" / case["file"]).read_bytes()
    else:
        bundle = case["bytes"].encode()
    if case["sha256"] is None:
        with pytest.raises(NoCertificateError):
            hash_ca(bundle)
    else:
        assert hash_ca(bundle) == case["sha256"]


@pytest.mark.parametrize("case", TOKENS["format"], ids=lambda c: c["what"][:40])
def test_k3s_format_token(case: dict[str, Any]) -> None:
    bundle = (CASES / "token" / case["ca_file"]).read_bytes()
    assert format_k10(bundle, case["token"]) == with_digest(case["want"], case["ca_file"])


# --- runtime/: every key rancherd writes is a flag of that runtime and role -------------

FLAG_TYPES: dict[str, str] = load_json("runtime/flag-types.json")["types"]


def flags(name: str) -> set[str]:
    text = (CASES / "runtime" / f"{name}.txt").read_text()
    return {line.strip() for line in text.splitlines() if line.strip() and line[0] != "#"}


def runtime_configs() -> Iterator[tuple[str, Runtime, JoinRole, dict[str, Any]]]:
    """The drop-in rancherd writes for each runtime and role, from a config using every
    key it maps (and no extraConfig, whose keys are the user's)."""
    roles = {JoinRole.CLUSTER_INIT: JoinRole.CLUSTER_INIT, JoinRole.SERVER: JoinRole.SERVER}
    for runtime, version in ((Runtime.K3S, "v1.31.4+k3s1"), (Runtime.RKE2, "v1.31.4+rke2r1")):
        for role in JoinRole:
            config = Config(
                role=roles.get(role, JoinRole.AGENT),
                token=Secret("t0ken"),
                kubernetes_version=version,
                tls_sans=("k8s.example.com",),
                node_name="node-a",
                address="203.0.113.5",
                internal_address="10.0.0.5",
                taints=("a=b:NoSchedule",),
                labels=("pool=a",),
            )
            server = None if role is JoinRole.CLUSTER_INIT else "https://10.0.0.1:8443"
            plan = build_plan(config, role, server)
            drop_in = next(
                step
                for step in plan.steps
                if isinstance(step, WriteFile) and step.path.endswith("40-rancherd.yaml")
            )
            yield f"{runtime}-{role}", runtime, role, yaml.safe_load(drop_in.content)


RUNTIME_CONFIGS = list(runtime_configs())


@pytest.mark.parametrize(
    ("runtime", "role", "written"),
    [(rt, role, written) for _, rt, role, written in RUNTIME_CONFIGS],
    ids=[name for name, *_ in RUNTIME_CONFIGS],
)
def test_every_key_written_is_a_flag_of_that_runtime_and_role(
    runtime: Runtime, role: JoinRole, written: dict[str, Any]
) -> None:
    kind = "agent" if role is JoinRole.AGENT else "server"
    known = flags(f"{runtime}-{kind}")
    if runtime is Runtime.RKE2:
        known -= flags(f"rke2-{kind}-dropped")
    assert set(written) <= known, set(written) - known
    for key, value in written.items():
        expected = {"string": str, "bool": bool, "string-slice": list}[FLAG_TYPES[key]]
        assert isinstance(value, expected), (key, value)


# --- helmchart/: the HelmChart rancherd writes, and the Rancher defaults ---------------

HELMCHART = load_json("helmchart/helmchart-crd.json")
ORIGINAL_VALUES = load_json("helmchart/original-rancher-values.json")


@pytest.mark.parametrize("version", ["v2.9.3", "stable", "https://charts.example/rancher"])
def test_rancher_helmchart_fits_the_schema(version: str) -> None:
    documents = list(yaml.safe_load_all(rancher_manifest(version, DEFAULT_VALUES)))
    (chart,) = [d for d in documents if d["kind"] == HELMCHART["kind"]]
    assert chart["apiVersion"] == f"{HELMCHART['group']}/{HELMCHART['versions'][0]}"
    assert set(chart) <= set(HELMCHART["top_level"])
    spec = chart["spec"]
    # Both the current API and the one of k3s/rke2 releases of mid-2022 know every field.
    assert set(spec) <= set(HELMCHART["spec"]) & set(HELMCHART["spec_v0_12_3"])
    types = {"string": str, "boolean": bool, "integer": int, "object": dict, "array": list}
    for key, value in spec.items():
        assert isinstance(value, types[HELMCHART["spec"][key]["type"]]), key


def test_rancher_defaults_are_the_originals() -> None:
    defaults = ORIGINAL_VALUES["defaults"]
    readme_only = {k: v for k, v in ORIGINAL_VALUES["readme_defaults"].items() if k != "source"}
    assert dict(DEFAULT_VALUES) in (defaults, {**defaults, **readme_only})


def test_runtime_versions_of_the_cases_resolve() -> None:
    # Every kubernetesVersion a case sets is a release the install scripts can fetch.
    for case in CONFIG_CASES:
        version = case.get("meaning", {}).get("kubernetesVersion")
        if version:
            resolved = resolve_kubernetes_version(version)
            assert resolved.version is not None
            assert re.fullmatch(r"v\d+\.\d+\.\d+\+(k3s|rke2r)\d+", resolved.version)
