"""Batched model inference across the images of a batch (issues 14 and 15).

:func:`run_together` computes several images "together": each image's whole per-image computation
(detection, the method, paste-back) runs in its own thread, but only one thread runs at a time, in
input order, like coroutines: a thread gives up its turn only when it asks for a model forward pass
through :func:`forward` (or when it finishes). Once every image still computing is waiting on a forward,
the waiting requests are run together: requests for the same network (same ``key``) whose inputs
have the same per-sample shape, dtype and device are concatenated along the batch dimension (in input
order), run in chunks of at most :data:`MAX_GROUP` samples, and split back. Each thread then resumes
with its own slice. So the per-image code stays as it is (it detects per image, calls its network
with its faces, tiles or crops, and pastes back per image) and the model work of all images crosses
the network at once.

Properties:

* Deterministic: a flush happens only when every live image waits, so which requests share a forward
  depends only on the images of the batch, never on timing.
* Fail closed, per image: an exception in one image's code ends only that image (its thread); when a
  grouped forward raises (e.g. out of GPU memory), every request of the group is re-run alone, so
  only the request that fails by itself fails (its image gets an error Result; the others are kept).
* Same work as before outside :func:`run_together`: :func:`forward` then calls the network directly.
* Cross-image groups are formed on CUDA only (:func:`cross_batch_enabled`). On CPU every request runs
  alone, so the results are byte-identical to computing the images one by one: a batched forward on
  CPU is not always identical per sample to the unbatched one (the pSp encoder + StyleGAN2 decoder
  differ by up to 8e-6 on a [-1, 1] scale), and it brings no speed there. ``PRIVPIX_CROSS_BATCH=1``
  forces grouping on CPU too (tests, benchmarks); ``=0`` disables it everywhere.

Half precision (:func:`half_dtype`, :func:`autocast`): off by default (measured slower on an H200);
with ``PRIVPIX_HALF=fp16`` (or ``bf16``) on CUDA, networks that allow it run under ``torch.autocast``;
a half-precision output that is not finite everywhere is recomputed in float32. CPU is always
float32. LaMa's generator (FFT layers) always runs in float32 (:func:`privacy_cli.models.lama.lama_inpaint`).
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable, Hashable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

_LOCAL = threading.local()
#: most samples in one grouped forward (``PRIVPIX_MAX_BATCH``): a group of more runs in chunks of this
#: many, so e.g. 32 photos x 9 GAN tiles do not make one 288-tile activation (GPU memory stays bounded)
MAX_GROUP = 32


@dataclass
class _Request:
    """One forward asked for by the image ``index``: ``fn(*args)`` with ``n`` samples along dim 0."""

    index: int
    key: Hashable
    fn: Callable[..., Any]
    args: tuple[Any, ...]
    n: int
    limit: int | None
    result: Any = None
    error: BaseException | None = None


def cross_batch_enabled(device: str) -> bool:
    """Whether requests of different images on ``device`` (``"cpu"``, ``"cuda:0"``...) are run in one
    forward: on CUDA by default; ``PRIVPIX_CROSS_BATCH=1`` / ``0`` forces it on / off."""
    env = os.environ.get("PRIVPIX_CROSS_BATCH", "")
    if env in ("0", "1"):
        return env == "1"
    return device.startswith("cuda")


def half_dtype(device: str) -> Any:
    """The reduced precision for networks that allow it on ``device``: None (float32, the default),
    ``torch.float16`` (``PRIVPIX_HALF=fp16``) or ``torch.bfloat16`` (``PRIVPIX_HALF=bf16``) on CUDA;
    always None on CPU/MPS. float32 is the default because half precision was measured slower on an
    H200 (cuDNN's TF32 already runs float32 convolutions on tensor cores; autocast adds casts):
    AnimeGANv2 3.0-3.5 vs 2.8-5.2 photos/s, Private-Encoder 1024 15.6-16.5 vs 17.8-18.7 photos/s
    (docs/performance.md, "On a GPU")."""
    if not device.startswith("cuda"):
        return None
    mode = os.environ.get("PRIVPIX_HALF", "0").lower()
    if mode in ("0", "off", "fp32", "float32", "no", ""):
        return None
    import torch

    return torch.bfloat16 if mode in ("bf16", "bfloat16") else torch.float16


def autocast(device: str) -> Any:
    """``torch.autocast`` in :func:`half_dtype` on CUDA, else a no-op context."""
    dtype = half_dtype(device)
    if dtype is None:
        return contextlib.nullcontext()
    import torch

    return torch.autocast("cuda", dtype=dtype)


def finite_or_float32(
    fn: Callable[..., Any], half: Callable[..., Any], *args: Any, device: str = "cpu"
) -> Any:
    """``half(*args)`` when :func:`half_dtype` applies on ``device`` and its output is finite
    everywhere, else ``fn(*args)`` (float32). Outputs: a tensor or a tuple of tensors."""
    if half_dtype(device) is None:
        return fn(*args)
    import torch

    out = half(*args)
    outs = out if isinstance(out, tuple) else (out,)
    if all(bool(torch.isfinite(o).all()) for o in outs):
        return out
    return fn(*args)


def _cat(parts: Sequence[Any]) -> Any:
    import torch

    if isinstance(parts[0], tuple):
        return tuple(torch.cat([p[i] for p in parts]) for i in range(len(parts[0])))
    return parts[0] if len(parts) == 1 else torch.cat(list(parts))


def _slice(out: Any, a: int, b: int) -> Any:
    return tuple(o[a:b] for o in out) if isinstance(out, tuple) else out[a:b]


def run_chunked(fn: Callable[..., Any], args: Sequence[Any], limit: int | None) -> Any:
    """``fn(*args)`` on chunks of at most ``limit`` samples along dim 0 (None: all at once),
    outputs concatenated along dim 0."""
    n = int(args[0].shape[0])
    if limit is None or n <= limit:
        return fn(*args)
    return _cat([fn(*(a[i : i + limit] for a in args)) for i in range(0, n, limit)])


def _signature(args: Sequence[Any]) -> tuple:
    return tuple((tuple(a.shape[1:]), str(a.dtype), str(a.device)) for a in args)


class _Round:
    """The images of one :func:`run_together` call: whose turn it is, who waits, what is pending."""

    def __init__(self, n: int) -> None:
        self.cond = threading.Condition()
        self.state = ["ready"] * n  # ready | waiting | done
        self.turn: int | None = 0 if n else None
        self.pending: list[_Request] = []

    # -- called with self.cond held -------------------------------------------------------------
    def _pass_turn(self) -> None:
        """Give the turn to the first ready image; when none is ready but some wait, flush first."""
        while True:
            ready = [i for i, s in enumerate(self.state) if s == "ready"]
            if ready:
                self.turn = ready[0]
                self.cond.notify_all()
                return
            if not self.pending:
                self.turn = None
                self.cond.notify_all()
                return
            pending, self.pending = self.pending, []
            self.cond.release()  # every other image is waiting: nobody else runs meanwhile
            try:
                _flush(pending)
            finally:
                self.cond.acquire()
            for r in pending:
                self.state[r.index] = "ready"

    def wait_turn(self, index: int) -> None:
        while self.turn != index:
            self.cond.wait()

    # -- called by the images' threads ----------------------------------------------------------
    def submit(self, req: _Request) -> Any:
        with self.cond:
            self.pending.append(req)
            self.state[req.index] = "waiting"
            self._pass_turn()
            self.wait_turn(req.index)
        if req.error is not None:
            raise req.error
        return req.result

    def finish(self, index: int) -> None:
        with self.cond:
            self.state[index] = "done"
            self._pass_turn()


def _flush(pending: list[_Request]) -> None:
    """Run ``pending`` requests: same key and input signature together (when the device allows
    grouping), each request alone otherwise or when the group's forward raises."""
    groups: dict[tuple, list[_Request]] = {}
    for r in sorted(pending, key=lambda r: r.index):
        device = str(getattr(r.args[0], "device", "cpu"))
        solo = r.key is None or not cross_batch_enabled(device)
        groups.setdefault((id(r), None) if solo else (r.key, _signature(r.args)), []).append(r)
    for reqs in groups.values():
        if len(reqs) > 1:
            try:
                cap = int(os.environ.get("PRIVPIX_MAX_BATCH", MAX_GROUP))
                limits = [r.limit for r in reqs]
                limit = min(cap, sum(limits)) if None not in limits else cap  # type: ignore[arg-type]
                out = run_chunked(
                    reqs[0].fn, [_cat([r.args[i] for r in reqs]) for i in range(len(reqs[0].args))], limit
                )
                start = 0
                for r in reqs:
                    r.result = _slice(out, start, start + r.n)
                    start += r.n
                continue
            except Exception as e:  # noqa: BLE001 - each request is re-run alone below, its own error kept
                if "out of memory" in str(e):
                    import torch

                    torch.cuda.empty_cache()
        for r in reqs:
            try:
                r.result = run_chunked(r.fn, r.args, r.limit)
            except BaseException as e:  # noqa: BLE001 - re-raised in the image's own thread
                r.error = e


def forward(key: Hashable | None, fn: Callable[..., Any], *args: Any, limit: int | None = None) -> Any:
    """``fn(*args)``: a network's forward pass on tensors whose dim 0 is the sample dimension (each
    sample's output must depend on that sample only). Outputs: a tensor or a tuple of tensors with
    the same dim 0. ``limit``: at most this many samples per call of ``fn`` (None: all).

    Inside :func:`run_together`, requests of the images of the batch with the same ``key`` (e.g.
    ``("stylize", id(model))``) and equal per-sample shapes are run together (see the module
    docstring); ``key`` None, or outside :func:`run_together`: ``fn`` runs here, directly.
    ``fn`` must set its own grad / inference mode (it may run in another image's thread)."""
    rnd: _Round | None = getattr(_LOCAL, "round", None)
    if rnd is None or key is None:
        return run_chunked(fn, args, limit)
    n = int(args[0].shape[0])
    return rnd.submit(_Request(_LOCAL.index, key, fn, tuple(args), n, limit))


def in_round() -> bool:
    """True inside one image's computation of :func:`run_together`."""
    return getattr(_LOCAL, "round", None) is not None


def run_together(work: Sequence[Callable[[], Any]]) -> list[Any]:
    """Run each ``work[i]()`` (one image's computation) as described in the module docstring; returns
    their results in order. A ``work`` that raises has its exception as its result (the others go
    on). One item, or none: runs directly."""
    if len(work) <= 1:
        return [_catching(w) for w in work]
    rnd = _Round(len(work))
    results: list[Any] = [None] * len(work)

    def body(i: int) -> None:
        _LOCAL.round, _LOCAL.index = rnd, i
        try:
            with rnd.cond:
                rnd.wait_turn(i)
            results[i] = _catching(work[i])
        finally:
            _LOCAL.round = None
            rnd.finish(i)

    threads = [threading.Thread(target=body, args=(i,), name=f"privpix-batch-{i}") for i in range(len(work))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def _catching(w: Callable[[], Any]) -> Any:
    try:
        return w()
    except BaseException as e:  # noqa: BLE001 - handed back as this image's result
        return e


@contextlib.contextmanager
def cross_batch(enabled: bool) -> Iterator[None]:
    """Force cross-image grouping on (or off) for the duration (sets ``PRIVPIX_CROSS_BATCH``)."""
    old = os.environ.get("PRIVPIX_CROSS_BATCH")
    os.environ["PRIVPIX_CROSS_BATCH"] = "1" if enabled else "0"
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("PRIVPIX_CROSS_BATCH", None)
        else:
            os.environ["PRIVPIX_CROSS_BATCH"] = old
