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


@torch.no_grad()
def assert_matches_reference(
    module: torch.nn.Module,
    ref_name: str,
    run: RunFn,
    atol: float = 1e-4,
    equalized: bool = False,
    keep: tuple = (),
) -> dict:
    """Same keys and shapes as the manifest, then strong-fill (or detfill for non-strongfill refs),
    run, and compare every returned output with the stored array within ``atol``."""
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
        want = ref["arrays"][key]
        got_np = got.detach().float().cpu().numpy() if isinstance(got, torch.Tensor) else np.asarray(got)
        assert got_np.shape == want.shape, f"{ref_name}:{key}: shape {got_np.shape} != {want.shape}"
        diffs[key] = float(np.abs(got_np - want).max())
        assert diffs[key] <= atol, f"{ref_name}:{key}: max abs diff {diffs[key]:.3g} > {atol}"
    return diffs
