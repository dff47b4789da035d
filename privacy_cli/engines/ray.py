"""The Ray engine: every image command on a Ray cluster through Ray Data.

The planned tasks (plain strings) become a Ray dataset of ``ceil(n / batch_size)`` blocks. For a
per-image function with stages (:class:`privacy_cli.cli.batch.Stages`: blur, pixelate, mask, erase,
stylize, deidentify) the pipeline has three Ray Data operators (:mod:`privacy_cli.engines.staged`):

1. decode: ``map_batches`` *tasks* (CPU) read each input (local file, or an object fetched through
   fsspec) and decode it exactly as the local engine does; a decode failure is an error row carried
   through, not a job failure;
2. model: ``map_batches`` over an *actor pool* of ``--workers`` actors (``num_gpus=1`` each when the
   cluster has GPUs); each actor builds the per-image function once (models load once per actor) and
   runs detection and the method on each batch of decoded images;
3. encode: ``map_batches`` tasks (CPU) encode, strip metadata and write each output atomically
   (temporary name + rename, or one PUT on object stores), and make the manifest row.

Decoded pixels travel between the operators through Ray's object store (pickled arrays in Arrow
``large_binary`` columns). Other per-image functions (``detect``, ``perturb``), and every function when
``PRIVPIX_RAY_STAGES=0``, run whole inside the actors (:class:`PrivpixActor`: read, process and write
each image, pipelined in threads for local files). Either way the functions are the local engine's,
so the bytes written are the same. Rows stream back to this driver as batches finish; each is appended
to the manifest, printed (``--json`` streams the rows) and advances privpix's progress bar (Ray Data's
own bars are switched off).

Faults: an image that fails is an error row (never an output). An actor or task whose process dies
(killed, OOM) is restarted by Ray and its batch retried (:data:`TASK_RETRIES` times), so each image
still gets exactly one row; outputs are written atomically, so a retried image replaces its own
complete output at most and leaves no partial file. If Ray itself gives up, every image without a row
gets an error row (exit 1) and is retried by the next run (the manifest records only what finished).
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
import uuid
import warnings
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import PrivpixError, UsageError
from ..io import Job
from ..pipeline import Result
from .manifest import Manifest, manifest_location
from .tasks import Task, as_tasks, is_remote, run_task, worker_name

if TYPE_CHECKING:
    from . import EngineOptions, FnFactory

#: retries of a batch whose actor died (a poison image that kills every actor must end the job)
TASK_RETRIES = 3
#: PRIVPIX_RAY_STAGES=0: actors decode and encode themselves, as before the stages were split (benchmarks)
STAGED = os.environ.get("PRIVPIX_RAY_STAGES", "1") != "0"
_DEBUG = os.environ.get("PRIVPIX_DEBUG", "") not in ("", "0")


def _import_ray() -> Any:
    # Ray (2.45+) re-runs `uv run` in every worker when the driver was started by `uv run`, in a copy
    # of the working directory: that environment is synced without optional extras, so the workers
    # lack Ray itself (privpix[ray] is an extra) and never register. Workers use the driver's
    # interpreter instead; read by Ray at import, so set before it (a user's own setting wins).
    os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError:
        raise UsageError("--engine ray needs Ray: pip install 'privpix[ray]'") from None
    return ray


def connect(address: str | None) -> bool:
    """Join the Ray cluster at ``address`` (``auto``: the running one) or start a local one when
    ``address`` is None. Reuses an already connected driver. Returns True when this call connected."""
    ray = _import_ray()
    if ray.is_initialized():
        return False
    if not _DEBUG:  # Ray's C++ core logs warnings on stderr; privpix reports what matters itself
        os.environ.setdefault("RAY_BACKEND_LOG_LEVEL", "fatal")
    try:
        ray.init(
            address=address,
            logging_level=logging.DEBUG if _DEBUG else logging.ERROR,
            log_to_driver=_DEBUG,
            include_dashboard=False,
            configure_logging=True,
        )
    except Exception as e:  # Ray raises bare Exceptions for start-up timeouts
        where = f"--ray-address {address}" if address else "--engine ray"
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise PrivpixError(f"{where}: cannot start or join a Ray cluster ({msg})") from None
    return True


def _ray_messages_to_stderr(ray: Any, quiet: bool) -> None:
    """Ray prints its own notices (task retries, dead workers) on the driver's stdout, where they would
    break ``--json``; send them to stderr (or drop them with ``--quiet``). Uses Ray's private printer,
    and does nothing when it is not there."""
    worker = getattr(getattr(ray, "_private", None), "worker", None)
    printer = getattr(worker, "print_to_stdstream", None)
    printer = getattr(printer, "__wrapped__", printer)
    if printer is None:
        return

    def to_stderr(data: dict, ignore_prefix: bool) -> None:
        if not quiet or _DEBUG:
            printer({**data, "is_err": True}, ignore_prefix)

    to_stderr.__wrapped__ = printer  # type: ignore[attr-defined]
    worker.print_to_stdstream = to_stderr


class PrivpixActor:
    """A Ray Data actor: builds the per-image function once, then runs it over batches of tasks."""

    def __init__(self, make_fn: FnFactory, overwrite: bool) -> None:
        self.fn = make_fn()
        self.overwrite = overwrite
        self.worker = worker_name()

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        from ..cli.batch import PIPELINE, iter_pipelined

        tasks = [Task.from_json(str(s)) for s in batch["task"]]
        stages = getattr(self.fn, "stages", None) if PIPELINE else None
        if stages is not None and len(tasks) > 1 and not any(t.staged for t in tasks):
            # local files: decode the next image and encode the last one while this one is inferred
            jobs = [
                Job(Path(t.input), None if t.output is None else Path(t.output), Path(t.rel), t.error, t.skip)
                for t in tasks
            ]
            results = iter_pipelined(jobs, stages)
        else:
            results = (run_task(t, self.fn, self.overwrite) for t in tasks)
        rows = [{**r.to_json(), "worker": self.worker} for r in results]
        cpu = round(time.process_time(), 2)  # this actor's CPU so far (all threads, model load included)
        return {
            "row": np.array([json.dumps({**r, "worker_cpu_s": cpu}, default=str) for r in rows], dtype=object)
        }


def _bound_actor(make_fn: FnFactory, overwrite: bool) -> type:
    """A PrivpixActor class with its arguments baked in (pickled with the class, not kept in the object
    store as constructor arguments, so a restarted actor never depends on an object that may be gone)."""

    class PrivpixWorker(PrivpixActor):
        def __init__(self) -> None:
            super().__init__(make_fn, overwrite)

    return PrivpixWorker


def _items_column(items: list[bytes]) -> Any:
    """A batch of packed Items as an Arrow table (``large_binary``: a batch of big photos can pass the
    2 GiB a plain binary column holds)."""
    import pyarrow as pa

    return pa.table({"item": pa.array(items, type=pa.large_binary())})


def decode_batch(token: str, make_fn: FnFactory, overwrite: bool, batch: dict[str, np.ndarray]) -> Any:
    """The decode operator (Ray Data tasks): a batch of tasks -> packed Items."""
    from .staged import decode_items, pack, stages_for

    tasks = [Task.from_json(str(s)) for s in batch["task"]]
    return _items_column([pack(it) for it in decode_items(stages_for(token, make_fn), tasks, overwrite)])


def encode_batch(token: str, make_fn: FnFactory, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The encode operator (Ray Data tasks): packed Items -> written outputs and manifest rows."""
    from .staged import encode_items, stages_for, unpack

    rows = encode_items(stages_for(token, make_fn), [unpack(b) for b in batch["item"]])
    return {"row": np.array([json.dumps(r, default=str) for r in rows], dtype=object)}


class ModelActor:
    """The model operator's actor: builds the per-image function once (models load on first use, once
    per actor), then detects and applies the method on batches of decoded images."""

    def __init__(self, make_fn: FnFactory, token: str) -> None:
        from .staged import stages_for

        self.stages = stages_for(token, make_fn)

    def __call__(self, batch: dict[str, np.ndarray]) -> Any:
        from .staged import compute_items, pack, unpack

        items = compute_items(self.stages, [unpack(b) for b in batch["item"]])
        return _items_column([pack(it) for it in items])


def _bound_model_actor(make_fn: FnFactory, token: str) -> type:
    """A ModelActor class with its arguments baked in (as :func:`_bound_actor`)."""

    class PrivpixModel(ModelActor):
        def __init__(self) -> None:
            super().__init__(make_fn, token)

    return PrivpixModel


def stage_resources(cpus: float, workers: int) -> tuple[float, float]:
    """Logical CPUs of (each model actor, each decode/encode task) on a cluster of ``cpus`` CPUs.

    One each when the cluster has room for the actors plus two CPU-stage tasks. Otherwise (e.g.
    ``--workers 2`` on 2 CPUs, or GPU nodes with few CPUs, where actors of one CPU each would starve
    the CPU stages and the job would never end) the actors share all but half a CPU and one CPU-stage
    task runs at a time on what is left: decoding and encoding take a fraction of the inference time,
    and every Ray Data worker process costs about 5 s of CPU to start (``import ray.data``), so a small
    machine runs them in a single process. These are Ray's scheduling units, not threads: a 0.75-CPU
    actor still runs its models on every thread they use."""
    if cpus >= workers + 2:
        return 1.0, 1.0
    actor = max(0.01, min(1.0, (cpus - 0.5) / workers))
    return actor, max(0.5, cpus - workers * actor)


def _map(ds: Any, fn: Any, args: dict[str, Any], **retries: int) -> Any:
    """``ds.map_batches(fn, **args)`` with bounded ``retries`` where this Ray passes them through."""
    try:
        return ds.map_batches(fn, **args, **retries)
    except TypeError:  # a Ray without the remote-args passthrough: its own retry defaults
        return ds.map_batches(fn, **args)


def _result(row: dict[str, Any]) -> Result:
    keys = ("input", "output", "status", "regions_found", "regions_obfuscated", "seconds", "error")
    return Result(
        row["input"],
        row.get("output"),
        row["status"],
        row.get("regions_found", 0),
        row.get("regions_obfuscated", 0),
        row.get("seconds", 0.0),
        row.get("error"),
        extra={k: v for k, v in row.items() if k not in keys},
    )


def remove_stale_parts(tasks: Sequence[Task]) -> int:
    """Remove the temporary files that workers killed mid-write left beside this run's local outputs
    (see :func:`privacy_cli.io.remove_stale_temps`: only files of processes no longer running). A
    retried image whose output was already complete never reopens it, so nothing else would."""
    from ..io import remove_stale_temps

    return sum(len(remove_stale_temps(Path(t.output))) for t in tasks if t.output and not is_remote(t.output))


def run(
    jobs: Sequence[Job | Task], make_fn: FnFactory, out: Any, description: str, opts: EngineOptions
) -> tuple[int, list[Result]]:
    """Run the per-image function from ``make_fn`` over ``jobs`` on Ray. Returns (exit code, results)."""
    from ..cli.batch import report_result

    ray = _import_ray()
    tasks = as_tasks(jobs)
    where = manifest_location(tasks, opts.output, description)
    manifest = Manifest(where, overwrite=opts.overwrite) if where else None
    done = manifest.done() if manifest else {}
    todo = [t for t in tasks if not (t.input in done and done[t.input] == t.output and not t.error)]
    n_done = len(tasks) - len(todo)
    results: list[Result] = []
    started = False
    try:
        if todo:
            _ray_messages_to_stderr(ray, out.quiet or out.json)
            started = connect(opts.ray_address)
            ctx = ray.data.DataContext.get_current()
            ctx.enable_progress_bars = False  # progress is privpix's own bar
            ctx.print_on_execution_start = False
            ctx.enable_auto_log_stats = False
            logging.getLogger("ray.data").setLevel(logging.DEBUG if _DEBUG else logging.ERROR)
            res = ray.cluster_resources()
            gpus = res.get("GPU", 0)
            ds = ray.data.from_items(
                [{"task": t.to_json()} for t in todo],
                override_num_blocks=max(1, math.ceil(len(todo) / opts.batch_size)),
            )
            fn = make_fn() if STAGED else None  # built here only to see whether it has stages
            staged = fn is not None and getattr(fn, "stages", None) is not None
            del fn
            actor_cpus, stage_cpus = stage_resources(res.get("CPU", 1), opts.workers) if staged else (1, 1)
            stage = {
                "batch_size": opts.batch_size,
                "batch_format": "numpy",
                "concurrency": opts.workers,
                "num_cpus": actor_cpus,
                "num_gpus": 1 if gpus >= 1 else None,
            }
            token = uuid.uuid4().hex
            cpu_stage = {"batch_size": opts.batch_size, "batch_format": "numpy", "num_cpus": stage_cpus}
            with warnings.catch_warnings():
                # bounded retries have no named parameter (Ray's default retries forever, which a poison
                # image that kills every actor would turn into a job that never ends)
                warnings.filterwarnings("ignore", message=".*ray_remote_args.*deprecated")
                if staged:
                    decode = partial(decode_batch, token, make_fn, opts.overwrite)
                    ds = _map(ds, decode, cpu_stage, max_retries=TASK_RETRIES)
                    actor = _bound_model_actor(make_fn, token)
                else:
                    actor = _bound_actor(make_fn, opts.overwrite)
                ds = _map(ds, actor, stage, max_restarts=-1, max_task_retries=TASK_RETRIES)
                if staged:
                    ds = _map(ds, partial(encode_batch, token, make_fn), cpu_stage, max_retries=TASK_RETRIES)
            seen: set[str] = set()

            def emit(row: dict[str, Any]) -> None:
                seen.add(row["input"])
                if manifest is not None:
                    row = manifest.append(row)
                out.record(row)
                r = _result(row)
                results.append(r)
                report_result(out, r)

            with out.progress(len(todo), description) as bar:
                rows = iter(ds.iter_rows())
                try:
                    for item in rows:
                        row = json.loads(item["row"])
                        if row["input"] not in seen:  # a retried batch cannot report an image twice
                            emit(row)
                            if bar:
                                bar.advance()
                except (ray.exceptions.RayError, RuntimeError) as e:
                    # Ray gave up (e.g. a batch killed its actors TASK_RETRIES times): fail closed
                    reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
                    for t in todo:
                        if t.input not in seen:
                            err = f"{t.input}: not processed (Ray: {reason})"
                            emit({"input": t.input, "output": None, "status": "error", "error": err})
                finally:  # an interrupt stops the pipeline here, not after it has run to the end
                    close = getattr(rows, "close", None)
                    if close is not None:
                        close()
    finally:
        if manifest is not None:
            manifest.close()
        remove_stale_parts(todo)
        if started:
            ray.shutdown()
    n_err = sum(r.status == "error" for r in results)
    n_ok = sum(r.status == "ok" for r in results)
    n_skip = sum(r.status == "skipped" for r in results)
    msg = f"{n_ok} written, {n_skip} skipped, {n_err} failed"
    if n_done:
        msg += f", {n_done} already done (manifest {where}; --overwrite redoes them)"
    out.info(msg)
    return (1 if n_err else 0), results
