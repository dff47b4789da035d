"""The Ray engine: every image command on a Ray cluster through Ray Data.

Pipeline: the planned tasks (plain strings) become a Ray dataset of ``ceil(n / batch_size)`` blocks;
``map_batches`` sends batches of ``--batch-size`` tasks to a pool of ``--workers`` actors. Each actor
builds the per-image function once in ``__init__`` (so detectors and models load once per actor, on the
actor's GPU when the cluster has GPUs: ``num_gpus=1`` per actor) and runs the same function the local
engine runs on every image of a batch (same bytes out). Remote objects are staged per image: download,
process, one PUT (see :mod:`privacy_cli.engines.tasks`). Rows stream back to this driver as batches
finish; each is appended to the manifest, printed (``--json`` streams the rows) and advances
privpix's progress bar (Ray Data's own bars are switched off).

Faults: an image that fails is an error row (never an output). An actor that dies (killed, OOM) is
restarted by Ray and its batch retried (:data:`TASK_RETRIES` times), so each image still gets exactly one
row; outputs are written atomically, so a retried image replaces its own complete output at most and
leaves no partial file. If Ray itself gives up, every image without a row gets an error row (exit 1)
and is retried by the next run (the manifest records only what finished).
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
import warnings
from collections.abc import Sequence
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
            gpus = ray.cluster_resources().get("GPU", 0)
            ds = ray.data.from_items(
                [{"task": t.to_json()} for t in todo],
                override_num_blocks=max(1, math.ceil(len(todo) / opts.batch_size)),
            )
            stage = {
                "batch_size": opts.batch_size,
                "batch_format": "numpy",
                "concurrency": opts.workers,
                "num_cpus": 1,
                "num_gpus": 1 if gpus >= 1 else None,
            }
            actor = _bound_actor(make_fn, opts.overwrite)
            with warnings.catch_warnings():
                # bounded retries have no named parameter (Ray's default retries forever, which a poison
                # image that kills every actor would turn into a job that never ends)
                warnings.filterwarnings("ignore", message=".*ray_remote_args.*deprecated")
                try:
                    ds = ds.map_batches(actor, **stage, max_restarts=-1, max_task_retries=TASK_RETRIES)
                except TypeError:  # a Ray without the remote-args passthrough: its own retry defaults
                    ds = ds.map_batches(actor, **stage)
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
