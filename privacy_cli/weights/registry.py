"""``weights.toml`` reader: one :class:`WeightsEntry` per published checkpoint.

Facts about weights are data, kept apart from architecture code (as timm's ``PretrainedCfg``):
where a file lives (Hugging Face Hub ``repo_id``/``filename``/``revision``, a plain ``url``, or a
``manual_url`` for files that can only be imported by hand), how to check it (``sha256``,
``sha256_prefix``, ``size``), how it is stored (``format``, ``container``, ``key_prefix``), its
licence, and which architecture of :mod:`privacy_cli.models` it loads into.

The registry file is looked up in this order: ``$PRIVPIX_WEIGHTS_TOML``, a copy packaged next to
this module (``privacy_cli/weights/weights.toml``), then the repository root (``weights.toml``).
This module imports no torch.
"""

from __future__ import annotations

import os
import re
import sys
from dataclasses import dataclass, fields
from pathlib import Path, PurePosixPath
from typing import Any

from ..errors import UsageError, WeightsError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

ENV_WEIGHTS_TOML = "PRIVPIX_WEIGHTS_TOML"

#: checkpoint container formats privpix can load without unpickling arbitrary objects
FORMATS = ("state_dict", "lightning-ckpt", "torchscript", "safetensors", "onnx")

_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]*$")
_HEX_RE = re.compile(r"^[0-9a-f]*$")
_COMMIT_RE = re.compile(r"^[0-9a-f]{40}$")


@dataclass(frozen=True)
class WeightsEntry:
    """One checkpoint of ``weights.toml`` (all sizes in bytes, digests lower-case hex)."""

    name: str
    filename: str
    format: str
    #: Hugging Face Hub model repository (``owner/name``); empty for url/manual entries
    repo_id: str = ""
    #: Hub revision (branch, tag or 40-hex commit); "main" where the commit is not known yet
    revision: str = "main"
    #: oldest acceptable Hub commit (hex prefix) when ``revision`` is a branch: earlier commits hold other
    #: bytes (e.g. an LFS pointer); the commit a fetch resolved is recorded beside the file
    min_revision: str = ""
    #: plain https/http source used when there is no Hub repository
    url: str = ""
    #: page where the file can be obtained by hand (entries that are import-only)
    manual_url: str = ""
    #: full sha256 of the file; "" until pinned
    sha256: str = ""
    #: leading hex digits of the sha256 (e.g. from a torch-hub style file name); checked when no full pin
    sha256_prefix: str = ""
    #: exact file size in bytes; 0 when unknown
    size: int = 0
    #: human size when the exact byte count is unknown ("112 MB")
    size_approx: str = ""
    #: key in a dict checkpoint that holds the state_dict ("state_dict" for Lightning)
    container: str = ""
    #: prefix of the wanted keys inside the state_dict (stripped; other keys dropped)
    key_prefix: str = ""
    licence: str = ""
    licence_url: str = ""
    #: True when the licence restricts use (non-commercial, research-only): shown and accepted before download
    restricted: bool = False
    #: name in the model registry this checkpoint loads into; "" = the model whose ``weights`` is this entry
    arch: str = ""
    #: privpix commands / features that use the checkpoint
    used_by: tuple[str, ...] = ()
    #: other entries holding the same network in another published form, in preference order
    alternatives: tuple[str, ...] = ()
    paper: str = ""
    source: str = ""
    notes: str = ""

    @property
    def revision_pinned(self) -> bool:
        """True when a Hub entry names a full 40-hex commit (not a branch or tag)."""
        return bool(_COMMIT_RE.match(self.revision or ""))

    @property
    def pin_text(self) -> str:
        """How well the entry is pinned, for people: revision and digest."""
        if self.source_kind == "hub":
            rev = (
                f"revision {self.revision[:12]}"
                if self.revision_pinned
                else f"revision {self.revision} (branch)"
            )
            if self.min_revision and not self.revision_pinned:
                rev += f", at or after {self.min_revision}"
        else:
            rev = "no revision (not a Hub file)"
        if self.sha256:
            digest = "sha256 pinned"
        elif self.sha256_prefix:
            digest = f"sha256 prefix {self.sha256_prefix} only"
        else:
            digest = "sha256 not pinned"
        return f"{rev}; {digest}"

    @property
    def source_kind(self) -> str:
        """``"hub"``, ``"url"`` or ``"manual"`` (import-only)."""
        if self.repo_id:
            return "hub"
        if self.url:
            return "url"
        return "manual"

    @property
    def origin(self) -> str:
        """Where the file comes from, as one string (``hf://owner/repo/file@rev``, a url, or the manual page)."""
        if self.repo_id:
            return f"hf://{self.repo_id}/{self.filename}@{self.revision or 'main'}"
        return self.url or self.manual_url

    @property
    def local_filename(self) -> str:
        """File name used in the weights directory: the entry name plus the source file's extension."""
        return self.name + PurePosixPath(self.filename).suffix

    @property
    def size_text(self) -> str:
        """Size for people: exact bytes rendered in MB when known, else the approximate text, else "?"."""
        if self.size:
            return human_size(self.size)
        return self.size_approx or "size unknown"


def human_size(n: int) -> str:
    """``206134115`` -> ``"206.1 MB"`` (decimal units, as the Hub shows them)."""
    value = float(n)
    for unit in ("B", "kB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{n} B"  # pragma: no cover


def _candidate_paths() -> list[Path]:
    env = os.environ.get(ENV_WEIGHTS_TOML)
    if env:
        return [Path(env).expanduser()]
    here = Path(__file__).resolve().parent
    return [here / "weights.toml", here.parents[1] / "weights.toml"]


def registry_path() -> Path:
    """The ``weights.toml`` in use (see the module docstring for the search order)."""
    candidates = _candidate_paths()
    for p in candidates:
        if p.is_file():
            return p
    raise WeightsError(f"weights registry not found (looked at {', '.join(str(p) for p in candidates)})")


_FIELD_TYPES = {f.name: f.type for f in fields(WeightsEntry)}
_CACHE: dict[tuple[str, int], dict[str, WeightsEntry]] = {}


def _entry_from_table(name: str, table: dict[str, Any], path: Path) -> WeightsEntry:
    where = f"{path}: [weights.{name}]"
    if not _NAME_RE.match(name):
        raise WeightsError(f"{where}: bad entry name (lower-case letters, digits, '.', '-', '_')")
    unknown = sorted(set(table) - set(_FIELD_TYPES) - {"name"})
    if unknown:
        raise WeightsError(f"{where}: unknown field(s) {', '.join(unknown)}")
    kw: dict[str, Any] = {"name": name}
    for key, value in table.items():
        if key == "name":
            if value != name:
                raise WeightsError(f"{where}: name = {value!r} differs from the table name")
            continue
        if key in ("used_by", "alternatives"):
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise WeightsError(f"{where}: {key} must be a list of strings")
            kw[key] = tuple(value)
        elif key == "size":
            if not isinstance(value, int) or value < 0:
                raise WeightsError(f"{where}: size must be a byte count (integer >= 0)")
            kw[key] = value
        elif key == "restricted":
            if not isinstance(value, bool):
                raise WeightsError(f"{where}: restricted must be true or false")
            kw[key] = value
        else:
            if not isinstance(value, str):
                raise WeightsError(f"{where}: {key} must be a string")
            kw[key] = value.strip()
    for required in ("filename", "format"):
        if not kw.get(required):
            raise WeightsError(f"{where}: missing {required}")
    entry = WeightsEntry(**kw)
    if entry.format not in FORMATS:
        raise WeightsError(f"{where}: format {entry.format!r} is not one of {', '.join(FORMATS)}")
    sources = [s for s in (entry.repo_id, entry.url, entry.manual_url) if s]
    if len(sources) != 1:
        raise WeightsError(f"{where}: give exactly one of repo_id, url, manual_url")
    if entry.url and not entry.url.startswith(("https://", "http://")):
        raise WeightsError(f"{where}: url must start with https:// or http://")
    if entry.min_revision and (not entry.repo_id or not re.match(r"^[0-9a-f]{7,40}$", entry.min_revision)):
        raise WeightsError(f"{where}: min_revision must be a 7-40 hex commit prefix of a Hub entry")
    if entry.repo_id and re.match(r"^[0-9a-f]{8,}$", entry.revision) and not entry.revision_pinned:
        raise WeightsError(f"{where}: revision looks like a commit but is not 40 hex digits")
    for key in ("sha256", "sha256_prefix"):
        value = getattr(entry, key)
        if not _HEX_RE.match(value):
            raise WeightsError(f"{where}: {key} must be lower-case hex")
    if entry.sha256 and len(entry.sha256) != 64:
        raise WeightsError(f"{where}: sha256 must have 64 hex digits (or be empty)")
    if entry.sha256 and entry.sha256_prefix and not entry.sha256.startswith(entry.sha256_prefix):
        raise WeightsError(f"{where}: sha256 does not start with sha256_prefix")
    return entry


def load_registry(path: str | Path | None = None) -> dict[str, WeightsEntry]:
    """Parse ``weights.toml`` into ``{name: WeightsEntry}`` (cached per file path and mtime)."""
    p = Path(path) if path is not None else registry_path()
    try:
        stamp = p.stat().st_mtime_ns
    except OSError as e:
        raise WeightsError(f"weights registry {p} unreadable: {e.strerror or e}") from None
    key = (str(p), stamp)
    if key in _CACHE:
        return _CACHE[key]
    try:
        data = tomllib.loads(p.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
        raise WeightsError(f"weights registry {p} is not valid TOML: {e}") from None
    tables = data.get("weights")
    if not isinstance(tables, dict):
        raise WeightsError(f"weights registry {p} has no [weights.<name>] tables")
    entries: dict[str, WeightsEntry] = {}
    for name, table in tables.items():
        if not isinstance(table, dict):
            raise WeightsError(f"{p}: weights.{name} must be a table")
        entries[name] = _entry_from_table(name, table, p)
    for entry in entries.values():
        for alt in entry.alternatives:
            if alt not in entries or alt == entry.name:
                raise WeightsError(f"{p}: [weights.{entry.name}] alternative {alt!r} is not another entry")
    _CACHE.clear()
    _CACHE[key] = entries
    return entries


def list_weights() -> list[WeightsEntry]:
    """All entries of the registry, in file order."""
    return list(load_registry().values())


def get_weights(name: str) -> WeightsEntry:
    """The entry called ``name``; a :class:`UsageError` listing the known names otherwise."""
    entries = load_registry()
    try:
        return entries[name]
    except KeyError:
        raise UsageError(f"unknown weights {name!r}; known: {', '.join(entries)}") from None


def primary_of(name: str) -> str:
    """The entry that lists ``name`` among its alternatives, or ``name`` itself."""
    for entry in load_registry().values():
        if name in entry.alternatives:
            return entry.name
    return name


__all__ = [
    "ENV_WEIGHTS_TOML",
    "FORMATS",
    "WeightsEntry",
    "get_weights",
    "human_size",
    "list_weights",
    "load_registry",
    "primary_of",
    "registry_path",
]
