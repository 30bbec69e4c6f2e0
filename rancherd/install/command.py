"""The ``rancherd plan`` and ``rancherd get-token`` commands.

``rancherd.cli`` imports this module by name (``COMMANDS``) only when one of them runs;
both take the context object of ``rancherd.cli_options``, never ``rancherd.cli`` itself.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from urllib.parse import urlsplit

import click

from rancherd.addresses import bracketed, parse_host_port
from rancherd.cli_options import Invocation, SharedOptionsCommand, pass_invocation
from rancherd.config import Config
from rancherd.decision import BootstrapError, decide_statically
from rancherd.gossip.election import JoinRole
from rancherd.install.builders import (
    INSTALL_SCRIPT_ENV,
    SYSTEMCTL_ENV,
    PlanError,
    PlanOptions,
    build_plan,
)

__all__ = ["COMMANDS", "get_token_command", "plan_command"]


def _check_server(_ctx: click.Context, _param: click.Parameter, value: str | None) -> str | None:
    """``--server`` is a host name, an IP address or an https:// URL of one."""
    if value is None:
        return None
    text = value.strip()
    host = text
    if "://" in text:
        try:
            parts = urlsplit(text)
            parts.port  # noqa: B018  (raises on a bad port)
        except ValueError:
            parts = None
        if parts is None or parts.scheme != "https" or parts.path not in ("", "/"):
            raise click.BadParameter(f"{value!r} is not a host or an https:// URL")
        host = bracketed(parts.hostname or "")
    try:
        parse_host_port(host)
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a host or an https:// URL") from None
    return text


_PLAN_HELP = f"""Print the plan this node would apply, without applying anything.

The plan is the ordered list of steps that turn this node into a k3s or rke2 node: the
files written (runtime config, registries.yaml, manifests), the install script and its
environment, the service started, the probes, the pre and post instructions; for a node
that joins, the waits for the init node and for its turn, and the check of the server's
CA. The token never appears: it is shown as <redacted>.

Without --role, the role comes from the config: cluster-init, or server/agent joining
the config's server, or (role server with neither server nor discovery) cluster-init.
With discovery, the election decides at boot: pass --role, and --server for a join.

\b
Examples:
  rancherd plan
  rancherd plan --role server --server 10.0.0.5
  rancherd plan --role cluster-init --json | jq '.steps[].id'

Hooks for tests and image builds: ${INSTALL_SCRIPT_ENV} replaces the official
install script (a path or a URL); ${SYSTEMCTL_ENV} is the systemctl to run (e.g. a fake).
Under --root DIR every command is found inside DIR (so are those two) or refused: the
plan then ends with where each one would run from.
"""


@click.command("plan", help=_PLAN_HELP, cls=SharedOptionsCommand, shared=("config",))
@click.option(
    "--role",
    type=click.Choice([role.value for role in JoinRole]),
    default=None,
    help="The role decided for this node (default: from the config).",
)
@click.option(
    "--server",
    default=None,
    metavar="HOST|URL",
    callback=_check_server,
    help="The init node to join (default: the config's server).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the plan as JSON.")
@click.option(
    "--root",
    type=click.Path(path_type=Path, file_okay=False),
    default=Path("/"),
    show_default=True,
    help="As bootstrap --root: also show where each command is found inside it.",
)
@pass_invocation
def plan_command(
    invocation: Invocation, role: str | None, server: str | None, as_json: bool, root: Path
) -> None:
    config = invocation.config
    join_role, target = _decide(config, role, server)
    try:
        options = PlanOptions.from_env(root=str(root))
        plan = build_plan(config, join_role, target, options=options)
    except PlanError as exc:
        raise click.ClickException(f"cannot make a plan: {exc}") from None
    if as_json:
        click.echo(json.dumps(plan.to_json_dict(), indent=2))
    else:
        click.echo(plan.to_text(), nl=False)


def _decide(config: Config, role: str | None, server: str | None) -> tuple[JoinRole, str | None]:
    target = server or config.server
    if role is not None:
        join_role = JoinRole(role)
        if join_role is JoinRole.CLUSTER_INIT and server is not None:
            raise click.UsageError(
                "--server is for a join: a cluster-init node creates the cluster and joins "
                "nobody (use --role server or --role agent with --server)"
            )
        return join_role, None if join_role is JoinRole.CLUSTER_INIT else target
    if config.discovery is not None and server is None and config.role is not JoinRole.CLUSTER_INIT:
        raise click.UsageError(
            "with discovery, the election decides this node's role at boot: pass --role "
            "(cluster-init, server or agent) and, to see a join, --server HOST"
        )
    try:
        decision = decide_statically(dataclasses.replace(config, server=target))
    except BootstrapError as exc:
        raise click.UsageError(f"{exc} (or pass --server HOST)") from None
    return decision.role, decision.server_url


_GET_TOKEN_HELP = """Print the token other nodes join this cluster with.

On a server whose runtime has created its CA, the token is printed in k3s's secure
form, K10<sha256 of the cluster CA>::server:<token>: a node joining with it checks that
it talks to this cluster before it sends anything. Before that, the configured token is
printed as is. Without a token in the config, the one k3s/rke2 generated is printed.

It prints a secret: it refuses unless run as root or as the owner of the config file
that sets the token. Exit status 1 when no token can be given.
"""


@click.command("get-token", help=_GET_TOKEN_HELP, cls=SharedOptionsCommand, shared=("config",))
@click.option(
    "--root",
    type=click.Path(path_type=Path, file_okay=False),
    default=Path("/"),
    show_default=True,
    help="Where the runtime's files are (a mounted disk, tests).",
)
@pass_invocation
def get_token_command(invocation: Invocation, root: Path) -> None:
    from rancherd.install.token import GetTokenError, join_token  # x509: only here

    loaded = invocation.loaded
    token_file = loaded.sources.get("token")
    try:
        answer = join_token(loaded.config, token_file=token_file, root=root)
    except GetTokenError as exc:
        raise click.ClickException(str(exc)) from None
    for warning in answer.warnings:
        click.echo(f"warning: {warning}", err=True)
    click.echo(answer.token)


COMMANDS: dict[str, click.Command] = {"plan": plan_command, "get-token": get_token_command}
"""The commands ``rancherd.cli`` lists, by name."""
