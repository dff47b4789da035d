"""Execution engines: where the per-image work of an image command runs.

One interface for every command: an engine takes the planned jobs (:func:`plan`) and a *factory* of the
per-image function (``make_fn() -> one(job) -> Result``) and returns ``(exit code, results)``.

* ``local`` (default): this process, the batch runner of :mod:`privacy_cli.cli.batch` (threads with
  ``--workers``). Ray is never imported.
* ``ray``: a Ray Data pipeline on a local or existing Ray cluster (:mod:`privacy_cli.engines.ray`):
  an actor pool whose actors call ``make_fn()`` once (models load once per actor), batches of
  ``--batch-size`` images, retries when an actor dies, a manifest of per-image results next to the
  outputs that lets an interrupted job resume.

A per-image function may offer :class:`privacy_cli.cli.batch.Stages` (``fn.stages``: decode, compute,
encode). The local engine then pipelines a worker's images (decode ahead and encode behind in threads,
bounded queues); the Ray engine runs decode and encode as Ray Data CPU tasks around the model actors
(:mod:`privacy_cli.engines.staged`). Same bytes out either way. The neural methods' networks run
batched across the images of a batch (``--batch-size`` images per Ray call, and per group in the local
engine when a CUDA GPU is present; :mod:`privacy_cli.engines.batching`). Every image command runs through :func:`run_jobs`: blur,
pixelate, mask, erase, stylize, deidentify (whose k-Same donor pool, built by the driver over the whole
run, travels inside the factory), perturb and detect (no output image, so no manifest).

The factory (not the function) crosses process boundaries, so it must be picklable: a module-level
function bound with :func:`functools.partial` to picklable arguments (command options, a RegionSpec).
Inputs and outputs may be local paths or object-store URIs (``s3://``, ``gs://``, any fsspec
filesystem) with either engine; see :mod:`privacy_cli.engines.tasks`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from ..errors import UsageError
from ..io import Job
from ..pipeline import Result
from .tasks import Task, as_location, plan_tasks

ENGINES = ("local", "ray")
DEFAULT_BATCH_SIZE = 8

#: A picklable zero-argument callable that builds the per-image function (in the process that runs it).
FnFactory = Callable[[], Callable[[Job], Result]]


@dataclass
class EngineOptions:
    """How to run a batch. ``workers``: threads (local) or actors (ray); 0 = auto (local:
    :func:`privacy_cli.cli.batch.auto_workers` once the per-image function is built; ray: 1). ``batch_size``: images per
    Ray task, and images whose forward passes are batched together (:func:`privacy_cli.engines.local.local_batch`). ``ray_address``: None starts a local Ray cluster, ``auto`` joins a running one, or
    ``host:port`` / ``ray://host:port``. ``output``: the ``-o`` given (for the manifest's place)."""

    engine: str = "local"
    workers: int = 1
    batch_size: int = DEFAULT_BATCH_SIZE
    ray_address: str | None = None
    overwrite: bool = False
    output: str | None = None

    def __post_init__(self) -> None:
        if self.engine not in ENGINES:
            raise UsageError(f"--engine {self.engine}: use one of {', '.join(ENGINES)}")
        if self.engine != "ray" and self.ray_address:
            raise UsageError("--ray-address needs --engine ray")
        if self.batch_size < 1 or self.workers < 0:
            raise UsageError("--batch-size must be at least 1 and --workers at least 0 (0 = auto)")
        if self.engine == "ray" and self.workers == 0:
            self.workers = 1  # auto: one actor (more with --workers N)

    @classmethod
    def from_common(cls, common: Any) -> EngineOptions:
        """From an image command's CommonArgs (options it lacks take their defaults)."""
        return cls(
            engine=getattr(common, "engine", "local"),
            workers=getattr(common, "workers", 0),
            batch_size=getattr(common, "batch_size", DEFAULT_BATCH_SIZE),
            ray_address=getattr(common, "ray_address", None),
            overwrite=getattr(common, "overwrite", False),
            output=as_location(getattr(common, "output", None)),
        )


def plan(inputs: Iterable[str], command: str, output: Any = None) -> list[Job] | list[Task]:
    """Planned jobs for ``inputs``: :func:`privacy_cli.io.plan_outputs` for local paths, tasks when a URI
    is involved (same naming rules)."""
    return plan_tasks(inputs, command, output)


def run_jobs(
    jobs: Sequence[Job | Task],
    make_fn: FnFactory,
    out: Any,
    description: str,
    opts: EngineOptions,
) -> tuple[int, list[Result]]:
    """Run the per-image function built by ``make_fn`` over ``jobs`` on ``opts.engine``; print through
    ``out`` (a :class:`privacy_cli.cli.output.Output`). Returns (exit code 0/1, results)."""
    if opts.engine == "ray":
        from .ray import run as run_ray

        return run_ray(jobs, make_fn, out, description, opts)
    from .local import run as run_local

    return run_local(jobs, make_fn, out, description, opts)
