"""The local engine: this process, the shared batch runner (``--workers`` threads)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..io import Job
from ..pipeline import Result
from .tasks import Task, as_tasks, run_task

if TYPE_CHECKING:
    from . import EngineOptions, FnFactory


def run(
    jobs: Sequence[Job | Task], make_fn: FnFactory, out: Any, description: str, opts: EngineOptions
) -> tuple[int, list[Result]]:
    """Run every job here with :func:`privacy_cli.cli.batch.run_jobs`; jobs with URIs run staged."""
    from ..cli.batch import auto_workers, run_jobs

    fn = make_fn()
    workers = opts.workers or auto_workers(fn)
    if all(isinstance(j, Job) for j in jobs):
        return run_jobs(list(jobs), fn, out, description, workers)  # type: ignore[arg-type]
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
