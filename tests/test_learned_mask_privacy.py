"""Paper 003's privacy claim, judged by a fresh adversary: a classifier trained from scratch to read the
task from the hidden remainder x_o = (m - m_topK) * x (as 8-bit images), not the run's shared Φ.

The generated task of test_learned_mask.py with a 10 x 10 label patch in 16 x 16 images: 39% of the
pixels carry the label, more than K = 25% can reveal, so some label pixels always fall outside the top
K% and only the soft mask there (m -> 0) can keep them out of x_o.

Why a fresh adversary read the earlier x_o at 100% (2026-11-30, branch h-lmask): the sigmoid mask
left 83 of the 100 patch pixels per image in x_o (m 0.26 there), and the mask itself carried the
label: a fresh adversary read it at 98-100% from the soft mask outside the top K% with the patch
pixels zeroed and at 100% from the binary top-K pattern alone (the masker encodes the label in which
pixels it reveals). Only an x_o that is exactly 0 hides both. The adversarial default now makes it
so: a stretched sigmoid that is exactly 0 below a logit, the remainder term in every masker update,
ramped up over 8 epochs (from the start it pushes the patch out of the top K% before it is found:
coverage 26-45% on the 4 x 4 task) and with a margin (also the lowest 10% of the top K%; without
it 0.7-1.3 pixels per image stay just below the top K% and a fresh adversary reads them at 74-79%).
Measured with 16 epochs (default remainder weight 3): x_o is 0 in every pixel for this seed, the
fresh adversary scores 48% (chance 53%); training seeds 1 and 2 give 52% and 59% (weight 1: 93% and
100%). 8 epochs are not enough (15 non-zero pixels per image, 97%).
"""

from __future__ import annotations

import numpy as np
import pytest
from test_learned_mask import S, _config, make_task

from privacy_cli.train.masker import Split, fit, fresh_adversary, load_run, split_images

PATCH, N_TRAIN, EPOCHS = 10, 384, 16


@pytest.fixture(scope="module")
def privacy_runs(tmp_path_factory) -> dict:
    """Adversarial and non-adversarial runs on the 10 x 10 patch task, their fresh-adversary scores
    and soft-mask statistics on a test split."""
    root = tmp_path_factory.mktemp("learned_mask_privacy")
    x, y, _ = make_task(N_TRAIN + 128, seed=1, patch=PATCH)
    train, val = Split(x[:N_TRAIN], y[:N_TRAIN]), Split(x[N_TRAIN:], y[N_TRAIN:])
    xt, yt, _ = make_task(256, seed=2, patch=PATCH)
    out: dict = {}
    for name, adv in (("adv", True), ("non", False)):
        run = root / name
        fit(_config(run, adv, epochs=EPOCHS), train, val, ["red", "blue"])
        m, top, xo = split_images(load_run(run), xt)
        out[name] = {
            "run": run,
            "xo": xo,
            "top": top,
            "mass_rest": float((m * ~top).sum((1, 2)).mean()),  # soft mask outside the top K%
            "fresh": fresh_adversary(run, train, Split(xt[:128], yt[:128]), Split(xt[128:], yt[128:])),
        }
    return out


def test_hidden_remainder_is_the_complement_of_the_top_k(privacy_runs) -> None:
    for name in ("adv", "non"):
        r = privacy_runs[name]
        assert np.allclose(r["top"].reshape(len(r["top"]), -1).sum(1), round(0.25 * S * S))
        assert not r["xo"][r["top"]].any()  # x_o is zero where the top K% are revealed


def test_non_adversarial_remainder_leaks_the_task_to_a_fresh_adversary(privacy_runs) -> None:
    f = privacy_runs["non"]["fresh"]
    assert f["acc"] >= f["chance"] + 0.25, f


def test_adversarial_remainder_is_at_chance_for_a_fresh_adversary(privacy_runs) -> None:
    f = privacy_runs["adv"]["fresh"]
    assert f["acc"] <= f["chance"] + 0.10, f


def test_adversarial_remainder_is_zero_almost_everywhere(privacy_runs) -> None:
    """What hides the task (and the label-dependent outline of the top K%) from the fresh adversary:
    the 8-bit x_o is 0 in (almost) every pixel; the non-adversarial sigmoid mask leaves all 192."""
    nonzero = {k: float((privacy_runs[k]["xo"].max(-1) > 0).sum((1, 2)).mean()) for k in ("adv", "non")}
    assert nonzero["adv"] <= 1.0 and nonzero["non"] >= 150, nonzero


def test_non_adversarial_soft_mask_reveals_more_of_the_rest(privacy_runs) -> None:
    assert privacy_runs["non"]["mass_rest"] > 1.2 * privacy_runs["adv"]["mass_rest"], (
        privacy_runs["non"]["mass_rest"],
        privacy_runs["adv"]["mass_rest"],
    )
