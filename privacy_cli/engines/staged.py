"""The three stages of a staged engine run: decode (CPU), compute (models), encode (CPU).

A per-image function with :class:`privacy_cli.cli.batch.Stages` (every command on the shared method
pipeline: blur, pixelate, mask, erase, stylize, deidentify) can be run as three separate steps, each
possibly in a different process or machine: ``decode_items`` reads and decodes the inputs (local
files, or objects fetched from a remote filesystem), ``compute_items`` detects and applies the method
(the model stage: a Ray actor with the models loaded once), ``encode_items`` encodes, strips metadata
and writes each output atomically (temporary name + rename, or one PUT on object stores) and yields the
image's Result row. The functions called are those the local engine calls (``stages.decode``,
``stages.compute``, ``stages.encode``: :func:`privacy_cli.io.load_image`,
:func:`privacy_cli.pipeline.compute_file`, :func:`privacy_cli.pipeline.write_computed`), so the bytes
written are the local engine's.

Between stages an image is an :class:`Item` pickled to bytes: the task, what the per-image function
sees as the job's paths, the stage's value (a decoded LoadedImage, a Computed, or a finished Result:
error or skip, carried through unchanged), and the seconds, process and CPU time of each stage. Any
failure of an image becomes its error Result (nothing written; privacy fails closed); only a dying
process fails a whole batch (the engine then retries it).

Remote objects (``s3://``...): the decode stage downloads each to a temporary file (keeping its base
name, so ``--mask-dir`` / ``--boxes`` lookups by name behave as locally), decodes it and deletes the
copy; the model stage sees that (now absent) path as the input and a path under it as the output; the
encode stage writes to a fresh temporary file and uploads it with one PUT. Paths in the Result are
mapped back to the URIs. Ray is not imported here.
"""

from __future__ import annotations

import pickle
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..io import Job
from ..pipeline import Computed, Result
from .tasks import Task, failed, fetch_input, remote_output_exists, stand_ins, worker_name, write_bytes

#: per process, the per-image function of each run (built once per process by :func:`stages_for`)
_FNS: dict[str, Callable[[Job], Result]] = {}


@dataclass
class Item:
    """One image between stages. ``job_input`` / ``job_output``: the paths the per-image function sees
    (the task's own for local files; temporary stand-ins for remote objects). ``value``: the decoded
    image (or None: let compute decide, e.g. an existing output), a Computed, or a finished Result.
    ``times``: per stage ``(seconds, worker, worker CPU s after the batch)``."""

    task: Task
    job_input: str
    job_output: str | None
    value: Any = None
    times: dict[str, tuple[float, str, float]] = field(default_factory=dict)

    def job(self) -> Job:
        out = None if self.job_output is None else Path(self.job_output)
        return Job(Path(self.job_input), out, Path(self.task.rel), self.task.error, self.task.skip)


def pack(item: Item) -> bytes:
    """``item`` as bytes for the next stage (pickle protocol 5: arrays are copied once, not encoded)."""
    return pickle.dumps(item, protocol=5)


def unpack(data: bytes) -> Item:
    """The Item :func:`pack` made. Only bytes this run's own stages produced are unpacked."""
    return pickle.loads(data)  # noqa: S301 - our own stage's output, inside one job


def stages_for(token: str, make_fn: Callable[[], Callable[[Job], Result]]) -> Any:
    """The :class:`~privacy_cli.cli.batch.Stages` of the per-image function from ``make_fn``, built
    once per process and run (``token`` names the run)."""
    fn = _FNS.get(token)
    if fn is None:
        _FNS.clear()  # one run at a time per process: drop an earlier run's function
        fn = _FNS[token] = make_fn()
    stages = getattr(fn, "stages", None)
    if stages is None:
        raise TypeError("this per-image function has no stages")
    return stages


def _mark(items: Sequence[Item], stage: str, seconds: Sequence[float]) -> None:
    cpu = round(time.process_time(), 2)  # this process's CPU so far (all threads)
    who = worker_name()
    for it, s in zip(items, seconds, strict=True):
        it.times[stage] = (s, who, cpu)


def _map_back(r: Result, item: Item, local_out: str | None = None) -> Result:
    """Result paths as the task's (URIs for staged tasks), not the temporary stand-ins."""
    t = item.task

    def back(s: str | None) -> str | None:
        if s is None or not t.staged:
            return s
        for local, real in ((local_out, t.output), (item.job_output, t.output), (item.job_input, t.input)):
            if local and real:
                s = s.replace(local, real)
        return s

    r.input, r.output, r.error = t.input, back(r.output), back(r.error)
    return r


def decode_items(stages: Any, tasks: Sequence[Task], overwrite: bool) -> list[Item]:
    """The decode stage: each task's input read and decoded with ``stages.decode`` (exactly as the
    local engine). A planning error, a skip, an existing remote output (not ``overwrite``) or an input
    that cannot be read or decoded becomes a finished Result."""
    from ..cli.batch import run_one
    from ..errors import PrivpixError

    items, seconds = [], []
    for t in tasks:
        t0 = time.perf_counter()
        it = Item(t, t.input, t.output)
        if t.error or t.skip:
            it.value = run_one(it.job(), lambda _j: None)  # the planning error / skip Result
        elif not t.staged:
            it.value = run_one(it.job(), stages.decode)
        elif (skipped := remote_output_exists(t, overwrite)) is not None:
            it.value = skipped
        else:
            d = tempfile.mkdtemp(prefix="privpix-stage-")
            try:
                src, dst = stand_ins(t, d)
                it.job_output = None if dst is None else str(dst)
                it.job_input = str(fetch_input(t, src))
                it.value = run_one(it.job(), stages.decode)
            except (PrivpixError, OSError) as e:
                it.value = failed(t, e)
            finally:
                shutil.rmtree(d, ignore_errors=True)
        if isinstance(it.value, Result):
            it.value = _map_back(it.value, it)
        items.append(it)
        seconds.append(time.perf_counter() - t0)
    _mark(items, "decode", seconds)
    return items


def compute_items(stages: Any, items: Sequence[Item]) -> list[Item]:
    """The model stage: detection and the method on every decoded image of the Ray batch, through
    ``stages.compute_many`` (:meth:`privacy_cli.cli.batch.Stages.compute_many`): for torch methods
    the images are computed together and their networks' forward passes batched across the images
    (on CUDA; on CPU one image after another, so the bytes are the local engine's). Each image's
    compute seconds are the batch's wall time shared equally. A Computed leaves without the input's
    pixels (encoding does not read them); a failure is that image's error Result only."""
    todo = [it for it in items if not isinstance(it.value, Result)]
    t0 = time.perf_counter()
    values = stages.compute_many([it.job() for it in todo], [it.value for it in todo])
    for it in todo:
        it.value = None  # the decoded pixels: dropped as soon as the batch is computed
    for it, c in zip(todo, values, strict=True):
        it.value = c.without_input_pixels() if isinstance(c, Computed) else _map_back(c, it)
    del values
    share = (time.perf_counter() - t0) / max(1, len(todo))
    computed = {id(it) for it in todo}
    _mark(items, "compute", [share if id(it) in computed else 0.0 for it in items])
    return list(items)


def encode_items(stages: Any, items: Sequence[Item]) -> list[dict[str, Any]]:
    """The encode stage: each Computed encoded and written atomically with ``stages.encode`` (remote
    outputs: a temporary file, then one PUT); every image's manifest row: its ``--json`` record plus
    where each stage ran (``worker``: the model stage; ``decode_worker``, ``encode_worker``; each with
    its process's CPU seconds so far, ``*_cpu_s``) and ``stage_seconds`` (wall seconds per stage)."""
    from ..cli.batch import run_one
    from ..errors import PrivpixError

    rows, seconds = [], []
    for it in items:
        t0 = time.perf_counter()
        if isinstance(it.value, Computed):
            c, it.value = it.value, None
            t = it.task
            if not t.staged:
                r = run_one(it.job(), lambda _j, c=c: stages.encode(c))  # type: ignore[misc]
            else:
                d = tempfile.mkdtemp(prefix="privpix-stage-")
                local = Path(d, Path(c.output_path).name)
                c.output_path = local
                try:
                    r = run_one(it.job(), lambda _j, c=c: stages.encode(c))  # type: ignore[misc]
                    if r.status == "ok" and t.output is not None:
                        write_bytes(local.read_bytes(), t.output)
                except (PrivpixError, OSError) as e:
                    r = failed(t, e)
                finally:
                    shutil.rmtree(d, ignore_errors=True)
            it.value = _map_back(r, it, str(local) if t.staged else None)
        seconds.append(time.perf_counter() - t0)
    _mark(items, "encode", seconds)
    for it in items:
        r = it.value
        assert isinstance(r, Result)
        if r.status == "ok":
            r.seconds = sum(s for s, _, _ in it.times.values())  # work on this image, not queueing
        row = r.to_json()
        _, row["worker"], row["worker_cpu_s"] = it.times["compute"]
        for stage in ("decode", "encode"):
            _, row[f"{stage}_worker"], row[f"{stage}_worker_cpu_s"] = it.times[stage]
        row["stage_seconds"] = {stage: round(s, 4) for stage, (s, _, _) in it.times.items()}
        rows.append(row)
    return rows
