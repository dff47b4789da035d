"""Bench quality / content-difference / utility metrics against independent references.

SSIM and PSNR against scikit-image with the papers' settings, LPIPS against the `lpips` package and
FID against `pytorch-fid` with identical seeded weights, content difference against LaMa's loss
definitions (LAMA_NOTES.md) written out here, and unavailable-metric reporting without weights.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from skimage.metrics import peak_signal_noise_ratio, structural_similarity
from torch import nn

from privacy_cli.bench import features as FT
from privacy_cli.bench import metrics as M
from privacy_cli.errors import InputError, RegionError


def _pair(b=3, h=48, w=40, noise=0.08, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    # smooth-ish content (SSIM on pure noise is degenerate) plus noise
    base = F.interpolate(torch.rand(b, 3, h // 4, w // 4, generator=g), size=(h, w), mode="bilinear")
    target = base.to(dtype)
    preds = (target + noise * torch.randn(b, 3, h, w, generator=g).to(dtype)).clamp(0, 1)
    return preds, target


def _box_mask(b, h, w, box=(10, 8, 30, 28)):
    x0, y0, x1, y1 = box
    m = torch.zeros(b, 1, h, w)
    m[:, :, y0:y1, x0:x1] = 1
    return m


def _hwc(t: torch.Tensor) -> np.ndarray:
    return t.permute(1, 2, 0).double().numpy()


@pytest.fixture
def no_weights(tmp_path, monkeypatch):
    """Empty weights dir and HF cache, offline: every registry checkpoint is missing."""
    (tmp_path / "w").mkdir()
    (tmp_path / "hf").mkdir()
    monkeypatch.setenv("PRIVPIX_WEIGHTS_DIR", str(tmp_path / "w"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    FT.clear_caches()
    yield tmp_path
    FT.clear_caches()


# --------------------------------------------------------------------------------------------
# SSIM / PSNR / MAE / MSE


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("shape", [(48, 40), (33, 64)])
def test_ssim_matches_scikit_image(dtype, shape):
    preds, target = _pair(3, *shape, dtype=dtype)
    got = M.ssim(preds, target, reduction="none")
    for i in range(preds.shape[0]):
        want = structural_similarity(
            _hwc(target[i]),
            _hwc(preds[i]),
            gaussian_weights=True,
            sigma=1.5,
            use_sample_covariance=False,
            data_range=1,
            channel_axis=2,
        )
        assert abs(float(got[i]) - want) <= 1e-4, (i, float(got[i]), want)
    assert 0.3 < float(got.mean()) < 0.99  # a real, non-trivial comparison
    assert torch.allclose(M.ssim(preds, target), got.mean())
    assert float(M.ssim(target, target)) == pytest.approx(1.0, abs=1e-6)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_ssim_map_equals_torchmetrics_full_image(dtype):
    """The CPU path (OpenCV's separable Gaussian) reproduces torchmetrics' map, borders included."""
    from torchmetrics.functional.image import structural_similarity_index_measure

    preds, target = _pair(2, 45, 70, dtype=dtype)
    _, want = structural_similarity_index_measure(
        preds,
        target,
        gaussian_kernel=True,
        sigma=1.5,
        kernel_size=11,
        data_range=1.0,
        reduction="none",
        return_full_image=True,
    )
    got = M.ssim_map(preds, target)
    assert got.shape == want.shape and got.dtype == dtype
    # float32 sums in a different order, amplified where local variance is ~0: agreement relative to
    # the map's [-1, 1] scale per pixel, and much closer on the image means that SSIM reports
    assert float((got - want).abs().max()) <= (1e-3 if dtype == torch.float32 else 1e-9)
    mean_diff = (got.mean(dim=(1, 2, 3)) - want.mean(dim=(1, 2, 3))).abs().max()
    assert float(mean_diff) <= (1e-5 if dtype == torch.float32 else 1e-12)


def test_region_ssim_is_the_map_mean_inside_the_mask():
    preds, target = _pair(2, 48, 40)
    mask = _box_mask(2, 48, 40)
    got = M.ssim(preds, target, mask, reduction="none")
    for i in range(2):
        _, smap = structural_similarity(
            _hwc(target[i]),
            _hwc(preds[i]),
            gaussian_weights=True,
            sigma=1.5,
            use_sample_covariance=False,
            data_range=1,
            channel_axis=2,
            full=True,
        )
        inside = mask[i, 0].numpy().astype(bool)
        assert abs(float(got[i]) - smap[inside].mean()) <= 1e-4
    ones = torch.ones(2, 1, 48, 40)
    assert torch.allclose(
        M.ssim(preds, target, ones, reduction="none"), M.ssim(preds, target, reduction="none")
    )


def test_psnr_mse_mae_match_references():
    preds, target = _pair(3, 40, 36, noise=0.05)
    mask = _box_mask(3, 40, 36)
    p = M.psnr(preds, target, reduction="none")
    for i in range(3):
        want = peak_signal_noise_ratio(_hwc(target[i]), _hwc(preds[i]), data_range=1)
        assert abs(float(p[i]) - want) <= 1e-4
        d = _hwc(preds[i]) - _hwc(target[i])
        assert float(M.mse(preds, target, reduction="none")[i]) == pytest.approx((d**2).mean(), abs=1e-7)
        assert float(M.mae(preds, target, reduction="none")[i]) == pytest.approx(np.abs(d).mean(), abs=1e-7)
        inside = mask[i, 0].numpy().astype(bool)
        assert float(M.mse(preds, target, mask, reduction="none")[i]) == pytest.approx(
            (d[inside] ** 2).mean(), abs=1e-7
        )
        assert float(M.psnr(preds, target, mask, reduction="none")[i]) == pytest.approx(
            10 * np.log10(1 / (d[inside] ** 2).mean()), abs=1e-4
        )
    assert torch.isinf(M.psnr(target, target, reduction="none")).all()
    assert torch.isnan(M.psnr(target, target))  # the mean is over finite values; none here


def test_mask_method_changes_only_the_region():
    """A 'mask' (black fill) obfuscation: region MAE > 0, MAE outside the region exactly 0."""
    _, target = _pair(2, 48, 40)
    mask = _box_mask(2, 48, 40)
    filled = target * (1 - mask)
    inside = M.mae(filled, target, mask, reduction="none")
    outside = M.mae(filled, target, 1 - mask, reduction="none")
    assert (inside > 0.1).all()
    assert (outside == 0).all()
    whole = M.mae(filled, target, reduction="none")
    frac = mask.mean(dim=(1, 2, 3))
    assert torch.allclose(whole, inside * frac, atol=1e-6)
    assert torch.isinf(M.psnr(filled, target, 1 - mask, reduction="none")).all()
    cd = M.content_difference(target, filled, mask, which=("mae",))
    assert cd["mae"].value == pytest.approx(float(inside.mean()), abs=1e-6)
    assert M.content_difference(target, filled, 1 - mask, which=("mae",))["mae"].value == 0.0


def test_metric_classes_accumulate_per_image_values():
    preds, target = _pair(4, 40, 40)
    mask = _box_mask(4, 40, 40)
    mask[3] = 0  # one image without a region
    for cls, fn in ((M.SSIM, M.ssim), (M.PSNR, M.psnr), (M.MAE, M.mae), (M.MSE, M.mse)):
        m = cls()
        m.update(preds[:2], target[:2])
        m.update(preds[2:], target[2:])
        r = m.compute()
        assert r.available and r.n == 4
        assert r.value == pytest.approx(float(fn(preds, target)), abs=1e-6)
        assert r.per_item == pytest.approx(fn(preds, target, reduction="none").double().tolist(), abs=1e-6)
        reg = cls(region=True)
        reg.update(preds, target, mask)
        rr = reg.compute()
        assert rr.name.endswith("_region") and rr.n == 3
        assert np.isnan(rr.per_item[3])
        assert any("without a region" in n for n in rr.notes)
        with pytest.raises(RegionError):
            reg.update(preds, target)
    p = M.PSNR()
    p.update(target[:1], target[:1])
    p.update(preds[:1], target[:1])
    r = p.compute()
    assert r.n == 1 and np.isfinite(r.value) and any("identical" in n for n in r.notes)
    d = r.to_dict()
    assert d["available"] is True and d["unit"] == "dB"


def test_input_checks_raise_typed_errors():
    preds, target = _pair(2, 40, 40)
    with pytest.raises(InputError):
        M.ssim(preds, target[:, :, :30])
    with pytest.raises(InputError):
        M.mae(preds * 255, target)
    with pytest.raises(InputError):
        M.ssim(preds[..., :8, :8], target[..., :8, :8])
    with pytest.raises(RegionError):
        M.mse(preds, target, torch.ones(2, 1, 20, 20))
    with pytest.raises(InputError):
        M.mse(preds.numpy(), target)


# --------------------------------------------------------------------------------------------
# LPIPS


def _seeded_backbone(net: str) -> nn.Module:
    import torchvision

    torch.manual_seed(1234)
    return (torchvision.models.alexnet if net == "alex" else torchvision.models.vgg16)(weights=None).eval()


@pytest.mark.parametrize("net", ["alex", "vgg"])
def test_lpips_matches_lpips_package_with_same_backbone(net, monkeypatch):
    import lpips as lpips_pkg
    from lpips import pretrained_networks as pn

    backbone = _seeded_backbone(net)
    # the reference: lpips builds its own slices from the same torchvision model
    tv_name = "alexnet" if net == "alex" else "vgg16"
    monkeypatch.setattr(pn.tv, tv_name, lambda *a, **k: backbone)
    ref = lpips_pkg.LPIPS(net=net, pretrained=True, pnet_rand=False, verbose=False).eval()
    ours = FT.build_lpips(net, backbone_state=backbone.state_dict())

    preds, target = _pair(2, 64, 64, noise=0.1)
    with torch.no_grad():
        want = ref(preds, target, normalize=True).flatten()
    got = M.lpips(preds, target, net=net, reduction="none", model=ours)
    assert torch.allclose(got, want, atol=1e-6), (got, want)
    assert float(got.min()) > 1e-3  # non-trivial distance
    assert float(M.lpips(target, target, net=net, model=ours)) == pytest.approx(0.0, abs=1e-7)

    # region variant: mean of lpips' own spatial map inside the mask
    mask = _box_mask(2, 64, 64, (8, 16, 40, 48))
    ref_sp = lpips_pkg.LPIPS(net=net, pretrained=True, pnet_rand=False, spatial=True, verbose=False).eval()
    with torch.no_grad():
        smap = ref_sp(preds, target, normalize=True)
    want_r = (smap * mask).sum(dim=(1, 2, 3)) / mask.sum(dim=(1, 2, 3))
    got_r = M.lpips(preds, target, net=net, mask=mask, reduction="none", model=ours)
    assert torch.allclose(got_r, want_r, atol=1e-6)

    metric = M.LPIPS(net, model=ours)
    metric.update(preds, target)
    r = metric.compute()
    assert r.name == f"lpips_{net}" and r.value == pytest.approx(float(want.mean()), abs=1e-6)


# --------------------------------------------------------------------------------------------
# FID


def test_frechet_distance_matches_pytorch_fid():
    from pytorch_fid.fid_score import calculate_frechet_distance

    rng = np.random.default_rng(0)
    a = rng.normal(size=(400, 32)) @ rng.normal(size=(32, 32))
    b = rng.normal(loc=0.3, size=(300, 32)) @ rng.normal(size=(32, 32))
    mu1, s1 = a.mean(0), np.cov(a, rowvar=False)
    mu2, s2 = b.mean(0), np.cov(b, rowvar=False)
    want = calculate_frechet_distance(mu1, s1, mu2, s2)
    got = M.frechet_distance(mu1, s1, mu2, s2)
    assert got == pytest.approx(want, rel=1e-7)
    assert M.fid_from_features(a, b) == pytest.approx(want, rel=1e-7)
    assert M.fid_from_features(a, a) == pytest.approx(0.0, abs=1e-6)
    # rank-deficient covariances (N < D), where the FID warning applies
    small = a[:20]
    want_s = calculate_frechet_distance(small.mean(0), np.cov(small, rowvar=False), mu2, s2)
    assert M.fid_from_features(small, b) == pytest.approx(want_s, rel=1e-5)
    with pytest.raises(InputError):
        M.fid_from_features(a[:1], b)


def test_fid_pipeline_matches_pytorch_fid(tmp_path, monkeypatch):
    """Same seeded FID Inception in pytorch-fid's own pipeline (PNG files -> get_activations ->
    statistics -> Fréchet distance) and in ours (tensors -> batched, cached features -> FID)."""
    import pytorch_fid.inception as pfi
    from pytorch_fid.fid_score import (
        calculate_activation_statistics,
        calculate_frechet_distance,
        get_activations,
    )

    torch.manual_seed(7)
    core = FT._fid_core()
    with torch.no_grad():  # keep activations alive through ~90 untrained layers
        for m in core.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_var.fill_(0.15)
                m.running_mean.zero_()
    state = {k: v.clone() for k, v in core.state_dict().items()}
    monkeypatch.setattr(pfi, "fid_inception_v3", lambda: core)
    ref64 = pfi.InceptionV3([pfi.InceptionV3.BLOCK_INDEX_BY_DIM[64]]).eval()
    ref2048 = pfi.InceptionV3([pfi.InceptionV3.BLOCK_INDEX_BY_DIM[2048]]).eval()
    monkeypatch.undo()

    rng = np.random.default_rng(3)
    real_files, fake_files, reals, fakes = [], [], [], []
    for i in range(8):
        img = (rng.random((40, 48, 3)) * 255).astype(np.uint8)
        noisy = np.clip(img.astype(int) // 2 + rng.integers(0, 60, img.shape), 0, 255).astype(np.uint8)
        for arr, files, lst, tag in ((img, real_files, reals, "r"), (noisy, fake_files, fakes, "f")):
            p = tmp_path / f"{tag}{i}.png"
            Image.fromarray(arr).save(p)
            files.append(str(p))
            lst.append(arr)

    # full FID on pytorch-fid's 64-d block (cheap: the first three convolutions)
    mu_r, s_r = calculate_activation_statistics(real_files, ref64, batch_size=8, dims=64, num_workers=0)
    mu_f, s_f = calculate_activation_statistics(fake_files, ref64, batch_size=8, dims=64, num_workers=0)
    want = calculate_frechet_distance(mu_r, s_r, mu_f, s_f)
    ours64 = FT.build_fid_inception(state_dict=state, dims=64)
    cache = FT.FeatureCache(tmp_path / "cache")
    metric = M.FID(model=ours64, batch_size=3, cache=cache, dims=64)
    keys = [f"r{i}" for i in range(8)]
    metric.update(FT.to_tensor(fakes[:5]), FT.to_tensor(reals[:5]), target_keys=keys[:5])
    metric.update(FT.to_tensor(fakes[5:]), FT.to_tensor(reals[5:]), target_keys=keys[5:])
    feats = metric._real.features()
    assert np.allclose(feats.mean(0), mu_r, atol=1e-5)
    r = metric.compute()
    assert r.available and r.n == 8
    assert want > 1.0 and r.value == pytest.approx(want, rel=1e-4)
    assert any("< 65" in n for n in r.notes) and any("non-standard" in n for n in r.notes)
    # originals now come from the cache: same features without running the network
    again = FT.FIDFeatures(model=None, cache=cache, dims=64)
    again.add(FT.to_tensor(reals[0]), keys=["r0"])
    assert np.array_equal(again.features()[0], feats[0]) and again.model is None

    # the standard 2048-d pool3 features of the full network
    want2048 = get_activations(real_files[:2], ref2048, batch_size=2, dims=2048, num_workers=0)
    ours = FT.FIDFeatures(FT.build_fid_inception(state_dict=state))
    ours.add(FT.to_tensor(reals[:2]))
    got2048 = ours.features()
    assert got2048.shape == (2, 2048)
    assert np.abs(want2048[0] - want2048[1]).max() > 1e-2  # input-dependent features
    assert np.allclose(got2048, want2048, atol=1e-5)

    one = M.FID(model=ours64, dims=64)
    one.update(FT.to_tensor(fakes[:1]), FT.to_tensor(reals[:1]))
    assert not one.compute().available


# --------------------------------------------------------------------------------------------
# content difference (ERASER Table 3)


def _lama():
    return pytest.importorskip("privacy_cli.models.lama", reason="LaMa architectures not installed")


def _seeded_nets():
    L = _lama()
    torch.manual_seed(11)
    disc = L.NLayerDiscriminator().eval()
    enc = L.ResNetPLEncoder().eval()
    from torchvision.models.vgg import cfgs, make_layers

    vgg = nn.Module()
    vgg.features = make_layers(cfgs["E"])  # torchvision's VGG19 trunk (classifier not needed)
    return disc, enc, vgg.eval()


def _reference_vgg_feats(vgg: nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    """LAMA_NOTES: VGG19 features[:30], max-pools -> 2x2/2 avg-pools, ImageNet norm, 13 ReLUs."""
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    h = (x - mean) / std
    outs = []
    for layer in list(vgg.features)[:30]:
        if isinstance(layer, nn.MaxPool2d):
            h = F.avg_pool2d(h, 2, 2)
        elif isinstance(layer, nn.ReLU):
            h = F.relu(h)
            outs.append(h)
        else:
            h = layer(h)
    assert len(outs) == 13
    return outs


def test_content_difference_matches_lama_loss_definitions():
    disc, enc, vgg = _seeded_nets()
    nets = M.ContentNets(
        discriminator=disc,
        resnetpl=FT.ResNetPLFeatures(enc),
        vgg=FT.VGGPerceptualFeatures(FT._features_state(vgg.state_dict(), "vgg19")),
    )
    preds, target = _pair(2, 48, 48, noise=0.15, seed=5)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    with torch.no_grad():
        # whole image: LaMa's unmasked losses exactly
        got = M.content_difference(target, preds, None, nets=nets)
        logits_p, fp = disc(preds)
        _, ft = disc(target)
        fm = np.mean([F.mse_loss(a, b).item() for a, b in zip(fp, ft, strict=True)])
        adv = F.softplus(-logits_p).mean().item()
        vp, vt = _reference_vgg_feats(vgg, preds), _reference_vgg_feats(vgg, target)
        plv = np.mean(
            [sum(((a - b) ** 2)[i].mean().item() for a, b in zip(vp, vt, strict=True)) for i in range(2)]
        )
        rp, rt = enc((preds - mean) / std), enc((target - mean) / std)
        plr = np.mean(
            [sum(((a - b) ** 2)[i].mean().item() for a, b in zip(rp, rt, strict=True)) for i in range(2)]
        )
    assert got["fm"].value == pytest.approx(fm, rel=1e-5)
    assert got["adv"].value == pytest.approx(adv, rel=1e-5)
    assert got["pl_v"].value == pytest.approx(plv, rel=1e-5)
    assert got["pl_r"].value == pytest.approx(plr, rel=1e-5)
    assert all(got[k].value > 0 for k in M.CONTENT_METRICS)
    weighted = M.content_difference(target, preds, None, which=("fm", "pl_r"), nets=nets, lama_weights=True)
    assert weighted["fm"].value == pytest.approx(100 * fm, rel=1e-5)
    assert weighted["pl_r"].value == pytest.approx(30 * plr, rel=1e-5)

    # region: the bilinearly resized mask weights each feature cell
    mask = _box_mask(2, 48, 48, (12, 12, 36, 30))
    with torch.no_grad():
        reg = M.content_difference(target, preds, mask, nets=nets)
        fm_r = []
        for a, b in zip(fp, ft, strict=True):
            w = F.interpolate(mask, size=a.shape[-2:], mode="bilinear", align_corners=False)
            fm_r.append(((a - b) ** 2 * w).sum(dim=(1, 2, 3)) / (w.sum(dim=(1, 2, 3)) * a.shape[1]))
        w = F.interpolate(mask, size=logits_p.shape[-2:], mode="nearest")
        adv_r = (F.softplus(-logits_p) * w).sum(dim=(1, 2, 3)) / w.sum(dim=(1, 2, 3))
    assert reg["fm"].value == pytest.approx(float(torch.stack(fm_r).mean(0).mean()), rel=1e-5)
    assert reg["adv"].value == pytest.approx(float(adv_r.mean()), rel=1e-5)
    img = M.content_difference(target, preds, mask, which=("fm",), nets=nets, reduction="image")
    assert img["fm"].value < reg["fm"].value  # divided by all cells, not the region's

    # a processed image equal to the original outside the region differs only inside it
    filled = target * (1 - mask)
    which = ("mae", "fm", "pl_v", "pl_r")
    inside = M.content_difference(target, filled, mask, which=which, nets=nets)
    same = M.content_difference(target, target, mask, which=which, nets=nets)
    for k in which:
        assert inside[k].value > 0 and same[k].value == pytest.approx(0.0, abs=1e-9)

    acc = M.ContentDifference(which=("mae", "fm", "adv"), nets=nets)
    acc.update(preds[:1], target[:1], mask[:1])
    acc.update(preds[1:], target[1:], mask[1:])
    res = acc.compute()
    for k in ("mae", "fm", "adv"):
        assert res[k].value == pytest.approx(reg[k].value, rel=1e-5)


def test_content_difference_loads_the_discriminator_from_the_registry(tmp_path, monkeypatch):
    """A test-made big-lama-with-discr Lightning checkpoint in the weights dir is used for FM/Adv."""
    pytest.importorskip("privacy_cli.weights.loading", reason="weights support not installed")
    L = _lama()
    torch.manual_seed(21)
    disc = L.NLayerDiscriminator().eval()
    ckpt = {"state_dict": {f"discriminator.{k}": v for k, v in disc.state_dict().items()}, "epoch": 3}
    wdir = tmp_path / "w"
    wdir.mkdir()
    torch.save(ckpt, wdir / "big-lama-discr.ckpt")
    monkeypatch.setenv("PRIVPIX_WEIGHTS_DIR", str(wdir))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    FT.clear_caches()
    try:
        preds, target = _pair(1, 48, 48, noise=0.2)
        mask = _box_mask(1, 48, 48)
        got = M.content_difference(target, preds, mask, which=("fm", "adv"))
        want = M.content_difference(
            target, preds, mask, which=("fm", "adv"), nets=M.ContentNets(discriminator=disc)
        )
        for k in ("fm", "adv"):
            assert got[k].available, got[k]
            assert got[k].value == pytest.approx(want[k].value, rel=1e-6)
    finally:
        FT.clear_caches()


# --------------------------------------------------------------------------------------------
# missing weights -> unavailable, never zero


def test_missing_weights_are_reported_unavailable_with_fetch_command(no_weights):
    preds, target = _pair(2, 64, 64)
    mask = _box_mask(2, 64, 64)
    expect = {"lpips_alex": "alexnet", "lpips_vgg": "vgg16", "fid": "fid-inception"}
    metrics = M.quality_metrics(["lpips_alex", "lpips_vgg", "fid", "ssim"])
    for m in metrics.values():
        m.update(preds, target)
    for name, weights in expect.items():
        r = metrics[name].compute()
        assert not r.available and r.value is None, r
        assert r.fetch == f"privpix weights fetch {weights}", r
        assert r.to_dict()["available"] is False and r.to_dict()["value"] is None
    assert metrics["ssim"].compute().available

    cd = M.content_difference(target, preds, mask)
    assert cd["mae"].available and cd["mae"].value > 0
    for k in ("fm", "adv", "pl_v", "pl_r"):
        assert not cd[k].available and cd[k].value is None
        if "not installed" not in cd[k].reason and "not registered" not in cd[k].reason:
            assert cd[k].fetch and cd[k].fetch.startswith("privpix weights fetch "), cd[k]
    acc = M.ContentDifference()
    acc.update(preds, target, mask)
    assert not acc.compute()["pl_v"].available


# --------------------------------------------------------------------------------------------
# classifier utility (paper 002)


def test_topk_accuracy_and_change():
    logits_b = torch.tensor(
        [[5.0, 1, 0, 0, 0, 0], [0, 4, 3, 0, 0, 0], [0, 0, 0, 0, 1, 2], [1, 2, 3, 4, 5, 6]]
    )
    labels = torch.tensor([0, 2, 5, 0])
    assert M.topk_accuracy(logits_b, labels, 1).tolist() == [True, False, True, False]
    assert M.topk_accuracy(logits_b, labels, 2).tolist() == [True, True, True, False]
    logits_a = logits_b.flip(1)
    res = M.classifier_topk_change(logits_b, logits_a, labels, ks=(1, 5), classifier="test")
    assert res["top1_before"].value == 0.5
    assert res["top1_after"].value == pytest.approx(
        M.topk_accuracy(logits_a, labels, 1).double().mean().item()
    )
    assert res["top1_change"].value == pytest.approx(res["top1_after"].value - 0.5)
    assert res["top5_before"].value == 0.75
    none = M.classifier_topk_change(logits_b, logits_b, None, ks=(1, 7))
    assert none["top1_before"].value == 1.0 and none["top1_change"].value == 0.0
    assert not none["top7_after"].available


def test_quality_values_equal_the_single_metrics():
    """The shared pass gives the single metrics' numbers bit for bit (PSNR: torchmetrics' own)."""
    from torchmetrics.functional.image import peak_signal_noise_ratio

    preds, target = _pair(2, 40, 48)
    mask = _box_mask(2, 40, 48)
    mask[1] = 1  # second image: the region covers everything, nothing is outside
    vals = M.quality_values(preds, target, mask)
    assert set(vals) == set(M.PIXEL_METRICS)
    for name, v in vals.items():
        if name == "mae_outside":
            want = M.mae(preds, target, 1 - mask, reduction="none")
            assert torch.isnan(v[1]) and not torch.isnan(v[0])
            assert torch.equal(v[:1], want[:1]), name
            continue
        fn = {"ssim": M.ssim, "psnr": M.psnr, "mae": M.mae, "mse": M.mse}[name.removesuffix("_region")]
        want = fn(preds, target, mask if name.endswith("_region") else None, reduction="none")
        assert torch.equal(v, want), name
    tm = peak_signal_noise_ratio(preds, target, data_range=1.0, reduction="none", dim=(1, 2, 3))
    assert torch.equal(vals["psnr"], tm)
    whole = M.quality_values(preds, target, None, names=("mae_outside", "mae"))
    assert torch.allclose(whole["mae_outside"], whole["mae"], rtol=1e-6, atol=0)
    with pytest.raises(RegionError):
        M.quality_values(preds, target, None, names=("mae_region",))
