"""The context object of the ``rancherd`` commands and the options that build it.

In the manner of click's ``examples/repo``: the group builds one ``Invocation`` from the
options the commands share, and each command receives it (``@pass_invocation``) instead of
the raw options. It loads the config on first use and resolves the data dir one way
(``--data-dir``, else the config's ``dataDir``). The shared options are declared once,
here, with their environment variables read by click (``envvar=``); the group takes them
(``rancherd --config F discover``) and so does each command that uses them
(``rancherd discover --config F``, the form of the unit file and the docs), through
``SharedOptionsCommand``. A command's own option wins over the group's, which wins over
the environment.

``rancherd.cli`` (the group) and ``rancherd.install.command`` (``plan``, ``get-token``)
both import this module; it imports neither.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
from click.core import ParameterSource

from rancherd.config import DEFAULT_CONFIG_PATH, IMPLICIT_PATHS, ConfigError, LoadedConfig

if TYPE_CHECKING:
    from rancherd.config import Config
    from rancherd.state import DataDir

__all__ = [
    "CONFIG_ENV",
    "DATA_DIR_ENV",
    "IMPLICIT_PATHS_ENV",
    "InvalidConfig",
    "Invocation",
    "SharedOptionsCommand",
    "UnusableToken",
    "group_options",
    "pass_invocation",
]

CONFIG_ENV = "RANCHERD_CONFIG"
DATA_DIR_ENV = "RANCHERD_DATA_DIR"
IMPLICIT_PATHS_ENV = "RANCHERD_IMPLICIT_PATHS"
"""Colon-separated paths that replace the implicit config paths (tests, debugging); set
but empty: none."""


class InvalidConfig(click.ClickException):
    """Bad config: every issue on its own line on stderr, exit status 2."""

    exit_code = 2

    def __init__(self, error: ConfigError) -> None:
        super().__init__(str(error))
        self.issues = [str(issue) for issue in error.issues]
        first = error.issues[0] if error.issues else None
        # No file at all: one problem, then the list of places looked in (not problems).
        self.nothing_found = (
            first is not None and first.file is None and first.message.endswith("looked in:")
        )

    def show(self, file: object = None) -> None:
        if self.nothing_found:
            click.echo(f"Error: {self.issues[0]}", err=True)
            for place in self.issues[1:]:
                click.echo(f"  {place}", err=True)
            return
        count = len(self.issues)
        click.echo(f"Error: invalid config ({count} problem{'s' * (count != 1)}):", err=True)
        for issue in self.issues:
            click.echo(issue, err=True)


class UnusableToken(click.ClickException):
    """A token no key can be derived from and no terminal can print: exit status 2, as
    for a bad config (systemd does not restart on it)."""

    exit_code = 2


def _check_token(loaded: LoadedConfig) -> None:
    token = loaded.config.token
    if token is None:
        return
    try:
        token.reveal().encode("utf-8")
    except UnicodeEncodeError as exc:
        where = loaded.sources.get("token")
        raise UnusableToken(
            f"{where or 'the config'}: token: not valid text: character {exc.start + 1} is a "
            "lone surrogate (an escape such as \\ud800); write the token as plain UTF-8"
        ) from None


class Invocation:
    """What one run of ``rancherd`` works on: the config and the data dir, each made once,
    when a command first asks for it."""

    def __init__(self) -> None:
        self.config_path: Path | None = None
        """``--config``: the explicit config file (None: the default, which may be missing)."""
        self.data_dir_path: Path | None = None
        """``--data-dir``: overrides the config's ``dataDir``."""
        self.implicit_paths: Sequence[Path] = IMPLICIT_PATHS
        self._loaded: LoadedConfig | None = None
        self._data_dir: DataDir | None = None

    @property
    def loaded(self) -> LoadedConfig:
        """The config with where each key came from; a bad config ends the command (exit
        status 2, every problem on stderr)."""
        if self._loaded is None:
            from rancherd.config import load_config

            try:
                loaded = load_config(self.config_path, implicit_paths=self.implicit_paths)
            except ConfigError as exc:
                raise InvalidConfig(exc) from None
            _check_token(loaded)
            self._loaded = loaded
        return self._loaded

    @property
    def config(self) -> Config:
        return self.loaded.config

    @property
    def data_dir(self) -> DataDir:
        """``--data-dir``, else the config's (the config is loaded only in that case)."""
        if self._data_dir is None:
            from rancherd.state import DataDir

            path = self.data_dir_path if self.data_dir_path is not None else self.config.data_dir
            self._data_dir = DataDir(path)
        return self._data_dir


pass_invocation = click.make_pass_decorator(Invocation, ensure=True)


# --- The shared options ----------------------------------------------------------------------


def _remember(attribute: str, convert: Callable[[Any], object] = lambda v: v) -> Any:
    """A callback storing an option's value on the context object (and not passing it to
    the command): the command's own value wins over the group's, the group's over the
    environment's."""

    def store(ctx: click.Context, param: click.Parameter, value: object) -> None:
        if value is None:
            return
        invocation = ctx.ensure_object(Invocation)
        source = ctx.get_parameter_source(param.name or "")
        known = getattr(invocation, attribute)
        if source is ParameterSource.ENVIRONMENT and known not in (None, IMPLICIT_PATHS):
            return
        setattr(invocation, attribute, convert(value))

    return store


class _EmptyEnvCounts(click.Option):
    """An option whose environment variable counts when set but empty (click skips empty
    values): ``RANCHERD_IMPLICIT_PATHS=`` means "no implicit paths"."""

    def resolve_envvar_value(self, ctx: click.Context) -> str | None:
        value = super().resolve_envvar_value(ctx)
        if value is None and isinstance(self.envvar, str) and os.environ.get(self.envvar) == "":
            return ""
        return value


def _config_option() -> click.Option:
    return click.Option(
        ["--config", "config_path"],
        type=click.Path(path_type=Path),
        envvar=CONFIG_ENV,
        expose_value=False,
        callback=_remember("config_path"),
        help=f"The explicit config file; it must exist. [env: {CONFIG_ENV}; "
        f"default: {DEFAULT_CONFIG_PATH}]",
    )


def _data_dir_option() -> click.Option:
    return click.Option(
        ["--data-dir", "data_dir_path"],
        type=click.Path(path_type=Path, file_okay=False),
        envvar=DATA_DIR_ENV,
        expose_value=False,
        callback=_remember("data_dir_path"),
        help=f"The node's data dir. [env: {DATA_DIR_ENV}; default: dataDir from the config, "
        "/var/lib/rancher/rancherd]",
    )


def _implicit_paths_option() -> click.Option:
    return _EmptyEnvCounts(
        ["--implicit-paths", "implicit_paths"],
        envvar=IMPLICIT_PATHS_ENV,
        expose_value=False,
        hidden=True,
        callback=_remember(
            "implicit_paths", lambda text: [Path(part) for part in text.split(":") if part]
        ),
    )


_SHARED: dict[str, Callable[[], click.Option]] = {
    "config": _config_option,
    "data_dir": _data_dir_option,
}


def group_options() -> list[click.Option]:
    """The options of the ``rancherd`` group itself."""
    return [_config_option(), _data_dir_option(), _implicit_paths_option()]


class SharedOptionsCommand(click.Command):
    """A command that takes the shared options named in ``shared`` (default: both) after
    its name, before its own."""

    def __init__(
        self, *args: Any, shared: Sequence[str] = ("config", "data_dir"), **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        self.params[:0] = [_SHARED[name]() for name in shared]
