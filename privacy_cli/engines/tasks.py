"""Engine-neutral jobs: plain-string tasks any engine can ship, planning for remote URIs, and running
one task (with object-store staging) in whichever process an engine chooses.

A :class:`Task` is a planned job whose paths are strings: a local path, or a URI such as
``s3://bucket/key`` or ``gs://bucket/key`` read and written through fsspec. Remote objects are staged:
the object is downloaded to a local temporary file (keeping its base name, so ``--boxes`` / ``--mask-dir``
lookups by name behave as for local files), the same per-image function the local engine runs
processes it, and the output is uploaded with one PUT (atomic on object stores). A failed image is never
uploaded (privacy fails closed). fsspec and its backends (s3fs, gcsfs) are imported only for URIs.
"""

from __future__ import annotations

import glob as _glob
import json
import os
import posixpath
import re
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from ..errors import InputError, UsageError
from ..io import Found, Job, expand_inputs, is_image_path, plan_outputs, write_bytes_atomic
from ..pipeline import Result, output_exists

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*):/(/?)")


def as_location(p: str | os.PathLike | None) -> str | None:
    """A path or URI as a string. Typer turns ``-o s3://b/k`` into ``Path('s3:/b/k')``; this restores
    the ``//`` so the URI survives (a local folder named ``s3:`` is not a realistic path)."""
    if p is None:
        return None
    s = os.fspath(p)
    m = _SCHEME.match(s)
    if m and not m.group(2) and len(m.group(1)) > 1:
        s = f"{m.group(1)}://{s[m.end() :]}"
    if s.startswith("file://"):
        s = s[len("file://") :]
    return s


def is_remote(p: str | os.PathLike | None) -> bool:
    """True for ``scheme://...`` URIs other than ``file://`` (single-letter schemes are Windows drives)."""
    s = as_location(p)
    if s is None:
        return False
    m = _SCHEME.match(s)
    return bool(m and len(m.group(1)) > 1)


@dataclass
class Task:
    """One planned image as plain strings (picklable, JSON-able). ``rel``: path relative to the walked
    root (posix). ``error``: the input is unusable; ``skip``: left out on purpose (as in io.Job)."""

    input: str
    output: str | None
    rel: str
    error: str | None = None
    skip: str | None = None

    @classmethod
    def from_job(cls, job: Job) -> Task:
        out = None if job.output is None else str(job.output)
        return cls(str(job.input), out, job.rel.as_posix(), job.error, getattr(job, "skip", None))

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, s: str) -> Task:
        return cls(**json.loads(s))

    @property
    def staged(self) -> bool:
        """Whether input or output is on a remote filesystem (the task runs through a local copy)."""
        return is_remote(self.input) or is_remote(self.output)


# ---------------------------------------------------------------------------------------------
# Planning


def _fs(uri: str) -> tuple[Any, str]:
    try:
        from fsspec.core import url_to_fs
    except ImportError:  # pragma: no cover - fsspec comes with the ray extra
        raise UsageError(f"{uri}: remote paths need fsspec: pip install 'privpix[ray]'") from None
    try:
        return url_to_fs(uri)
    except (ImportError, ValueError) as e:
        raise UsageError(f"{uri}: unsupported filesystem ({e})") from None


def _join(base: str, *parts: str) -> str:
    if is_remote(base):
        return posixpath.join(base.rstrip("/"), *[p for p in parts if p and p != "."])
    return str(Path(base, *[p for p in parts if p and p != "."]))


def _walk(raw: str, skip_suffix: str) -> list[Found]:
    """The entries of one input argument (file, folder/prefix or glob) as :class:`~privacy_cli.io.Found`
    with string paths for URIs: local paths through :func:`privacy_cli.io.expand_inputs`, URIs through
    fsspec (kept by image extension; an argument that matches nothing is an error entry)."""
    if not is_remote(raw):
        return expand_inputs([raw], skip_suffix=skip_suffix)
    fs, root = _fs(raw)
    proto = raw.split("://", 1)[0]

    def uri(path: str) -> str:
        return f"{proto}://{path.lstrip('/')}"

    def keep(path: str) -> bool:
        name = posixpath.basename(path)
        stem = posixpath.splitext(name)[0]
        return is_image_path(Path(name)) and not name.startswith(".") and not stem.endswith(skip_suffix)

    def found(path: str, rel: str, root: str | None) -> Found:
        return Found(uri(path), rel, root)  # type: ignore[arg-type]

    root = root.rstrip("/")
    try:
        if _glob.has_magic(root):
            hits = [p for p in sorted(fs.glob(root)) if keep(p) and fs.isfile(p)]
            if hits:
                return [found(p, posixpath.basename(p), None) for p in hits]
        elif fs.isdir(root):
            return [found(p, posixpath.relpath(p, root), root) for p in sorted(fs.find(root)) if keep(p)]
        elif fs.isfile(root):
            return [found(root, posixpath.basename(root), None)]
    except OSError as e:
        return [Found(raw, posixpath.basename(root), None, error=f"{raw}: cannot list ({e})")]  # type: ignore[arg-type]
    return [Found(raw, posixpath.basename(root), None, error=f"{raw}: no such file or directory")]  # type: ignore[arg-type]


def plan_tasks(
    inputs: Iterable[str], command: str, output: str | os.PathLike | None
) -> list[Job] | list[Task]:
    """Plan every input's output, the local engine's naming rules, for local paths and URIs alike.

    With no URI among inputs and output, this is exactly :func:`privacy_cli.io.plan_outputs` (a list of
    :class:`~privacy_cli.io.Job`). Otherwise tasks: default output next to the input as
    ``<stem>_<command><ext>``; ``-o`` a single file (one input), or a folder/prefix under which folder
    inputs mirror their tree; names made unique within the run (``-2``, ``-3``...). An output that
    would land on an input is an error for that image.
    """
    inputs = [as_location(s) or "" for s in inputs]
    out = as_location(output)
    if not any(is_remote(s) for s in inputs) and not is_remote(out):
        return plan_outputs(inputs, command, output)
    expanded = [e for raw in inputs for e in _walk(raw, f"_{command}")]
    files = [e for e in expanded if e.error is None and e.skip is None]
    single = out is not None and is_image_path(Path(out)) and not (not is_remote(out) and Path(out).is_dir())
    if single and len(files) > 1:
        raise UsageError(f"-o {out}: a single output file needs a single input ({len(files)} given)")
    in_set = {str(e.path) for e in files}
    taken: set[str] = set()
    tasks: list[Task] = []
    for e in expanded:
        loc, rel = str(e.path), PurePosixPath(e.rel).as_posix()
        if e.error is not None or e.skip is not None:
            tasks.append(Task(loc, None, rel, e.error, e.skip))
            continue
        stem, ext = posixpath.splitext(posixpath.basename(loc) if is_remote(loc) else Path(loc).name)
        if out is None:
            parent = posixpath.dirname(loc) if is_remote(loc) else str(Path(loc).parent)
            dst = _join(parent, f"{stem}_{command}{ext}")
        elif single:
            dst = out
        elif e.root is not None:
            dst = _join(out, posixpath.dirname(rel), f"{stem}{ext}")
        else:  # -o DIR keeps every input's name (io.plan_outputs' rule)
            dst = _join(out, f"{stem}{ext}")
        base, n = dst, 1
        while dst in taken:  # two inputs with one name: the later ones get -2, -3... as locally
            n += 1
            root_, ext_ = posixpath.splitext(base)
            dst = f"{root_}-{n}{ext_}"
        taken.add(dst)
        err = f"{loc}: output {dst} would overwrite an input; choose another -o" if dst in in_set else None
        tasks.append(Task(loc, dst, rel, err))
    return tasks


def as_tasks(jobs: Sequence[Job | Task]) -> list[Task]:
    """Planned jobs of either kind as :class:`Task` rows."""
    return [j if isinstance(j, Task) else Task.from_job(j) for j in jobs]


# ---------------------------------------------------------------------------------------------
# Running one task


def worker_name() -> str:
    """``host:pid`` of this process (the manifest's ``worker`` column)."""
    import socket

    return f"{socket.gethostname()}:{os.getpid()}"


def exists(location: str) -> bool:
    """Whether a local path or URI exists."""
    if not is_remote(location):
        return Path(location).exists()
    fs, path = _fs(location)
    return bool(fs.exists(path))


def read_bytes(location: str) -> bytes:
    """Bytes of a local file or remote object; raises :class:`InputError` naming it."""
    try:
        if not is_remote(location):
            return Path(location).read_bytes()
        fs, path = _fs(location)
        return bytes(fs.cat_file(path))
    except FileNotFoundError:
        raise InputError(f"{location}: no such file") from None
    except OSError as e:
        raise InputError(f"{location}: cannot read ({e.strerror or e})") from None


def write_bytes(data: bytes, location: str) -> None:
    """Write bytes atomically: temp name + rename on file systems, one PUT on object stores."""
    if not is_remote(location):
        write_bytes_atomic(data, location)
        return
    fs, path = _fs(location)
    try:
        fs.pipe_file(path, data)  # one request with the whole body: the object appears complete or not at all
    except OSError as e:
        raise InputError(f"{location}: cannot write output ({e.strerror or e})") from None


def remote_output_exists(task: Task, overwrite: bool) -> Result | None:
    """The ``skipped`` Result when a staged task's output already exists (and not ``overwrite``)."""
    if task.output is not None and not overwrite and exists(task.output):
        return output_exists(task.input, task.output)
    return None


def stand_ins(task: Task, folder: str) -> tuple[Path, Path | None]:
    """Local stand-in paths of a staged task inside the temporary ``folder``: ``(folder/in/<input's
    name>, folder/out/<output's name>)`` (names kept, so lookups by name behave as locally; no
    output path for a task without output)."""
    name = posixpath.basename(task.input) if is_remote(task.input) else Path(task.input).name
    out_name = posixpath.basename(task.output) if task.output else name
    return Path(folder, "in", name), Path(folder, "out", out_name) if task.output else None


def fetch_input(task: Task, src: Path) -> Path:
    """The local file the per-image function reads: a remote input downloaded to ``src``, a local
    one as is."""
    if not is_remote(task.input):
        return Path(task.input)
    src.parent.mkdir(parents=True, exist_ok=True)
    src.write_bytes(read_bytes(task.input))
    return src


def failed(task: Task, e: Exception) -> Result:
    """The error Result of a staged task whose fetch, step or upload raised ``e`` (a PrivpixError
    keeps its own one-line message; an OSError is named with the task's input)."""
    from ..errors import PrivpixError

    msg = str(e) if isinstance(e, PrivpixError) else f"{task.input}: {getattr(e, 'strerror', None) or e}"
    return Result(task.input, None, "error", error=msg)


def _staged(task: Task, fn: Callable[[Job], Result], overwrite: bool, run_one: Callable) -> Result:
    from ..errors import PrivpixError

    t0 = time.perf_counter()
    skipped = remote_output_exists(task, overwrite)
    if skipped is not None:
        return skipped
    with tempfile.TemporaryDirectory(prefix="privpix-stage-") as d:
        src, dst = stand_ins(task, d)
        try:
            src = fetch_input(task, src)
            r = run_one(Job(src, dst, Path(task.rel)), fn)
            if r.status == "ok" and dst is not None and task.output is not None:
                write_bytes(dst.read_bytes(), task.output)
        except (PrivpixError, OSError) as e:
            r = failed(task, e)

    def back(s: str | None) -> str | None:
        if s is None:
            return None
        s = s.replace(str(src), task.input)
        return s.replace(str(dst), task.output) if dst is not None and task.output else s

    r.input, r.output, r.error = task.input, back(r.output), back(r.error)
    r.seconds = time.perf_counter() - t0
    return r


def run_task(task: Task, fn: Callable[[Job], Result], overwrite: bool) -> Result:
    """Run ``fn`` on one task in this process and return its Result (never raises for one bad image).

    Local tasks run exactly as the local engine runs them; remote ones through a staged local copy.
    """
    from ..cli.batch import run_one

    if task.error:
        return Result(task.input, None, "error", error=task.error)
    if task.skip:
        return Result(task.input, None, "skipped", extra={"reason": task.skip})
    if task.staged:
        return _staged(task, fn, overwrite, run_one)
    job = Job(Path(task.input), None if task.output is None else Path(task.output), Path(task.rel))
    return run_one(job, fn)
