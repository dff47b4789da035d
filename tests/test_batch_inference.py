"""Model forward passes batched across the images of a batch (issues 14 and 15).

:mod:`privacy_cli.engines.batching` (images computed together, forwards grouped), ``Stages.compute_many``
and the local engine's grouped pipeline (``iter_batched``), on real networks with seeded random
weights saved in the published layouts (the published weights are not available here) and real
photos (faces-id, downscaled). What is checked: images computed together write the bytes of images
computed one by one (on CPU, where forwards are not grouped); with grouping forced on CPU the
forwards really are grouped (one call for the faces / tiles / crops of every image), each image gets
its own slice (within the float rounding of a batched forward), and a failure stays with its image.
"""

from __future__ import annotations

import json
import uuid
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch

from privacy_cli.engines import batching

ROOT = Path(__file__).resolve().parents[1]
FACES_ID = ROOT.parent / "shared" / "datasets" / "faces-id"
pytestmark = pytest.mark.skipif(
    not (FACES_ID / "img1.jpg").exists(), reason=f"faces-id not found at {FACES_ID}"
)
NAMES = ["img1.jpg", "img3.jpg", "img8.jpg", "img12.jpg", "img20.jpg"]


def _photos(side: int) -> list[np.ndarray]:
    from PIL import Image

    out = []
    for name in NAMES:
        im = Image.open(FACES_ID / name).convert("RGB")
        im.thumbnail((side, side))
        out.append(np.asarray(im))
    return out


class _Counting:
    """A forward function that records the batch size of every call it gets."""

    def __init__(self, net: torch.nn.Module) -> None:
        self.net, self.calls = net, []

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if torch.isnan(x).any():
            raise ValueError("NaN input")
        self.calls.append(int(x.shape[0]))
        with torch.inference_mode():
            return self.net(x)


@pytest.fixture(scope="module")
def net() -> torch.nn.Module:
    from privacy_cli.models.stylization import AnimeGANv2Generator

    torch.manual_seed(0)
    return AnimeGANv2Generator().eval()


def test_forwards_of_images_computed_together_are_grouped_by_shape_in_order(net) -> None:
    torch.manual_seed(1)
    shapes = [(2, 3, 32, 48), (1, 3, 32, 48), (3, 3, 40, 40), (2, 3, 32, 48)]
    xs = [torch.rand(s) * 2 - 1 for s in shapes]
    alone = [net(x).detach() for x in xs]
    fn = _Counting(net)
    with batching.cross_batch(True):
        got = batching.run_together([lambda x=x: batching.forward("net", fn, x) for x in xs])
    assert sorted(fn.calls) == [3, 5]  # the three 32x48 requests (5 samples) in one call, 40x40 alone
    for a, g in zip(alone, got, strict=True):
        assert g.shape == a.shape and float((g - a).abs().max()) < 1e-4  # its own slice
    fn.calls.clear()
    with batching.cross_batch(False):  # CPU default: every request alone, bit for bit the same
        got = batching.run_together([lambda x=x: batching.forward("net", fn, x, limit=1) for x in xs])
    assert fn.calls == [1] * 8
    one_by_one = [batching.forward("net", fn, x, limit=1) for x in xs]  # outside a round: direct
    assert all(torch.equal(a, g) for a, g in zip(one_by_one, got, strict=True))


def test_a_failing_image_or_request_fails_alone(net) -> None:
    torch.manual_seed(2)
    xs = [torch.rand(1, 3, 32, 32) for _ in range(4)]
    xs[2][0, 0, 0, 0] = float("nan")  # this request makes the grouped forward raise
    fn = _Counting(net)

    def work(i: int) -> torch.Tensor:
        if i == 1:
            raise RuntimeError("image 1 broke before its forward")
        return batching.forward("net", fn, xs[i])

    with batching.cross_batch(True):
        got = batching.run_together([partial(work, i) for i in range(4)])
    assert isinstance(got[1], RuntimeError) and isinstance(got[2], ValueError)
    for i in (0, 3):
        assert float((got[i] - net(xs[i]).detach()).abs().max()) < 1e-4
    # the group of three failed, then each request ran alone: only the NaN one failed
    assert fn.calls == [1, 1]


def test_half_precision_only_on_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    assert batching.half_dtype("cpu") is None
    assert batching.half_dtype("cuda:0") is None  # float32 by default: half was slower on an H200
    monkeypatch.setenv("PRIVPIX_HALF", "fp16")
    assert batching.half_dtype("cuda:0") is torch.float16
    assert batching.half_dtype("cpu") is None
    monkeypatch.setenv("PRIVPIX_HALF", "bf16")
    assert batching.half_dtype("cuda:0") is torch.bfloat16
    monkeypatch.setenv("PRIVPIX_HALF", "0")
    assert batching.half_dtype("cuda:0") is None
    from privacy_cli.methods.stylize import half_allowed
    from privacy_cli.models.stylization import CartoonGANGenerator

    assert not half_allowed(CartoonGANGenerator()) and half_allowed(AnimeGANv2())


def AnimeGANv2() -> torch.nn.Module:  # noqa: N802 - a constructor
    from privacy_cli.models.stylization import AnimeGANv2Generator

    return AnimeGANv2Generator()


# ---------------------------------------------------------------------------------------------
# Through the engines: stylize (GAN style) on 5 photos of different sizes + one broken file


@pytest.fixture
def gan_weights(wenv) -> Path:  # noqa: ANN001
    from privacy_cli.models import build_model
    from privacy_cli.runtime import clear_runners
    from privacy_cli.weights import get_weights

    torch.manual_seed(0)
    wenv.wdir.mkdir(parents=True, exist_ok=True)
    gen = build_model("animegan2-paprika", pretrained=False)
    torch.save(gen.state_dict(), wenv.wdir / get_weights("animegan2-paprika").local_filename)
    clear_runners()
    yield wenv.wdir
    clear_runners()


def _inputs(tmp_path: Path) -> Path:
    from PIL import Image

    src = tmp_path / "in"
    src.mkdir()
    for name, rgb in zip(NAMES, _photos(160), strict=True):
        Image.fromarray(rgb).save(src / f"{Path(name).stem}.png")
    (src / "broken.png").write_bytes(b"\x89PNG not an image")
    return src


def _run(src: Path, out: Path, batch: int) -> tuple[dict[str, bytes], list[dict]]:
    from test_engine_staged import _common

    from privacy_cli import engines
    from privacy_cli.cli.batch import run_jobs
    from privacy_cli.cli.image_cmds import method_fn
    from privacy_cli.cli.output import Output

    common = _common([str(src)], str(out), detect=(), whole=True)
    fn = method_fn("stylize", common, {"style": "paprika", "work_size": 0, "tile": 64, "overlap": 16})
    jobs = engines.plan(common.inputs, "stylize", common.output)
    code, results = run_jobs(jobs, fn, Output(False, True), "stylize", 1, batch)
    assert code == 1  # the broken file
    return {p.name: p.read_bytes() for p in out.iterdir()}, [r.to_json() for r in results]


def test_local_engine_batches_write_the_bytes_of_one_by_one(gan_weights, tmp_path: Path) -> None:  # noqa: ANN001
    src = _inputs(tmp_path)
    one, rows1 = _run(src, tmp_path / "b1", 1)
    four, rows4 = _run(src, tmp_path / "b4", 4)
    assert len(one) == len(NAMES) and one == four  # CPU: forwards not grouped, same bytes
    assert [r["input"] for r in rows1] == [r["input"] for r in rows4]  # input order
    bad = [r for r in rows4 if r["status"] == "error"]
    assert len(bad) == 1 and "broken.png" in bad[0]["error"]

    # grouping forced on CPU: every image still gets its own output, within the rounding of a
    # batched forward (CPU kernels differ by batch size in the last bits)
    with batching.cross_batch(True):
        grouped, _ = _run(src, tmp_path / "g4", 4)
    from PIL import Image

    assert sorted(grouped) == sorted(one)
    for name in one:
        a = np.asarray(Image.open(tmp_path / "b1" / name)).astype(int)
        b = np.asarray(Image.open(tmp_path / "g4" / name)).astype(int)
        assert np.abs(a - b).max() <= 2 and (a != b).mean() < 0.01


def test_staged_model_stage_computes_the_ray_batch_together(gan_weights, tmp_path: Path) -> None:  # noqa: ANN001
    from test_engine_staged import _common

    from privacy_cli import engines
    from privacy_cli.cli.image_cmds import method_fn
    from privacy_cli.engines.staged import compute_items, decode_items, encode_items, pack, stages_for, unpack
    from privacy_cli.engines.tasks import as_tasks

    src = _inputs(tmp_path)
    local, _ = _run(src, tmp_path / "local", 1)
    out = tmp_path / "staged"
    common = _common([str(src)], str(out), detect=(), whole=True)
    opts = {"style": "paprika", "work_size": 0, "tile": 64, "overlap": 16}
    stages = stages_for(uuid.uuid4().hex, partial(method_fn, "stylize", common, opts))
    assert stages.batched
    tasks = as_tasks(engines.plan(common.inputs, "stylize", str(out)))
    decoded = [unpack(pack(it)) for it in decode_items(stages, tasks, overwrite=False)]
    computed = [unpack(pack(it)) for it in compute_items(stages, decoded)]
    rows = encode_items(stages, computed)
    assert sum(r["status"] == "ok" for r in rows) == len(NAMES)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == local
    json.dumps(rows)  # manifest rows stay JSON


# ---------------------------------------------------------------------------------------------
# deidentify private-encoder (faces of all images) and erase big-lama (crops of equal size)


@pytest.fixture
def count_forwards(monkeypatch: pytest.MonkeyPatch):  # noqa: ANN201
    """Call it to start recording the sample count of every network call made through
    ``batching.run_chunked`` (grouped or alone); returns the list it appends to."""

    def start() -> list[int]:
        calls: list[int] = []
        real = batching.run_chunked

        def counted(fn, args, limit):  # noqa: ANN001, ANN202
            calls.append(int(args[0].shape[0]))
            return real(fn, args, limit)

        monkeypatch.setattr(batching, "run_chunked", counted)
        return calls

    return start


def test_private_encoder_faces_of_all_images_in_one_forward(wenv, count_forwards) -> None:  # noqa: ANN001
    from privacy_cli.faceid import default_recognizer
    from privacy_cli.methods import deidentify as d
    from privacy_cli.models.psp import PSPPipeline

    torch.manual_seed(0)
    model = PSPPipeline("GradualStyleEncoder", 8)
    lat = model.decoder.mean_latent(64).repeat(model.decoder.n_latent, 1)
    (wenv.wdir / d.PE_FOLDER).mkdir(parents=True)
    ckpt = {"state_dict": model.state_dict(), "latent_avg": lat, "opts": {"target_id": 0.2}}
    torch.save(ckpt, wenv.wdir / d.PE_FOLDER / d.pe_checkpoint_name(0.2))
    d._PSP_CACHE.clear()
    cases = []
    for rgb in _photos(320)[:2]:
        x0, y0, x1, y1 = default_recognizer().locate(rgb)[0]
        mask = np.zeros(rgb.shape[:2], np.float32)
        mask[int(y0) : int(y1), int(x0) : int(x1)] = 1.0
        cases.append((rgb, mask))
    run = partial(d.deidentify, model="private-encoder", beta=0.2, judge=False)
    alone = [run(rgb, mask)[0] for rgb, mask in cases]
    calls = count_forwards()
    together = batching.run_together([partial(run, rgb, mask) for rgb, mask in cases])
    assert all(np.array_equal(a, t[0]) for a, t in zip(alone, together, strict=True))  # CPU: same bytes
    assert calls == [1, 1]
    calls.clear()
    with batching.cross_batch(True):
        grouped = batching.run_together([partial(run, rgb, mask) for rgb, mask in cases])
    assert calls == [2]  # one face per photo, both in one forward
    for a, (g, info) in zip(alone, grouped, strict=True):
        assert info["faces"][0]["backend"] == "private-encoder"
        assert np.abs(a.astype(int) - g.astype(int)).max() <= 1
    d._PSP_CACHE.clear()


def test_big_lama_crops_of_equal_size_in_one_forward(wenv, count_forwards) -> None:  # noqa: ANN001
    from privacy_cli.methods import erase as erase_mod
    from privacy_cli.models import build_model

    torch.manual_seed(0)
    gen = build_model("big-lama", pretrained=False)
    wenv.wdir.mkdir(parents=True, exist_ok=True)
    sd = {"generator." + k: v for k, v in gen.state_dict().items()}
    torch.save({"state_dict": sd, "pytorch-lightning_version": "1.2.9"}, wenv.wdir / "big-lama-ckpt.ckpt")
    erase_mod.clear_cache()
    from PIL import Image

    photos = [np.asarray(Image.fromarray(p).resize((96, 96))) for p in _photos(128)[:3]]
    mask = np.zeros((96, 96), np.float32)
    mask[30:60, 35:65] = 1.0
    alone = [erase_mod.erase(p, mask, model="big-lama")[0] for p in photos]
    calls = count_forwards()
    with batching.cross_batch(True):
        grouped = batching.run_together([partial(erase_mod.erase, p, mask, model="big-lama") for p in photos])
    assert calls == [3]
    for p, a, (g, info) in zip(photos, alone, grouped, strict=True):
        assert info["model_used"] == "big-lama"
        assert np.abs(a.astype(int) - g.astype(int)).max() <= 1
        assert np.array_equal(g[mask == 0], p[mask == 0])
    erase_mod.clear_cache()


def test_local_engine_groups_images_only_for_torch_methods_where_forwards_group(monkeypatch) -> None:  # noqa: ANN001
    from test_engine_staged import _common

    from privacy_cli.cli.image_cmds import method_fn
    from privacy_cli.engines.local import cuda_present, local_batch

    common = _common(["x.png"], "out", detect=(), whole=True)
    blur = method_fn("blur", common, {"radius": None})
    stylize = method_fn("stylize", common, {"style": "paprika"})
    monkeypatch.setenv("PRIVPIX_CROSS_BATCH", "1")
    assert (local_batch(blur, 8), local_batch(stylize, 8), local_batch(stylize, 1)) == (1, 8, 1)
    monkeypatch.setenv("PRIVPIX_CROSS_BATCH", "0")
    assert local_batch(stylize, 8) == 1
    monkeypatch.delenv("PRIVPIX_CROSS_BATCH")
    assert local_batch(stylize, 8) == (8 if cuda_present() else 1) == (8 if torch.cuda.is_available() else 1)
