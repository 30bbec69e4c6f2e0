"""Reading the config files: the implicit paths, the explicit file, drop-ins, merging.

Follows the original rancherd (``pkg/config``): each file's ``<file>.d/*.yaml`` drop-ins
right after it; a file's ``rancherd:`` key if it has one; maps merge recursively, later
scalars win, lists concatenate. Bounded whatever the disk holds: each directory is listed
once and each file read once (by real path), drop-ins of an entry that cannot be read are
not followed, and at most ``MAX_FILES`` entries are looked at, so a symlink loop
(``a.yaml.d -> .``) ends with an error instead of running forever.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path

from yaml.nodes import MappingNode, Node, ScalarNode

from rancherd.config.model import MAX_FILE_SIZE
from rancherd.config.yamlvalues import Converter, Issues, Map, Value, compose_yaml, merge

__all__ = ["MAX_FILES", "Loader", "Looked"]

MAX_FILES = 1024
"""Files and directories looked at in one load; a real config has a handful."""

_YAML_SUFFIXES = (".yaml", ".yml")
_NULL_TAG = "tag:yaml.org,2002:null"


@dataclass(slots=True)
class Looked:
    """One place searched, and what it gave: for "no config found" and for ``files``."""

    path: Path
    note: str
    contributed: bool = False


class _TooMany(Exception):
    pass


@dataclass(slots=True)
class Loader:
    cloud_config_paths: Collection[Path]
    root_keys: Collection[str] | None = None
    """The schema's top-level keys (see ``Converter.root_keys``)."""
    issues: Issues = field(default_factory=Issues)
    merged: Value | None = None
    looked: list[Looked] = field(default_factory=list)
    seen: set[str] = field(default_factory=set)
    """Real paths of the files read: a file reached twice (symlinks) is read once."""
    listed: set[str] = field(default_factory=set)
    """Real paths of the directories listed: each is listed once."""
    read_order: list[str] = field(default_factory=list)
    file_issue_count: int = 0
    visits: int = 0

    def add_file(self, path: Path, *, required: bool, directory_ok: bool = False) -> None:
        """Read a file and then its drop-ins; an implicit path may be a directory."""
        try:
            self.visit(path, required=required, directory_ok=directory_ok)
        except _TooMany:
            if self.visits == MAX_FILES + 1:
                self.file_issue(
                    str(path), None, f"more than {MAX_FILES} config files and drop-ins; refused"
                )
                self.visits += 1

    def visit(self, path: Path, *, required: bool, directory_ok: bool = False) -> None:
        self.visits += 1
        if self.visits > MAX_FILES:
            raise _TooMany
        info, missing = self.stat(path, required=required)
        if info is None:
            if missing and not required:  # as the original: FILE.d counts even without FILE
                self.add_drop_ins(path)
            return
        if directory_ok and stat.S_ISDIR(info.st_mode):
            names = self.list_yaml(path)
            if names == []:
                self.looked.append(Looked(path, "a directory without *.yaml or *.yml files"))
            for name in names or []:
                self.visit(path / name, required=False)
            return
        display = str(path)
        if stat.S_ISDIR(info.st_mode):
            self.file_issue(display, None, "is a directory; expected a YAML file")
            return
        if not stat.S_ISREG(info.st_mode):
            self.file_issue(display, None, "is not a regular file")
            return
        real = os.path.realpath(path)
        if real in self.seen:  # the same file twice (symlinks): its lists would double
            self.looked.append(Looked(path, f"already read as {real}"))
            return
        self.seen.add(real)
        self.read_order.append(display)
        text = self.read(path, display)
        if text is not None:
            self.merge_text(path, display, text)
        self.add_drop_ins(path)

    def add_drop_ins(self, path: Path) -> None:
        directory = Path(f"{path}.d")
        info, _ = self.stat(directory, quiet=True)
        if info is None or not stat.S_ISDIR(info.st_mode):
            return
        for name in self.list_yaml(directory) or []:
            self.visit(directory / name, required=False)

    def stat(
        self, path: Path, *, required: bool = False, quiet: bool = False
    ) -> tuple[os.stat_result | None, bool]:
        """``(os.stat, False)``; ``(None, True)`` when missing (an issue if ``required``),
        ``(None, False)`` when it cannot be read (an issue)."""
        try:
            return path.stat(), False
        except (FileNotFoundError, NotADirectoryError):
            if required:
                self.file_issue(str(path), None, "does not exist")
            elif not quiet:
                self.looked.append(Looked(path, "not found"))
            return None, True
        except OSError as exc:  # ELOOP for a symlink to itself, EACCES...
            self.file_issue(str(path), None, f"cannot read: {exc.strerror or exc}")
        except ValueError:  # a NUL byte in the path
            self.file_issue(repr(str(path)), None, "is not a valid path")
        return None, False

    def list_yaml(self, directory: Path) -> list[str] | None:
        """YAML files of a directory in name order; hidden ones (editor leftovers) skipped.

        A directory already listed (reached again through a symlink) gives None."""
        real = os.path.realpath(directory)
        if real in self.listed:
            self.looked.append(Looked(directory, f"already listed as {real}"))
            return None
        self.listed.add(real)
        try:
            with os.scandir(directory) as entries:
                names = []
                for entry in entries:
                    if entry.name.startswith(".") or not entry.name.lower().endswith(
                        _YAML_SUFFIXES
                    ):
                        continue
                    try:
                        is_dir = entry.is_dir()
                    except OSError:
                        is_dir = False
                    if not is_dir:
                        names.append(entry.name)
        except OSError as exc:
            self.file_issue(str(directory), None, f"cannot list: {exc.strerror or exc}")
            return None
        return sorted(names)

    def read(self, path: Path, display: str) -> str | None:
        try:
            with path.open("rb") as stream:
                data = stream.read(MAX_FILE_SIZE + 1)
        except OSError as exc:
            self.file_issue(display, None, f"cannot read: {exc.strerror or exc}")
            return None
        if len(data) > MAX_FILE_SIZE:
            self.file_issue(display, None, f"larger than {MAX_FILE_SIZE // 2**20} MiB; refused")
            return None
        try:
            return data.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            line = data.count(b"\n", 0, exc.start) + 1
            self.file_issue(
                display, line, f"not valid UTF-8 (byte 0x{data[exc.start]:02x}); save it as UTF-8"
            )
            return None

    def file_issue(self, display: str, line: int | None, message: str) -> None:
        self.file_issue_count += 1
        self.issues.add_file(display, line, message)

    def merge_text(self, path: Path, display: str, text: str) -> None:
        cloud_config = path in self.cloud_config_paths or text.startswith("#cloud-config")
        before = len(self.issues)
        composed = compose_yaml(text, display, self.issues)
        if composed is None:
            self.file_issue_count += len(self.issues) - before
            return
        node = self.ours(path, display, composed.root, cloud_config)
        if node is None:
            return
        converter = Converter(display, self.issues, composed.explicit, self.root_keys)
        before = len(self.issues)
        value = converter.convert(node, "")
        # Problems in the YAML itself (duplicate keys, tags) make a file unusable.
        self.file_issue_count += len(self.issues) - before
        if isinstance(value, Map):
            note = "read" if value.entries else "empty"
            self.looked.append(Looked(path, note, contributed=bool(value.entries)))
            if value.entries:
                self.merged = merge(self.merged, value)

    def ours(self, path: Path, display: str, root: Node | None, cloud_config: bool) -> Node | None:
        """The part of a file that is rancherd's: its ``rancherd:`` key, or all of it."""
        if root is None:
            self.looked.append(Looked(path, "empty"))
            return None
        if not isinstance(root, MappingNode):
            self.file_issue(display, root.start_mark.line + 1, "expected a map of key: value")
            return None
        rancherd = [v for k, v in root.value if isinstance(k, ScalarNode) and k.value == "rancherd"]
        if len(rancherd) > 1:
            self.file_issue(display, rancherd[1].start_mark.line + 1, "duplicate key rancherd")
            return None
        if rancherd:
            node: Node = rancherd[0]
            if isinstance(node, ScalarNode) and node.tag == _NULL_TAG:
                self.looked.append(Looked(path, "an empty rancherd: key"))
                return None
            if not isinstance(node, MappingNode):
                self.file_issue(display, node.start_mark.line + 1, "rancherd: expected a map")
                return None
            return node
        if cloud_config:
            self.looked.append(Looked(path, "a cloud-config without a rancherd: key"))
            return None
        return root
