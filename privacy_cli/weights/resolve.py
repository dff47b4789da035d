"""Resolve a weights entry to a local file and verify it.

Order (first hit wins):

1. the weights directory (``--weights-dir`` / ``$PRIVPIX_WEIGHTS_DIR`` / ``~/.cache/privpix/weights``),
   file ``<name><ext>`` (e.g. ``big-lama.pt``; ``privpix weights import`` writes there);
2. the Hugging Face cache (its on-disk layout, read without huggingface_hub; ``$HF_HUB_CACHE``,
   ``$HF_HOME/hub`` or ``~/.cache/huggingface/hub``);
3. a download (Hub or plain url) unless ``--offline`` or ``HF_HUB_OFFLINE=1``, and only when the
   host answers (one quick connection, no retries); licences that restrict use must be accepted first.

A failed resolution is remembered for the process: later images needing the same file fail at once
with the same message (no second download attempt in one run).

Every file is checked before first use: size, then sha256 against the pinned digest (or the
pinned prefix). Digests are remembered in ``<weights dir>/verified-digests.json`` keyed by path,
size and mtime, so a file is hashed once, and an unpinned file is compared with the digest recorded
when it was first downloaded or imported. A mismatch is a :class:`WeightsError` naming both
digests; no file of the user's is deleted. Downloads of unpinned files print their digest so it can
be pinned in ``weights.toml``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ..errors import WeightsError
from .registry import WeightsEntry, get_weights

log = logging.getLogger("privacy_cli.weights")

ENV_WEIGHTS_DIR = "PRIVPIX_WEIGHTS_DIR"
DIGESTS_FILE = "verified-digests.json"
_TRUTHY = {"1", "true", "yes", "on"}

Notify = Callable[[str], None]
Confirm = Callable[[WeightsEntry], bool]

# Process-wide defaults set by the CLI's global options (see `configure`).
_SETTINGS: dict[str, Any] = {"weights_dir": None, "offline": None}


def configure(weights_dir: str | Path | None = None, offline: bool | None = None) -> None:
    """Set process-wide defaults for resolution (the CLI's ``--weights-dir`` / ``--offline``).

    ``None`` leaves a setting to the environment (``PRIVPIX_WEIGHTS_DIR``, ``HF_HUB_OFFLINE``).
    """
    _SETTINGS["weights_dir"] = Path(weights_dir).expanduser() if weights_dir is not None else None
    _SETTINGS["offline"] = offline


def get_weights_dir(override: str | Path | None = None) -> Path:
    """The weights directory: ``override`` > :func:`configure` > ``$PRIVPIX_WEIGHTS_DIR`` > ``~/.cache/privpix/weights``."""
    if override is not None:
        return Path(override).expanduser()
    if _SETTINGS["weights_dir"] is not None:
        return _SETTINGS["weights_dir"]
    env = os.environ.get(ENV_WEIGHTS_DIR)
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "privpix" / "weights"


def hf_cache_dir() -> Path:
    """The Hugging Face Hub cache, read from the environment at call time (``HF_HUB_CACHE``, ``HF_HOME``)."""
    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if os.environ.get(var):
            return Path(os.environ[var]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "huggingface" / "hub"


def offline_mode(offline: bool | None = None) -> bool:
    """True when downloads are off: ``offline=True``, :func:`configure`, ``HF_HUB_OFFLINE`` or ``PRIVPIX_OFFLINE``."""
    if offline is not None:
        return bool(offline)
    if _SETTINGS["offline"] is not None:
        return bool(_SETTINGS["offline"])
    return any(
        os.environ.get(v, "").strip().lower() in _TRUTHY for v in ("HF_HUB_OFFLINE", "PRIVPIX_OFFLINE")
    )


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr)


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


# ---------------------------------------------------------------------------------------------
# Digest book: <weights dir>/verified-digests.json


class DigestBook:
    """Digests seen for local weight files, keyed by absolute path (with size and mtime to detect change)."""

    def __init__(self, weights_dir: Path) -> None:
        self.path = Path(weights_dir) / DIGESTS_FILE

    def _read(self) -> dict[str, Any]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as e:
            log.warning("ignoring unreadable digest record %s (%s)", self.path, e)
            return {}
        files = data.get("files") if isinstance(data, dict) else None
        return files if isinstance(files, dict) else {}

    @staticmethod
    def key(path: Path) -> str:
        return str(Path(path).absolute())

    def get(self, path: Path) -> dict[str, Any] | None:
        """The record for ``path`` (possibly stale), or None."""
        rec = self._read().get(self.key(path))
        return rec if isinstance(rec, dict) and isinstance(rec.get("sha256"), str) else None

    @staticmethod
    def is_fresh(path: Path, rec: dict[str, Any] | None) -> bool:
        """True when ``rec`` was taken from the file as it is now (same size and mtime)."""
        if not rec:
            return False
        try:
            st = Path(path).stat()
        except OSError:
            return False
        return rec.get("size") == st.st_size and rec.get("mtime_ns") == st.st_mtime_ns

    def record(self, path: Path, name: str, sha256: str, source: str) -> None:
        """Store the digest of ``path`` (atomic rewrite; a read-only weights dir only logs a warning)."""
        try:
            st = Path(path).stat()
            files = self._read()
            files[self.key(path)] = {
                "name": name,
                "sha256": sha256,
                "size": st.st_size,
                "mtime_ns": st.st_mtime_ns,
                "source": source,
                "recorded": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            }
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
            tmp.write_text(
                json.dumps({"version": 1, "files": files}, indent=1, sort_keys=True), encoding="utf-8"
            )
            os.replace(tmp, self.path)
        except OSError as e:
            log.warning("could not record the digest of %s in %s (%s)", path, self.path, e)


# ---------------------------------------------------------------------------------------------
# Locating local copies


@dataclass(frozen=True)
class Located:
    """A local copy of a weights entry."""

    entry: WeightsEntry
    path: Path
    #: "weights-dir", "hf-cache" or "download"
    where: str


def weights_dir_path(entry: WeightsEntry, weights_dir: str | Path | None = None) -> Path:
    """Where ``entry`` lives in the weights directory: ``<dir>/<name><ext>``."""
    return get_weights_dir(weights_dir) / entry.local_filename


def _hf_cached(entry: WeightsEntry) -> Path | None:
    """The file of ``entry`` in the Hugging Face cache, found by the cache's published layout
    (``models--<owner>--<name>/refs/<revision>`` -> commit, ``snapshots/<commit>/<filename>``),
    without importing huggingface_hub or touching the network (cheap enough to probe freely)."""
    if not entry.repo_id:
        return None
    repo_dir = hf_cache_dir() / ("models--" + entry.repo_id.replace("/", "--"))
    revision = entry.revision or "main"
    commit = revision
    ref = repo_dir / "refs" / revision
    if ref.is_file():
        try:
            commit = ref.read_text().strip()
        except OSError:
            return None
    elif not (len(revision) == 40 and all(c in "0123456789abcdef" for c in revision)):
        return None  # a branch/tag never resolved into this cache
    path = repo_dir / "snapshots" / commit / entry.filename
    if not path.is_file():
        log.debug("%s not in the HF cache (%s)", entry.name, path)
        return None
    return path


def locate_all(entry: WeightsEntry, weights_dir: str | Path | None = None) -> list[Located]:
    """Every local copy of ``entry``, in resolution order (weights dir, then HF cache)."""
    found = []
    p = weights_dir_path(entry, weights_dir)
    if p.is_file():
        found.append(Located(entry, p, "weights-dir"))
    hf = _hf_cached(entry)
    if hf is not None:
        found.append(Located(entry, hf, "hf-cache"))
    return found


def locate(entry: WeightsEntry, weights_dir: str | Path | None = None) -> Located | None:
    """The local copy resolution would use (no download), or None."""
    p = weights_dir_path(entry, weights_dir)
    if p.is_file():
        return Located(entry, p, "weights-dir")
    hf = _hf_cached(entry)
    return Located(entry, hf, "hf-cache") if hf is not None else None


# ---------------------------------------------------------------------------------------------
# Messages


def fetch_hint(entry: WeightsEntry) -> str:
    """The commands that make ``entry`` available."""
    if entry.source_kind == "manual":
        return (
            f"get {entry.filename} from {entry.manual_url}, then run "
            f"`privpix weights import {entry.name} FILE`"
        )
    return f"run `privpix weights fetch {entry.name}`, or `privpix weights import {entry.name} FILE` with a copy of {entry.filename}"


def missing_error(entry: WeightsEntry, reason: str, hint: str | None = None) -> WeightsError:
    """One-line error for weights that are not available locally (``hint``: what to do; default
    :func:`fetch_hint`)."""
    licence = entry.licence or "unknown"
    return WeightsError(
        f"{entry.name} weights are not available locally ({entry.size_text}, licence: {licence}) and "
        f"{reason}: {hint or fetch_hint(entry)}"
    )


def no_network_hint(entry: WeightsEntry) -> str:
    """What to do when no download is possible here (offline, or the host is unreachable)."""
    if entry.source_kind == "manual":
        return fetch_hint(entry)
    host = _origin_host(entry)[0]
    return (
        f"run `privpix weights import {entry.name} FILE` with a copy of {entry.filename}, or run "
        f"`privpix weights fetch {entry.name}` without --offline / HF_HUB_OFFLINE=1 where {host} is reachable "
        "(then copy the weights dir or Hugging Face cache here)"
    )


def offline_error(entry: WeightsEntry) -> WeightsError:
    """Missing while downloads are off."""
    return missing_error(entry, "downloads are off (--offline / HF_HUB_OFFLINE=1)", no_network_hint(entry))


def manual_error(entry: WeightsEntry) -> WeightsError:
    """Missing and not downloadable by privpix."""
    return missing_error(entry, "privpix cannot download them")


def mismatch_error(entry: WeightsEntry, path: Path, expected: str, actual: str, what: str) -> WeightsError:
    """Digest mismatch: names both digests; nothing is deleted."""
    return WeightsError(
        f"{entry.name}: sha256 mismatch for {path}: expected {expected} ({what}), got {actual}; "
        f"nothing was deleted - remove or replace that file, then {fetch_hint(entry)}"
    )


def licence_text(entry: WeightsEntry) -> str:
    """What is shown before downloading a restricted checkpoint."""
    url = f" ({entry.licence_url})" if entry.licence_url else ""
    return f"{entry.name} ({entry.origin}) is released under: {entry.licence}{url}."


def ensure_licence(entry: WeightsEntry, accept_license: bool = False, confirm: Confirm | None = None) -> None:
    """Raise unless a restricted licence was accepted (``accept_license`` or an interactive ``confirm``)."""
    if not entry.restricted or accept_license:
        return
    if confirm is not None and confirm(entry):
        return
    raise WeightsError(
        f"{entry.name} is released under {entry.licence}"
        + (f" ({entry.licence_url})" if entry.licence_url else "")
        + f"; it is downloaded only after you accept those terms: `privpix weights fetch {entry.name} --accept-license`"
    )


# ---------------------------------------------------------------------------------------------
# Digest checks


@dataclass(frozen=True)
class DigestCheck:
    """Outcome of checking one file."""

    name: str
    path: Path
    sha256: str
    #: "verified" (full pin), "prefix-verified", "recorded" (matches the digest recorded earlier), "unpinned"
    status: str
    expected: str = ""
    #: True when the file was hashed for this check (False: taken from a fresh record)
    hashed: bool = False

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["path"] = str(self.path)
        return d


def check_digest(
    entry: WeightsEntry,
    path: str | Path,
    *,
    weights_dir: str | Path | None = None,
    rehash: bool = False,
    source: str = "first-use",
) -> DigestCheck:
    """Check ``path`` against ``entry`` (size, sha256 pin, sha256 prefix, earlier record).

    The file is hashed unless a record with the same size and mtime exists (``rehash=True`` forces
    it). Raises :class:`WeightsError` naming both digests on any mismatch; deletes nothing.
    """
    path = Path(path)
    book = DigestBook(get_weights_dir(weights_dir))
    try:
        size = path.stat().st_size
    except OSError as e:
        raise WeightsError(f"{entry.name}: cannot read {path}: {e.strerror or e}") from None
    if entry.size and size != entry.size:
        raise WeightsError(
            f"{entry.name}: {path} has {size} bytes, expected {entry.size}; nothing was deleted - "
            f"remove or replace that file, then {fetch_hint(entry)}"
        )
    rec = book.get(path)
    if rec is not None and book.is_fresh(path, rec) and not rehash:
        actual, hashed = rec["sha256"], False
    else:
        t0 = time.perf_counter()
        actual, hashed = sha256_file(path), True
        log.info("sha256 of %s (%d bytes) in %.2fs", path, size, time.perf_counter() - t0)
    if entry.sha256:
        if actual != entry.sha256:
            raise mismatch_error(entry, path, entry.sha256, actual, "pinned in weights.toml")
        status, expected = "verified", entry.sha256
    elif entry.sha256_prefix:
        if not actual.startswith(entry.sha256_prefix):
            raise mismatch_error(
                entry, path, entry.sha256_prefix + "...", actual, "prefix pinned in weights.toml"
            )
        status, expected = "prefix-verified", entry.sha256_prefix
    elif rec is not None:
        if rec["sha256"] != actual:
            when = rec.get("recorded", "earlier")
            raise mismatch_error(
                entry, path, rec["sha256"], actual, f"recorded at {rec.get('source', '?')} {when}"
            )
        status, expected = "recorded", rec["sha256"]
    else:
        status, expected = "unpinned", ""
    if hashed:
        book.record(path, entry.name, actual, rec.get("source", source) if rec else source)
    return DigestCheck(entry.name, path, actual, status, expected, hashed)


def local_status(entry: WeightsEntry, weights_dir: str | Path | None = None) -> dict[str, Any]:
    """Cheap status for listings (never hashes): ``missing``, ``cached`` or ``verified``.

    ``verified`` means a digest recorded for the file as it is now matches the pin (or prefix);
    unpinned files with a recorded digest are ``cached`` with ``digest = "recorded"``.
    """
    loc = locate(entry, weights_dir)
    if loc is None:
        return {"status": "missing", "path": None, "where": None, "sha256": None, "digest": None}
    book = DigestBook(get_weights_dir(weights_dir))
    rec = book.get(loc.path)
    fresh = book.is_fresh(loc.path, rec)
    sha = rec["sha256"] if fresh and rec else None
    status, digest = "cached", None
    if sha is not None:
        if entry.sha256 and sha == entry.sha256:
            status, digest = "verified", "pinned"
        elif not entry.sha256 and entry.sha256_prefix and sha.startswith(entry.sha256_prefix):
            status, digest = "verified", "prefix"
        elif not entry.sha256 and not entry.sha256_prefix:
            digest = "recorded"
        else:
            status, digest = "mismatch", "pinned"
    return {"status": status, "path": str(loc.path), "where": loc.where, "sha256": sha, "digest": digest}


# ---------------------------------------------------------------------------------------------
# Downloads


def _hub_download(entry: WeightsEntry, cache_dir: Path) -> Path:
    """Download ``entry`` from the Hub into the HF cache (network)."""
    check_reachable(entry)
    from huggingface_hub import hf_hub_download

    return Path(
        hf_hub_download(
            entry.repo_id, entry.filename, revision=entry.revision or None, cache_dir=str(cache_dir)
        )
    )


def _url_download(entry: WeightsEntry, dest: Path) -> Path:
    """Stream ``entry.url`` to ``dest`` atomically (temp file + rename), checking size and digest first."""
    import urllib.request

    check_reachable(entry)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.part")
    h = hashlib.sha256()
    n = 0
    req = urllib.request.Request(entry.url, headers={"User-Agent": "privpix"})
    try:
        with urllib.request.urlopen(req, timeout=60) as resp, open(tmp, "wb") as f:
            for block in iter(lambda: resp.read(1 << 20), b""):
                f.write(block)
                h.update(block)
                n += len(block)
            f.flush()
            os.fsync(f.fileno())
        actual = h.hexdigest()
        if entry.size and n != entry.size:
            raise WeightsError(
                f"{entry.name}: download from {entry.url} has {n} bytes, expected {entry.size}; discarded"
            )
        if entry.sha256 and actual != entry.sha256:
            raise mismatch_error(
                entry, dest, entry.sha256, actual, "pinned in weights.toml; the download was discarded"
            )
        if not entry.sha256 and entry.sha256_prefix and not actual.startswith(entry.sha256_prefix):
            raise mismatch_error(
                entry, dest, entry.sha256_prefix + "...", actual, "prefix pinned; the download was discarded"
            )
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
    return dest


def _origin_host(entry: WeightsEntry) -> tuple[str, int]:
    """(host, port) a download of ``entry`` connects to (the Hub endpoint or the url's host)."""
    from urllib.parse import urlparse

    url = urlparse(
        entry.url if not entry.repo_id else os.environ.get("HF_ENDPOINT", "https://huggingface.co")
    )
    return url.hostname or "", url.port or (80 if url.scheme == "http" else 443)


def check_reachable(entry: WeightsEntry, timeout: float = 3.0) -> None:
    """One quick TCP connection to the download host; WeightsError at once when it cannot be
    reached (no DNS, no route, refused, timeout), instead of a download library's retries with
    back-off (about 24 s per file)."""
    import socket

    host, port = _origin_host(entry)
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError as e:
        raise missing_error(
            entry,
            f"{host} cannot be reached ({e.strerror or type(e).__name__}); no download was tried",
            no_network_hint(entry),
        ) from None


def download(
    entry: WeightsEntry, weights_dir: str | Path | None = None, notify: Notify | None = None
) -> Located:
    """Download ``entry`` (Hub -> HF cache; url -> weights dir). Network; no licence check here.

    The host is checked first (:func:`check_reachable`): unreachable means one fast error, no retries.
    """
    notify = notify or _stderr
    if entry.source_kind == "manual":
        raise manual_error(entry)
    notify(f"downloading {entry.name} ({entry.size_text}) from {entry.origin}")
    t0 = time.perf_counter()
    try:
        if entry.repo_id:
            path, where = _hub_download(entry, hf_cache_dir()), "hf-cache"
        else:
            path, where = _url_download(entry, weights_dir_path(entry, weights_dir)), "weights-dir"
    except WeightsError:
        raise
    except Exception as e:
        msg = str(e).splitlines()[0][:200] if str(e) else ""
        raise WeightsError(
            f"{entry.name}: download from {entry.origin} failed ({type(e).__name__}: {msg}); "
            f"check the connection, or run `privpix weights import {entry.name} FILE` with a copy you have"
        ) from None
    if entry.repo_id and entry.min_revision:
        check_min_revision(entry, path, weights_dir)
    log.info("downloaded %s to %s in %.1fs", entry.name, path, time.perf_counter() - t0)
    return Located(entry, path, where)


RESOLVED_REVISIONS = "resolved-revisions.json"


def _commit_history(entry: WeightsEntry, commit: str) -> list[str]:
    """Commit ids of ``entry``'s Hub repo reachable from ``commit``, newest first (network)."""
    from huggingface_hub import HfApi

    return [c.commit_id for c in HfApi().list_repo_commits(entry.repo_id, revision=commit)]


def check_min_revision(entry: WeightsEntry, path: Path, weights_dir: str | Path | None = None) -> str:
    """After a Hub download of an entry with ``min_revision``: the commit the branch resolved to (from
    the HF cache path ``snapshots/<commit>/<filename>``) must contain ``min_revision`` in its history
    and the file must not be a Git LFS pointer. Records the commit in ``<weights dir>/resolved-revisions.json``
    and returns it; raises :class:`WeightsError` otherwise (the file is not used)."""
    parts = path.parts
    commit = parts[parts.index("snapshots") + 1] if "snapshots" in parts else ""
    with open(path, "rb") as f:
        head = f.read(64)
    if head.startswith(b"version https://git-lfs"):
        raise WeightsError(
            f"{entry.name}: {entry.origin} resolved to commit {commit[:12] or '?'}, which holds a Git LFS "
            f"pointer, not the weights (the weights are at or after commit {entry.min_revision})"
        )
    history = _commit_history(entry, commit) if commit else []
    if not any(c.startswith(entry.min_revision) for c in history):
        raise WeightsError(
            f"{entry.name}: {entry.origin} resolved to commit {commit[:12] or '?'}, which is older than "
            f"{entry.min_revision} (earlier revisions hold other bytes); not used"
        )
    record = get_weights_dir(weights_dir) / RESOLVED_REVISIONS
    record.parent.mkdir(parents=True, exist_ok=True)
    try:
        data = json.loads(record.read_text())
    except (OSError, ValueError):
        data = {}
    data[entry.name] = {"repo_id": entry.repo_id, "filename": entry.filename, "commit": commit}
    tmp = record.with_name(f".{record.name}.{os.getpid()}.part")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True))
    os.replace(tmp, record)
    return commit


# ---------------------------------------------------------------------------------------------
# Resolution


@dataclass(frozen=True)
class Resolved:
    """A verified local file for a weights entry."""

    entry: WeightsEntry
    path: Path
    where: str
    downloaded: bool
    digest: DigestCheck | None

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.entry.name,
            "path": str(self.path),
            "where": self.where,
            "downloaded": self.downloaded,
            "sha256": self.digest.sha256 if self.digest else None,
            "digest": self.digest.status if self.digest else None,
            "pinned": bool(self.entry.sha256),
        }


def _as_entry(entry: WeightsEntry | str) -> WeightsEntry:
    return get_weights(entry) if isinstance(entry, str) else entry


def _announce_digest(res: Resolved, notify: Notify) -> None:
    d = res.digest
    if d is not None and d.hashed and d.status in ("unpinned", "prefix-verified"):
        notify(
            f"{res.entry.name}: sha256 {d.sha256} ({res.path}); not pinned in weights.toml - add "
            f'sha256 = "{d.sha256}" to [weights.{res.entry.name}] to pin it'
        )


def resolve(
    entry: WeightsEntry | str,
    *,
    weights_dir: str | Path | None = None,
    offline: bool | None = None,
    accept_license: bool = False,
    confirm: Confirm | None = None,
    verify: bool = True,
    notify: Notify | None = None,
) -> Resolved:
    """Local, verified file for ``entry``: weights dir -> HF cache -> download (see module docstring).

    Raises :class:`WeightsError` when the file is missing and cannot be downloaded (offline,
    import-only, licence not accepted, network failure) or fails verification.
    """
    e = _as_entry(entry)
    notify = notify or _stderr
    key = (e.name, str(get_weights_dir(weights_dir)), offline_mode(offline))
    with _lock_for(key):  # concurrent workers wait for one resolution instead of each downloading
        loc = locate(e, weights_dir)  # a file imported meanwhile is found: local checks are cheap
        downloaded = False
        if loc is None:
            failed = _FAILED.get(key)
            if failed is not None:  # already failed in this process: the same message, at once
                raise WeightsError(str(failed))
            if e.source_kind == "manual":
                _FAILED[key] = manual_error(e)
                raise _FAILED[key]
            if offline_mode(offline):
                _FAILED[key] = offline_error(e)
                raise _FAILED[key]
            ensure_licence(e, accept_license, confirm)  # depends on the call: never remembered
            try:
                loc = download(e, weights_dir, notify)
            except WeightsError as err:
                _FAILED[key] = err
                raise
            downloaded = True
        digest = (
            check_digest(
                e, loc.path, weights_dir=weights_dir, source="download" if downloaded else "first-use"
            )
            if verify
            else None
        )
    res = Resolved(e, loc.path, loc.where, downloaded, digest)
    _announce_digest(res, notify)
    return res


# Failed resolutions are remembered for the life of the process (one CLI run): a missing file is
# resolved once, and every later image needing it fails at once with the same one-line message.
_FAILED: dict[tuple[str, str, bool], WeightsError] = {}
_LOCKS: dict[tuple[str, str, bool], threading.Lock] = {}
_LOCKS_GUARD = threading.Lock()


def _lock_for(key: tuple[str, str, bool]) -> threading.Lock:
    with _LOCKS_GUARD:
        return _LOCKS.setdefault(key, threading.Lock())


def forget_failures() -> None:
    """Forget remembered resolution failures (e.g. after importing a file in a long-lived process)."""
    _FAILED.clear()


def resolve_any(
    entry: WeightsEntry | str,
    *,
    weights_dir: str | Path | None = None,
    offline: bool | None = None,
    accept_license: bool = False,
    notify: Notify | None = None,
) -> Resolved:
    """Like :func:`resolve`, but a local copy of one of the entry's ``alternatives`` counts too.

    Local copies are tried in order primary, alternatives; only the primary is downloaded.
    """
    e = _as_entry(entry)
    if locate(e, weights_dir) is None:
        for alt_name in e.alternatives:
            alt = get_weights(alt_name)
            if locate(alt, weights_dir) is not None:
                log.info("using %s for %s (local alternative)", alt.name, e.name)
                return resolve(alt, weights_dir=weights_dir, offline=True, notify=notify)
    return resolve(e, weights_dir=weights_dir, offline=offline, accept_license=accept_license, notify=notify)


def verify_local(entry: WeightsEntry | str, weights_dir: str | Path | None = None) -> list[dict[str, Any]]:
    """Re-hash every local copy of ``entry``; one result dict per copy (``status`` "missing" when none).

    Mismatches are reported as ``status = "mismatch"`` with the error message, not raised.
    """
    e = _as_entry(entry)
    copies = locate_all(e, weights_dir)
    if not copies:
        return [{"name": e.name, "status": "missing", "path": None, "where": None, "hint": fetch_hint(e)}]
    out = []
    for loc in copies:
        try:
            d = check_digest(e, loc.path, weights_dir=weights_dir, rehash=True, source="verify")
            out.append({**d.to_json(), "where": loc.where, "pinned": bool(e.sha256)})
        except WeightsError as err:
            out.append(
                {
                    "name": e.name,
                    "status": "mismatch",
                    "path": str(loc.path),
                    "where": loc.where,
                    "error": str(err),
                }
            )
    return out


__all__ = [
    "DIGESTS_FILE",
    "ENV_WEIGHTS_DIR",
    "DigestBook",
    "DigestCheck",
    "Located",
    "Resolved",
    "check_digest",
    "configure",
    "download",
    "ensure_licence",
    "fetch_hint",
    "get_weights_dir",
    "hf_cache_dir",
    "licence_text",
    "local_status",
    "locate",
    "locate_all",
    "offline_mode",
    "forget_failures",
    "check_reachable",
    "resolve",
    "resolve_any",
    "sha256_file",
    "verify_local",
    "weights_dir_path",
]
