"""Automatic detection of sensitive regions: ``detect(image, kinds=("faces", "text"))``.

Detectors are registered by name (see :mod:`privacy_cli.detect.base`): ``"faces"`` (MTCNN +
CenterFace, upright and turned, on onnxruntime), ``"faces-mtcnn"``, ``"faces-centerface"``,
``"faces-dlib"`` (dlib HOG) and ``"text"`` (RapidOCR + PII classification). Importing this
package is cheap; models load on first use, once per process.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

from ..errors import DetectorError, PrivpixError, UsageError
from ..regions import Regions
from .base import (
    Detector,
    add_detector_module,
    check_image,
    clear_detector_cache,
    detector_options,
    get_detector,
    list_detectors,
    register_detector,
)

DEFAULT_KINDS = ("faces", "text")
#: Options that apply to whichever selected detectors take them, silently skipped by the others.
SHARED_OPTIONS = frozenset({"device"})


def parse_kinds(kinds: str | Iterable[str]) -> list[str]:
    """``"faces,text"`` or ``["faces", "text"]`` -> ``["faces", "text"]`` (deduplicated, order kept)."""
    items = kinds.split(",") if isinstance(kinds, str) else list(kinds)
    out: list[str] = []
    for k in items:
        k = str(k).strip()
        if k and k not in out:
            out.append(k)
    return out


def route_options(names: list[str], options: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Split ``detect()`` keyword options per detector.

    A dict value under a detector's name holds that detector's own options
    (``faces={"threshold": 0.9}``); any other keyword goes to every selected detector that accepts
    it (``device="cpu"``, ``threshold=0.9``, ``text="pii"``). A keyword whose value is None counts as
    not given (handy for CLI defaults); ``device`` is dropped for detectors without that option. Any
    other keyword no selected detector accepts is a UsageError.
    """
    per: dict[str, dict[str, Any]] = {n: {} for n in names}
    flat = {}
    for key, value in options.items():
        if key in per and isinstance(value, dict):
            per[key].update(value)
        elif value is not None:
            flat[key] = value
    accepted = {n: set(detector_options(n)) for n in names}
    for key, value in flat.items():
        takers = [n for n in names if key in accepted[n]]
        if not takers and key not in SHARED_OPTIONS:
            raise UsageError(f"no selected detector ({', '.join(names)}) has an option {key!r}")
        for n in takers:
            per[n].setdefault(key, value)
    return per


def detect(image: np.ndarray, kinds: str | Iterable[str] = DEFAULT_KINDS, **options: Any) -> Regions:
    """Run the named detectors on ``image`` (H, W, 3) uint8 RGB.

    Returns :class:`~privacy_cli.regions.Regions` of size (W, H) with every detector's regions in
    original-image pixels (empty when nothing is found). Options are routed as in
    :func:`route_options`. Unknown detector names or options raise UsageError; a detector that
    fails raises :class:`~privacy_cli.errors.DetectorError` (the caller then writes no output).
    """
    image = check_image(image)
    names = parse_kinds(kinds)
    if not names:
        raise UsageError(f"no detector selected; known: {', '.join(list_detectors())}")
    per = route_options(names, options)
    h, w = image.shape[:2]
    regions = Regions((w, h))
    if len(names) == 1:
        outcomes = [_run_one(names[0], _build(names[0], per[names[0]]), image)]  # models load here
    else:
        # faces and text at once: onnxruntime and OpenCV release the GIL, so on 2 cores the
        # default job takes about as long as its slower detector instead of the sum of both; the
        # first image also loads both detectors' models side by side
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max_workers=len(names), thread_name_prefix="privpix-detect") as pool:
            futures = [pool.submit(_build_and_run, n, per[n], image) for n in names]
            outcomes = [f.result() for f in futures]
    for found in outcomes:  # in the order asked, the first failure raised
        if isinstance(found, BaseException):
            raise found
        regions.extend(found)
    return regions


def _build(name: str, options: dict[str, Any]) -> Any:
    """The shared detector ``name`` with ``options``; a crash while building it is a DetectorError."""
    try:
        return get_detector(name, **options)
    except PrivpixError:
        raise
    except Exception as e:  # privacy fails closed: any crash is a detector failure
        raise DetectorError(f"{name} detector failed: {type(e).__name__}: {e}") from e


def _build_and_run(name: str, options: dict[str, Any], image: np.ndarray) -> list[Any] | BaseException:
    """:func:`_build` then :func:`_run_one`; a build failure is returned, not raised."""
    try:
        det = _build(name, options)
    except PrivpixError as e:
        return e
    return _run_one(name, det, image)


def _run_one(name: str, det: Any, image: np.ndarray) -> list[Any] | BaseException:
    """``det.detect(image)``, or the error to raise: a PrivpixError as is, any other crash (or a
    None result) as a DetectorError naming the detector (privacy fails closed)."""
    try:
        found = det.detect(image)
    except PrivpixError as e:
        return e
    except Exception as e:
        err = DetectorError(f"{name} detector failed: {type(e).__name__}: {e}")
        err.__cause__ = e
        return err
    if found is None:
        return DetectorError(f"{name} detector returned None")
    return list(found)


__all__ = [
    "DEFAULT_KINDS",
    "SHARED_OPTIONS",
    "Detector",
    "add_detector_module",
    "check_image",
    "clear_detector_cache",
    "detect",
    "detector_options",
    "get_detector",
    "list_detectors",
    "parse_kinds",
    "register_detector",
    "route_options",
]
