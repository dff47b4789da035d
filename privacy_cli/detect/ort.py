"""onnxruntime sessions for the detectors, and the user cache of ONNX graphs made from packaged weights.

Detectors that run on onnxruntime keep torch out of the process: ``import torch`` alone costs
seconds and hundreds of MB. Graphs derived from weights that ship in installed packages (MTCNN
converted from facenet-pytorch's state dicts, CenterFace with dynamic input shapes) are built
once and kept in :func:`cache_dir`, named after their source file's path, size and mtime
(:func:`source_key`), checked by onnx and written atomically; a cached file onnxruntime cannot
load is rebuilt (:func:`cached_session`); graphs that older installs left and nothing used for
30 days are removed when a graph of the same name is built.

Devices: ``"cpu"`` runs the CPU provider; ``"auto"`` prefers CUDA when onnxruntime has the CUDA
provider; ``"cuda"`` without it is a UsageError.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..errors import UsageError

ENV_CACHE_DIR = "PRIVPIX_CACHE_DIR"


def cache_dir() -> Path:
    """Where derived ONNX graphs live: ``$PRIVPIX_CACHE_DIR`` or ``$XDG_CACHE_HOME/privpix/onnx``
    (default ``~/.cache/privpix/onnx``)."""
    env = os.environ.get(ENV_CACHE_DIR)
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "privpix" / "onnx"


def source_key(path: Path) -> str:
    """16 hex digits naming the graph derived from ``path``: sha256 of its resolved path, size and
    mtime (ns). Cheap at every start (hashing the 7 MB CenterFace file cost 30-60 ms); a source
    file replaced or upgraded in place gets a new size or mtime, so a new graph. The cached graph is
    ours (derived from that file), so no check of its bytes is needed to trust it."""
    st = path.stat()
    ident = f"{path.resolve()}\0{st.st_size}\0{st.st_mtime_ns}"
    return hashlib.sha256(ident.encode()).hexdigest()[:16]


#: a cached graph not used for this long is removed when another graph of the same name is built
#: (each install or upgrade of the source package names its graphs anew)
STALE_DAYS = 30
#: a graph's modification time is brought forward on use at most this often
TOUCH_SECONDS = 86400


def cached_graph(name: str, source: Path, build: Callable[[], bytes], rebuild: bool = False) -> Path:
    """Path of the cached ONNX graph ``<name>-<source_key(source)>.onnx``, built by ``build()`` when
    absent (or when ``rebuild``); the bytes are checked by onnx, then written atomically.

    A graph in use has its modification time brought forward once a day; when a graph is built,
    the other graphs of ``name`` unused for :data:`STALE_DAYS` days (left by older installs, other
    environments or upgrades) are removed, so the cache does not grow with every install."""
    import time

    path = cache_dir() / f"{name}-{source_key(source)}.onnx"
    if path.is_file() and not rebuild:
        try:
            if time.time() - path.stat().st_mtime > TOUCH_SECONDS:
                os.utime(path)
        except OSError:  # a read-only cache still serves its graphs
            pass
        return path
    data = build()
    import onnx

    onnx.checker.check_model(onnx.load_from_string(data))
    from ..io import write_bytes_atomic

    write_bytes_atomic(data, path)
    cutoff = time.time() - STALE_DAYS * 86400
    for old in path.parent.glob(f"{name}-*.onnx"):
        # only this name's graphs (a longer name that starts with it has more dashes before the key)
        if old == path or old.stem.rsplit("-", 1)[0] != name:
            continue
        try:
            if old.stat().st_mtime < cutoff:
                old.unlink()
        except OSError:  # another process removed it, or the cache is shared read-only
            pass
    return path


def usable_cores() -> int:
    """CPU cores this process may run on (its affinity mask where the OS has one)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def thread_budget() -> int:
    """Intra-op threads one image's sessions may use in all: the usable cores, or fewer when
    ``OMP_NUM_THREADS`` says so. The local engine sets it to cores / ``--workers`` for a folder job
    (:func:`privacy_cli.cli.batch.run_jobs`) and Ray sets it to an actor's CPUs, so several images
    at once share the cores instead of each starting a thread per core (``--workers 8`` on 16 cores
    ran 8 images x 2 sessions x 8 threads before)."""
    cores = usable_cores()
    try:
        omp = int(os.environ.get("OMP_NUM_THREADS", "") or 0)
    except ValueError:
        omp = 0
    return max(1, min(cores, omp)) if omp > 0 else cores


def share_threads(parts: int) -> int:
    """Intra-op threads for each of ``parts`` sessions that run at the same time for one image:
    :func:`thread_budget` split evenly, at least one each."""
    return max(1, thread_budget() // max(1, int(parts)))


def providers(device: str | None) -> list[str]:
    """onnxruntime execution providers for ``device`` (``"auto"``/None, ``"cpu"``, ``"cuda"``, ``"cuda:N"``)."""
    import onnxruntime as ort

    spec = str(device or "auto").strip().lower()
    available = ort.get_available_providers()
    if spec == "cpu":
        return ["CPUExecutionProvider"]
    if spec == "auto":
        return [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]
    if spec in ("cuda", "gpu") or spec.startswith("cuda:"):
        if "CUDAExecutionProvider" not in available:
            raise UsageError(
                f"--device {spec} was requested but onnxruntime has no CUDA provider "
                f"(available: {', '.join(available)}); use --device auto or --device cpu"
            )
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    if spec == "mps":
        return ["CPUExecutionProvider"]  # onnxruntime has no MPS provider; CoreML is not bundled
    raise UsageError(f"bad device {spec!r}; use auto, cpu, cuda, cuda:N or mps")


def detector_device(device: str | None) -> str:
    """The device the ONNX detectors get when a command's models run on ``device``.

    ``device`` as resolved for torch (``"auto"``, ``"cpu"``, ``"cuda:0"``, ``"mps"``). A GPU request
    keeps the detectors on the GPU only where onnxruntime has a CUDA provider (the
    ``onnxruntime-gpu`` build); with the plain ``onnxruntime`` wheel (privpix's dependency) they run
    on the CPU while the torch models use the GPU, instead of failing the request.
    """
    import onnxruntime as ort

    spec = str(device or "auto").strip().lower()
    if spec in ("cuda", "gpu") or spec.startswith("cuda:"):
        return spec if "CUDAExecutionProvider" in ort.get_available_providers() else "cpu"
    return spec


def session(model: Path | bytes, device: str | None = "auto", threads: int = 0) -> Any:
    """An ``onnxruntime.InferenceSession`` on ``model`` (a path or serialized bytes).

    threads: intra-op threads (0 = onnxruntime's default, one per physical core of the machine,
    or :func:`thread_budget` where that is fewer than the machine's cores: ``OMP_NUM_THREADS``,
    ``taskset`` or a container's CPU set. onnxruntime pins its pool threads to cores of its own
    choosing, so a process confined to one core still ran the text detector on two).
    """
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    budget = thread_budget()
    if not threads and budget < (os.cpu_count() or 1):
        threads = budget
    if threads:
        opts.intra_op_num_threads = int(threads)
    # idle pool threads sleep instead of spinning: spinning burns CPU the rest of a batch job needs
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    src = str(model) if isinstance(model, Path) else model
    return ort.InferenceSession(src, opts, providers=providers(device))


def cached_session(
    name: str, source: Path, build: Callable[[], bytes], device: str | None = "auto", threads: int = 0
) -> Any:
    """:func:`session` on :func:`cached_graph`; a cached file onnxruntime cannot load is rebuilt once."""
    path = cached_graph(name, source, build)
    try:
        return session(path, device, threads)
    except UsageError:
        raise
    except Exception:
        return session(cached_graph(name, source, build, rebuild=True), device, threads)
