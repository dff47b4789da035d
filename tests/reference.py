"""Architecture-equivalence harness against ../shared/reference (see its README).

A registered architecture gets its check by adding one line to ``REFERENCE_CASES`` in
``tests/test_reference_archs.py``: ``(model name, reference name, run function, tolerance)``.
The run function takes the filled module and the reference's stored arrays and returns a dict
``{array name: output tensor}``; every returned name is compared with the stored array.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

REF_DIR = Path(__file__).resolve().parents[2] / "shared" / "reference"


def detfill():
    """The reference's detfill module (skips the test when ../shared/reference is absent)."""
    if not (REF_DIR / "detfill.py").exists():
        pytest.skip(f"architecture references not found at {REF_DIR}")
    if str(REF_DIR) not in sys.path:
        sys.path.insert(0, str(REF_DIR))
    import detfill as _d

    return _d


def load_ref(name: str) -> dict:
    d = detfill()
    if not (REF_DIR / f"{name}.json").exists():
        pytest.skip(f"reference {name} not found in {REF_DIR}")
    return d.load_reference(name)


RunFn = Callable[[torch.nn.Module, dict], dict]

#: Tolerance relative to the output's scale. The same float32 network run on different x86 CPUs
#: (oneDNN/MKL kernels with other accumulation orders and vector widths) gives results that differ by
#: up to about 2.3e-4 of the output scale (measured: cartoongan_generator on an AMD EPYC against the
#: reference machine), and instance norms amplify rounding of earlier layers; 2e-3 leaves a margin of
#: about 9x there. A real mismatch (a wrong layer, order, padding or fill) differs by O(1) of the scale.
RTOL = 2e-3


def _np(x) -> np.ndarray:  # noqa: ANN001
    return x.detach().float().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x, np.float32)


def assert_close_scaled(got, want, name: str, atol: float = 1e-5, rtol: float = RTOL, pre=None) -> float:  # noqa: ANN001
    """Assert ``|got - want| <= atol + rtol * scale`` elementwise and return the largest ratio of the
    difference to that scale-relative part (0 = exact, 1 = at the limit).

    ``scale`` is the output's scale, ``max|want|``. For a tanh output pass its pre-activation ``pre``
    (the tensor tanh was applied to): rounding of the pre-activation is relative to *its* scale
    ``max|pre|`` and reaches the output multiplied by tanh's slope ``1 - want**2``, so the scale is
    ``max|pre| * (1 - want**2)`` per element (saturated values, whose slope is ~0, must match
    closely; values in the transition get the pre-activation's tolerance).
    """
    got_np, want = _np(got), np.asarray(want, np.float32)
    assert got_np.shape == want.shape, f"{name}: shape {got_np.shape} != {want.shape}"
    if pre is None:
        scale = np.float64(max(float(np.abs(want).max()), 1e-30))
    else:
        scale = np.maximum(float(np.abs(_np(pre)).max()) * (1.0 - want.astype(np.float64) ** 2), 1e-30)
    diff = np.abs(got_np.astype(np.float64) - want)
    bad = diff > atol + rtol * scale
    assert not bad.any(), (
        f"{name}: {int(bad.sum())} value(s) differ by more than atol {atol:g} + rtol {rtol:g} x output scale; "
        f"max abs diff {diff.max():.3g}, worst ratio to the scale {float((diff / scale).max()):.3g}"
    )
    return float((np.maximum(diff - atol, 0) / scale).max())


@torch.no_grad()
def assert_matches_reference(
    module: torch.nn.Module,
    ref_name: str,
    run: RunFn,
    atol: float = 1e-4,
    equalized: bool = False,
    keep: tuple = (),
    rtol: float = RTOL,
) -> dict:
    """Same keys and shapes as the manifest, then strong-fill (or detfill for non-strongfill refs),
    run, and compare every returned output with the stored array (see :func:`assert_close_scaled`:
    ``atol`` plus ``rtol`` times the output's scale). ``run`` may return ``(output, pre_activation)``
    for a tanh output. Returns ``{name: max abs diff}``."""
    d = detfill()
    ref = load_ref(ref_name)
    problems = d.check_keys(module.state_dict(), ref)
    assert not problems, (
        f"{ref_name}: state_dict differs: {problems[:20]} (+{max(0, len(problems) - 20)} more)"
    )
    if ref_name.endswith("_strongfill"):
        d.strong_fill_module(module, equalized=equalized, keep=keep)
    else:
        d.fill_module(module)
    module.eval()
    outs = run(module, ref["arrays"])
    assert outs, "run function returned no outputs to compare"
    diffs = {}
    for key, got in outs.items():
        got, pre = got if isinstance(got, tuple) else (got, None)
        want = ref["arrays"][key]
        assert_close_scaled(got, want, f"{ref_name}:{key}", atol, rtol, pre)
        diffs[key] = float(np.abs(_np(got) - want).max())
    return diffs
