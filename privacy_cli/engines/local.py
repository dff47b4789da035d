"""The local engine: this process, the shared batch runner (``--workers`` threads)."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..io import Job
from ..pipeline import Result
from .tasks import Task, as_tasks, run_task

if TYPE_CHECKING:
    from . import EngineOptions, FnFactory


def cuda_present() -> bool:
    """Whether this machine has a CUDA GPU, without importing torch when it is not loaded yet (the
    NVIDIA driver's ``/proc/driver/nvidia/gpus`` entries; torch's own answer when torch is loaded)."""
    if "torch" in sys.modules:
        return bool(sys.modules["torch"].cuda.is_available())
    gpus = Path("/proc/driver/nvidia/gpus")
    return (
        gpus.is_dir()
        and any(gpus.iterdir())
        and os.environ.get("CUDA_VISIBLE_DEVICES", "x") not in ("", "-1")
    )


def local_batch(fn: Callable[[Job], Result], batch_size: int) -> int:
    """Images computed together by the local engine: ``batch_size`` for a per-image function whose
    stages are ``batched`` (torch methods) when their forwards can be grouped (a CUDA GPU, or
    ``PRIVPIX_CROSS_BATCH=1``), else 1 (CPU: one image at a time, as the forwards would not be
    grouped there; see :mod:`privacy_cli.engines.batching`)."""
    stages = getattr(fn, "stages", None)
    if batch_size <= 1 or stages is None or not getattr(stages, "batched", False):
        return 1
    env = os.environ.get("PRIVPIX_CROSS_BATCH", "")
    if env in ("0", "1"):
        return batch_size if env == "1" else 1
    return batch_size if cuda_present() else 1


def run(
    jobs: Sequence[Job | Task], make_fn: FnFactory, out: Any, description: str, opts: EngineOptions
) -> tuple[int, list[Result]]:
    """Run every job here with :func:`privacy_cli.cli.batch.run_jobs`; jobs with URIs run staged."""
    from ..cli.batch import auto_workers, run_jobs

    fn = make_fn()
    workers = opts.workers or auto_workers(fn)
    batch = local_batch(fn, opts.batch_size)
    if all(isinstance(j, Job) for j in jobs):
        return run_jobs(list(jobs), fn, out, description, workers, batch)  # type: ignore[arg-type]
    tasks = as_tasks(jobs)
    # the runner walks Jobs; each stand-in carries its task's index, the task does the work
    stand_ins = [Job(Path(str(i)), None, Path(t.rel)) for i, t in enumerate(tasks)]
    return run_jobs(
        stand_ins,
        lambda j: run_task(tasks[int(str(j.input))], fn, opts.overwrite),
        out,
        description,
        workers,
    )
