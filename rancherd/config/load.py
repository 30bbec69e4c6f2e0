"""``load_config``: the loader, the checks and the result, with where each key came from."""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

import yaml

from rancherd.config.check import Checker
from rancherd.config.dump import config_to_dict
from rancherd.config.loader import Loader, Looked
from rancherd.config.model import (
    CLOUD_CONFIG_PATHS,
    DEFAULT_CONFIG_PATH,
    IMPLICIT_PATHS,
    Config,
    ConfigError,
    ConfigIssue,
    yaml_keys,
)
from rancherd.config.yamlvalues import Map

__all__ = ["LoadedConfig", "load_config"]


@dataclass(frozen=True, slots=True)
class LoadedConfig:
    """The config, and where each of its top-level keys came from."""

    config: Config
    sources: Mapping[str, Path]
    """Top-level YAML key (``role``, ``discovery``...) to the file that set it last."""
    files: tuple[Path, ...]
    """Files that contributed, in merge order."""

    def source_of(self, key: str) -> str:
        """The file that set a top-level key last, or ``default``."""
        if key == "resources" and key not in self.sources:
            key = "bootstrapResources"
        path = self.sources.get(key)
        return "default" if path is None else str(path)

    def to_json_dict(self) -> dict[str, Any]:
        """``{"config": ..., "sources": {key: file or "default"}, "files": [...]}``, redacted."""
        config = config_to_dict(self.config)
        return {
            "config": config,
            "sources": {key: self.source_of(key) for key in config},
            "files": [str(path) for path in self.files],
        }

    def to_text(self) -> str:
        """The effective config as commented YAML: each top-level key says its source."""
        lines = ["# rancherd: the effective config, merged from (in order):"]
        lines += [f"#   {path}" for path in self.files]
        lines.append("# Each top-level key says the file that set it last; the token is hidden.")
        blocks = []
        for key, value in config_to_dict(self.config).items():
            text = yaml.safe_dump(
                {key: value},
                sort_keys=False,
                default_flow_style=False,
                allow_unicode=True,
                width=2**16,
            )
            blocks.append((text.rstrip("\n").split("\n"), self.source_of(key)))
        column = min(48, max(len(block[0]) for block, _ in blocks) + 2)
        for block, source in blocks:
            comment = f"# {source}" if source == "default" else f"# from {source}"
            lines.append(f"{block[0].ljust(column)}{comment}")
            lines.extend(block[1:])
        return "\n".join(lines) + "\n"


def load_config(
    explicit: Path | None = None,
    *,
    implicit_paths: Sequence[Path] = IMPLICIT_PATHS,
    default_path: Path | None = DEFAULT_CONFIG_PATH,
    cloud_config_paths: Collection[Path] = CLOUD_CONFIG_PATHS,
) -> LoadedConfig:
    """Read, merge and check the config; raise ``ConfigError`` listing every problem.

    ``implicit_paths`` are read first, in order (a directory adds its ``*.yaml`` and
    ``*.yml`` files in name order; missing ones are skipped), then ``explicit``, which
    must exist, or when it is None ``default_path``, which may be missing. Files in
    ``cloud_config_paths``, and files whose first line is ``#cloud-config``, contribute
    only their ``rancherd:`` key.
    """
    try:
        return _load(explicit, implicit_paths, default_path, cloud_config_paths)
    except ConfigError:
        raise
    except Exception as exc:  # a bug must not become a traceback at boot
        issue = ConfigIssue(
            None, None, "", f"internal error while reading the config ({type(exc).__name__})"
        )
        raise ConfigError([issue]) from None


def _load(
    explicit: Path | None,
    implicit_paths: Sequence[Path],
    default_path: Path | None,
    cloud_config_paths: Collection[Path],
) -> LoadedConfig:
    loader = Loader({Path(p) for p in cloud_config_paths}, frozenset(yaml_keys(Config)))
    for path in implicit_paths:
        loader.add_file(Path(path), required=False, directory_ok=True)
    if explicit is not None:
        loader.add_file(Path(explicit), required=True)
    elif default_path is not None:
        loader.add_file(Path(default_path), required=False)
    merged = loader.merged
    if not isinstance(merged, Map) or not merged.entries:
        if not len(loader.issues):
            raise ConfigError(_nothing_found(loader.looked))
        raise ConfigError(_in_file_order(loader.issues.items, loader.read_order))
    checker = Checker(loader.issues)
    config = checker.config(merged, complete=loader.file_issue_count == 0)
    if config is None or len(loader.issues):
        raise ConfigError(_in_file_order(loader.issues.items, loader.read_order))
    sources = {key: Path(entry.key_origin.file) for key, entry in merged.entries.items()}
    files = tuple(looked.path for looked in loader.looked if looked.contributed)
    return LoadedConfig(config, MappingProxyType(sources), files)


def _nothing_found(looked: Sequence[Looked]) -> list[ConfigIssue]:
    issues = [
        ConfigIssue(
            None,
            None,
            "",
            f"no rancherd config found: write {DEFAULT_CONFIG_PATH}, or a rancherd: key in "
            "the cloud-config; looked in:",
        )
    ]
    issues.extend(ConfigIssue(str(item.path), None, "", item.note) for item in looked)
    return issues


def _in_file_order(issues: list[ConfigIssue], read_order: Sequence[str]) -> list[ConfigIssue]:
    """Issues by file in the order the files were read, then by line (stable)."""
    order = {file: index for index, file in enumerate(read_order)}
    return sorted(issues, key=lambda i: (order.get(i.file or "", -1), i.line or 0))
