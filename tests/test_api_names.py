"""The public names of ``privacy_cli`` stay the API functions whatever has been imported."""

from __future__ import annotations

import numpy as np


def test_detect_is_the_api_function_after_the_detect_subpackage_loads():
    import privacy_cli as pp
    import privacy_cli.detect.base  # noqa: F401  (loads the subpackage of the same name)
    from privacy_cli.api import detect

    img = np.zeros((48, 64, 3), np.uint8)
    assert pp.detect is detect
    first = pp.detect(img, kinds=["faces-dlib"])
    second = pp.detect(img, kinds=["faces-dlib"])  # the README's example, called twice
    assert len(first) == len(second) == 0 and second.size == (64, 48)
