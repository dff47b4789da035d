"""The bench runner computes outputs and pixel metrics of several originals at once in threads: the
values, rows and cache counters must be those of one image at a time (real faces-id photos)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from privacy_cli.bench.datasets import open_dataset
from privacy_cli.bench.results import BenchConfig, MethodResult
from privacy_cli.bench.runner import BenchRunner
from privacy_cli.bench.specs import parse_methods, parse_metrics

FACES_ID = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "faces-id"
pytestmark = pytest.mark.usefixtures("offline_bench_env")
METRICS = "ssim,psnr,mae,mse,ssim_region,psnr_region,mae_region,mse_region,mae_outside,identity_similarity"


def _same(a: object, b: object) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return a == b or (math.isnan(a) and math.isnan(b))
    return a == b


def _assert_same_results(seq: list[MethodResult], par: list[MethodResult]) -> None:
    for a, b in zip(seq, par, strict=True):
        assert len(a.per_image) == len(b.per_image) > 0
        for ra, rb in zip(a.per_image, b.per_image, strict=True):
            assert ra.keys() == rb.keys()
            assert all(_same(ra[k], rb[k]) for k in ra), (a.label, ra, rb)
        assert {k: v.to_dict() for k, v in a.metrics.items()} == {
            k: v.to_dict() for k, v in b.metrics.items()
        }
        assert a.errors == b.errors


def test_originals_computed_ahead_in_threads_score_like_one_at_a_time(tmp_path: Path) -> None:
    if not (FACES_ID / "identities.csv").is_file():
        pytest.skip(f"shared faces-id dataset not found at {FACES_ID}")
    ds = open_dataset(FACES_ID, limit=4)
    specs = parse_methods("blur:radius=8,pixelate")

    def run(workers: int, cache: Path | None) -> tuple[BenchRunner, list[MethodResult]]:
        cfg = BenchConfig(metrics=parse_metrics(METRICS), max_side=320, cache_dir=cache, workers=workers)
        r = BenchRunner(ds, cfg)
        assert r.workers(specs, r.originals()) == workers
        return r, r.run_methods(specs)

    _, seq = run(1, None)
    r2, par = run(2, None)
    _assert_same_results(seq, par)
    assert [a.cache.to_json() for a in seq] == [b.cache.to_json() for b in par]
    m = seq[0].metrics
    assert m["ssim"].n == len(r2.originals()) and 0.5 < m["ssim"].value < 1.0
    assert m["ssim_region"].value < m["ssim"].value and m["mae_outside"].value == 0.0

    # a cold then a warm run with a disk cache, in threads: same values, nothing computed again
    _, cold = run(2, tmp_path / "cache")
    _assert_same_results(seq, cold)
    _, warm = run(2, tmp_path / "cache")
    _assert_same_results(seq, warm)
    assert all(w.cache.computed == 0 and w.cache.outputs_cached == len(r2.originals()) for w in warm)

    # a method with a torch model (or shared state) keeps one image at a time
    assert r2.workers(parse_methods("blur,erase"), r2.originals()) == 1
    assert r2.workers(parse_methods("pixelate,mask:learned=faces"), r2.originals()) == 1
