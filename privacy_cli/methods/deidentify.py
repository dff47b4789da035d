"""De-identify faces: natural-looking faces that no longer belong to anyone, with a knob ``beta``.

``beta`` in [0, 1] is the identity similarity to keep (paper 004, Private-Encoder): 0 aims at an
unrelated identity, 1 keeps it. Every backend shares one face pipeline:

1. the regions of the mask (faces from ``--detect faces``, ``--boxes`` or ``--mask``);
2. 68 dlib landmarks per face (:mod:`privacy_cli.detect.landmarks`);
3. FFHQ alignment (:func:`privacy_cli.align.align_face`) at the backend's resolution;
4. the backend changes the identity of the aligned face;
5. inverse warp, colour matching and a feathered landmark-hull blend
   (:func:`privacy_cli.align.paste_back`): pixels outside the blend mask are unchanged;
6. a face without usable landmarks is never left as it was: ``on_fail`` = ``blur`` (default, the
   default blur of its region), ``mask`` (black fill) or ``error`` (the image fails, no output).

Backends (``model=``):

* ``ksame``: k-Same (Newton, Sweeney & Malin 2005) on landmark-aligned faces, offline. The face is
  replaced by the average of ``k`` donor faces that dlib's recogniser says are other people
  (descriptor distance >= 0.6 from the face), the ``k`` most similar in appearance (pose,
  expression and colour of the aligned face) among those. Each donor is warped piecewise-affinely
  (Delaunay triangles of the landmarks) onto a shape that keeps the face's outline and takes its
  inner features (brows, eyes, nose, mouth) from the donors' mean; ``beta`` blends the original's
  shape and texture back in. Donors come from a :class:`DonorPool` (the other faces of the run or
  a donor folder); fewer than ``k`` eligible donors is an error for that image.
* ``latent``: e4e inversion + W+ optimisation towards ``cos(ArcFace(G(w)), ArcFace(x)) = beta``.
* ``private-encoder``: a pSp checkpoint trained for ``beta`` (``privpix train deidentify``).
* ``auto``: private-encoder if a checkpoint for beta is present, else latent if e4e weights are, else
  ksame if there are enough donors.

Per face, the returned info records the backend, beta and the identity similarity reached (cosine of
dlib descriptors, original face vs output at the same place).
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..align import AlignedFace, align_face, face_outline, paste_back
from ..errors import MethodError, UsageError
from . import register_method
from .compose import check_inputs, components, composite

MODELS = ("auto", "private-encoder", "latent", "ksame")
ON_FAIL = ("blur", "mask", "error")
DEFAULT_K = 5
#: environment variable naming a default donor folder (``bench --methods deidentify:model=ksame``)
DONORS_ENV = "PRIVPIX_DONORS"
#: aligned resolution of the k-Same backend (FFHQ crop)
KSAME_SIZE = 256
#: dlib's identity threshold: donors must be at least this far from the face (other people)
DONOR_MIN_DISTANCE = 0.6
#: landmarks that define the inner features (brows, eyes, nose, outer lips); 0-16 is the jaw line
INNER = slice(17, 60)
#: landmarks used for the triangulation (inner-lip points 60-67 collapse on closed mouths)
TRI_POINTS = 60


# ----------------------------------------------------------------------------------------------------------
# Faces and donors


@dataclass
class FaceInfo:
    """One face with usable landmarks: ``region`` the mask component box it came from (x0, y0, x1, y1),
    ``aligned`` its FFHQ crop at :data:`KSAME_SIZE`, ``box`` the landmark box, ``descriptor`` dlib's
    128-d descriptor (float64, not normalised) and ``appearance`` a small vector for donor ranking."""

    region: tuple[int, int, int, int]
    box: tuple[float, float, float, float]
    aligned: AlignedFace
    descriptor: np.ndarray
    appearance: np.ndarray
    source: str = ""


def image_key(image: np.ndarray) -> str:
    """Content key of an (H, W, 3) uint8 image (so a pool can recognise an image it has seen)."""
    h = hashlib.blake2b(np.ascontiguousarray(image).data, digest_size=16)
    h.update(str(image.shape).encode())
    return h.hexdigest()


def appearance_vector(face: AlignedFace) -> np.ndarray:
    """Appearance of an aligned face: 16x16 Lab thumbnail of its centre (values / 255) and its
    inner landmarks (crop fraction, weighted x4 so pose and expression count as much as colour)."""
    import cv2

    s = face.size
    c = face.crop[int(0.2 * s) : int(0.9 * s), int(0.2 * s) : int(0.8 * s)]
    thumb = cv2.resize(cv2.cvtColor(c, cv2.COLOR_RGB2LAB), (16, 16), interpolation=cv2.INTER_AREA)
    shape = face.points[INNER] / s * 4.0
    return np.concatenate([thumb.reshape(-1).astype(np.float32) / 255.0, shape.reshape(-1)])


def _appearance_distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.sqrt(((a - b) ** 2).mean(-1))


def analyse_faces(
    image: np.ndarray, mask: np.ndarray, box_scale: float = 1.3, source: str = ""
) -> tuple[list[FaceInfo], list[tuple[int, int, int, int]]]:
    """Landmarks, alignment and descriptor of every face in the regions of ``mask`` (H, W) of
    ``image`` (H, W, 3) uint8. Returns (faces, regions without a usable face)."""
    from ..detect.landmarks import find_landmarks
    from ..faceid import default_recognizer

    rec = default_recognizer()
    faces, failed = [], []
    for comp in components(mask):
        region = (comp.x0, comp.y0, comp.x1, comp.y1)
        found = find_landmarks(image, region, box_scale)
        if not found:
            failed.append(region)
            continue
        for fl in found:
            al = align_face(image, fl.points, KSAME_SIZE)
            desc = rec.embed(image, fl.box)
            faces.append(FaceInfo(region, fl.box, al, desc, appearance_vector(al), source))
        if _unexplained(region, [fl.box for fl in found]) > UNEXPLAINED:
            # more region than the faces found account for (e.g. two overlapping face boxes, one of
            # them a face dlib cannot read): the rest gets the on_fail treatment, never left as it was
            failed.append(region)
    return faces, failed


#: a region whose area lies more than this fraction outside its faces' boxes (scaled by EXPLAIN_SCALE)
#: has a part no face accounts for
UNEXPLAINED = 0.25
EXPLAIN_SCALE = 1.6


def _explained_boxes(boxes: Sequence[tuple[float, float, float, float]]) -> list[tuple[int, int, int, int]]:
    out = []
    for x0, y0, x1, y1 in boxes:
        cx, cy, hw, hh = (
            (x0 + x1) / 2,
            (y0 + y1) / 2,
            (x1 - x0) * EXPLAIN_SCALE / 2,
            (y1 - y0) * EXPLAIN_SCALE / 2,
        )
        out.append((int(cx - hw), int(cy - hh), int(np.ceil(cx + hw)), int(np.ceil(cy + hh))))
    return out


def _unexplained(
    region: tuple[int, int, int, int], boxes: Sequence[tuple[float, float, float, float]]
) -> float:
    """Fraction of ``region``'s box outside every face box grown by :data:`EXPLAIN_SCALE`."""
    x0, y0, x1, y1 = region
    cover = np.zeros((y1 - y0, x1 - x0), bool)
    for bx0, by0, bx1, by1 in _explained_boxes(boxes):
        cover[max(0, by0 - y0) : max(0, by1 - y0), max(0, bx0 - x0) : max(0, bx1 - x0)] = True
    return 1.0 - float(cover.mean()) if cover.size else 0.0


class DonorPool:
    """Faces available as k-Same donors, and a cache of analysed images.

    ``add_image`` analyses every face of an image (its regions given by a mask); the faces become
    donors and the analysis is reused when the same image is de-identified (matched by content).
    Thread-safe.
    """

    def __init__(self) -> None:
        self.faces: list[FaceInfo] = []
        self._by_image: dict[str, tuple[list[FaceInfo], list[tuple[int, int, int, int]]]] = {}
        self._lock = threading.Lock()
        self._stack: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None

    def __len__(self) -> int:
        return len(self.faces)

    def __getstate__(self) -> dict[str, Any]:
        """Picklable (a Ray actor gets the run's pool with its per-image function): without the lock
        and the stacked arrays, whose ids are only valid in this process; faces shared between
        ``faces`` and the per-image cache stay shared in the copy."""
        with self._lock:
            return {"faces": self.faces, "_by_image": self._by_image}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.faces, self._by_image = state["faces"], state["_by_image"]
        self._lock = threading.Lock()
        self._stack = None

    def add_image(self, image: np.ndarray, mask: np.ndarray, box_scale: float = 1.3, source: str = "") -> int:
        """Analyse ``image`` (H, W, 3) uint8 within ``mask`` (H, W); returns the number of faces added."""
        key = image_key(image)
        result = analyse_faces(image, mask, box_scale, source)
        with self._lock:
            self._by_image[key] = result
            self.faces.extend(result[0])
            self._stack = None
        return len(result[0])

    def lookup(self, image: np.ndarray) -> tuple[list[FaceInfo], list[tuple[int, int, int, int]]] | None:
        """The analysis of ``image`` if it was added (same pixels), else None."""
        with self._lock:
            return self._by_image.get(image_key(image))

    def _arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        with self._lock:
            if self._stack is None:
                d = np.stack([f.descriptor for f in self.faces]) if self.faces else np.zeros((0, 128))
                a = np.stack([f.appearance for f in self.faces]) if self.faces else np.zeros((0, 1))
                ids = np.array([id(f) for f in self.faces])
                self._stack = (d, a, ids)
            return self._stack

    def choose(self, face: FaceInfo, k: int, exclude: Iterable[FaceInfo] = ()) -> tuple[list[FaceInfo], int]:
        """The ``k`` donors for ``face``: other people by dlib (distance >= 0.6), most similar in
        appearance first, never ``face`` itself nor ``exclude``. Returns (donors, number eligible)."""
        d, a, ids = self._arrays()
        if not len(self.faces):
            return [], 0
        dist = np.linalg.norm(d - face.descriptor[None], axis=1)
        skip = {id(face), *(id(f) for f in exclude)}
        ok = (dist >= DONOR_MIN_DISTANCE) & ~np.isin(ids, list(skip))
        idx = np.flatnonzero(ok)
        order = idx[np.argsort(_appearance_distance(a[idx], face.appearance[None]), kind="stable")]
        return [self.faces[i] for i in order[:k]], int(ok.sum())


_FOLDER_POOLS: dict[str, DonorPool] = {}
_FOLDER_LOCK = threading.Lock()


def folder_pool(folder: str, device: str = "cpu") -> DonorPool:
    """A :class:`DonorPool` of every face (MTCNN, ``--detect faces`` geometry) in the photos under
    ``folder``, built once per process (used by ``bench --methods deidentify:donors=DIR``)."""
    from ..errors import PrivpixError
    from ..io import iter_images, load_image
    from ..pipeline import RegionSpec, collect_regions, regions_mask

    key = str(Path(folder).resolve())
    with _FOLDER_LOCK:
        if key in _FOLDER_POOLS:
            return _FOLDER_POOLS[key]
        if not Path(folder).is_dir():
            raise UsageError(f"donors {folder}: no such folder")
        spec = RegionSpec(detect=("faces",), device=device)
        pool = DonorPool()
        for path in iter_images([folder]):
            try:
                loaded = load_image(path)
                mask = regions_mask(collect_regions(loaded, spec, path), spec)
            except PrivpixError:
                continue
            if mask.any():
                pool.add_image(loaded.rgb, mask, box_scale=spec.box_scale, source=path.name)
        _FOLDER_POOLS[key] = pool
        return pool


# ----------------------------------------------------------------------------------------------------------
# Piecewise-affine warping (k-Same)


def _mesh_points(points: np.ndarray, size: int) -> np.ndarray:
    """Triangulation vertices in an aligned crop: landmarks 0-59, forehead, 8 border points (N, 2)."""
    outline = face_outline(points)
    forehead = outline[68:]
    s = float(size - 1)
    border = np.array(
        [[0, 0], [s / 2, 0], [s, 0], [s, s / 2], [s, s], [s / 2, s], [0, s], [0, s / 2]], np.float32
    )
    pts = np.concatenate([points[:TRI_POINTS], forehead, border]).astype(np.float64)
    return np.clip(pts, 0, s)


class Mesh:
    """Delaunay triangulation of a destination shape in a ``size`` x ``size`` crop, with the map of
    which triangle covers each pixel (so a warp is one ``cv2.remap``)."""

    def __init__(self, dst: np.ndarray, size: int) -> None:
        import cv2
        from scipy.spatial import Delaunay

        self.dst, self.size = dst, size
        self.tri = Delaunay(dst).simplices  # (T, 3)
        self.index = np.full((size, size), -1, np.int32)
        for t, simplex in enumerate(self.tri):
            cv2.fillConvexPoly(self.index, np.round(dst[simplex]).astype(np.int32), int(t))
        # pixels no triangle claims (rounding at the hull): nearest claimed neighbour via dilation
        if (self.index < 0).any():
            filled = self.index.copy()
            for _ in range(3):
                grow = cv2.dilate(filled, np.ones((3, 3), np.uint8))
                filled = np.where(filled < 0, grow, filled)
            self.index = np.where(filled < 0, 0, filled)
        yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
        self.xx, self.yy = xx, yy
        d = np.concatenate([dst[self.tri], np.ones((len(self.tri), 3, 1))], axis=2)  # (T, 3, 3)
        self._dinv = np.linalg.pinv(d)  # (T, 3, 3)

    def warp(self, image: np.ndarray, src: np.ndarray) -> np.ndarray:
        """Warp ``image`` (size, size, 3) whose landmarks are ``src`` (N, 2 mesh points) onto this mesh."""
        import cv2

        a = self._dinv @ src[self.tri]  # (T, 3, 2): [x y 1] @ a = source point
        ai = a[self.index]  # (S, S, 3, 2)
        mx = (self.xx * ai[..., 0, 0] + self.yy * ai[..., 1, 0] + ai[..., 2, 0]).astype(np.float32)
        my = (self.xx * ai[..., 0, 1] + self.yy * ai[..., 1, 1] + ai[..., 2, 1]).astype(np.float32)
        return cv2.remap(image, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)


def ksame_face(face: FaceInfo, donors: Sequence[FaceInfo], beta: float) -> np.ndarray:
    """The k-Same replacement of ``face``'s aligned crop: (S, S, 3) uint8 in ``face``'s aligned frame.

    Shape: the face's jaw line and forehead, inner features ``beta * own + (1 - beta) * donor mean``.
    Texture: ``beta * own + (1 - beta) * mean of the donors``, each warped onto that shape.
    """
    size = face.aligned.size
    own = face.aligned.points
    mean_pts = np.mean([d.aligned.points for d in donors], axis=0)
    shape = own.copy()
    shape[INNER] = beta * own[INNER] + (1.0 - beta) * mean_pts[INNER]
    dst = _mesh_points(shape, size)
    mesh = Mesh(dst, size)
    acc = np.zeros((size, size, 3), np.float32)
    for d in donors:
        acc += mesh.warp(d.aligned.crop, _mesh_points(d.aligned.points, size)).astype(np.float32)
    acc /= len(donors)
    if beta > 0:
        mine = mesh.warp(face.aligned.crop, _mesh_points(own, size)).astype(np.float32)
        acc = beta * mine + (1.0 - beta) * acc
    return np.clip(np.round(acc), 0, 255).astype(np.uint8)


# ----------------------------------------------------------------------------------------------------------
# Backend selection


def choose_model(model: str, beta: float, pool: DonorPool | None = None, k: int = DEFAULT_K) -> str:
    """Resolve ``auto``: private-encoder when a checkpoint for ``beta`` is present, else latent when
    the e4e weights are, else ksame when ``pool`` has more than ``k`` faces; else a WeightsError
    naming the commands that make the others available."""
    if model not in MODELS:
        raise UsageError(f"--model {model!r}: use one of {', '.join(MODELS)}")
    if model != "auto":
        return model
    if private_encoder_checkpoint(beta) is not None:
        return "private-encoder"
    if latent_weights_present():
        return "latent"
    if pool is not None and len(pool) > k:
        return "ksame"
    from ..errors import WeightsError

    raise WeightsError(
        "deidentify --model auto: no backend available (no Private-Encoder checkpoint for beta "
        f"{beta:g}, no e4e weights, fewer than {k + 1} donor faces); run `privpix weights fetch e4e-ffhq`, "
        "`privpix train deidentify FACES/ --beta B`, or give --donors DIR"
    )


# ----------------------------------------------------------------------------------------------------------
# The method


def _fallback(
    image: np.ndarray,
    mask: np.ndarray,
    region: tuple[int, int, int, int],
    how: str,
    faces: Sequence[FaceInfo] = (),
) -> np.ndarray:
    """Blur or black-fill ``region`` of ``mask``, except around the ``faces`` de-identified in it."""
    x0, y0, x1, y1 = region
    local = np.zeros_like(mask)
    local[y0:y1, x0:x1] = mask[y0:y1, x0:x1]
    for bx0, by0, bx1, by1 in _explained_boxes([f.box for f in faces if f.region == region]):
        local[max(0, by0) : max(0, by1), max(0, bx0) : max(0, bx1)] = 0.0
    if how == "blur":
        from .blur import blur

        return blur(image, local)
    return composite(image, np.zeros_like(image), local)


def _similarity(a: np.ndarray, b: np.ndarray) -> float:
    a = a / (np.linalg.norm(a) + 1e-12)
    b = b / (np.linalg.norm(b) + 1e-12)
    return float(a @ b)


@register_method("deidentify", "replace faces by natural faces of nobody (beta = identity kept)")
def deidentify(
    image: np.ndarray,
    mask: np.ndarray,
    beta: float = 0.0,
    model: str = "auto",
    k: int = DEFAULT_K,
    donors: DonorPool | str | Path | None = None,
    on_fail: str = "blur",
    steps: int = 100,
    box_scale: float = 1.3,
    device: str = "cpu",
    weights: str | None = None,
    judge: bool = True,
) -> tuple[np.ndarray, dict[str, Any]]:
    """De-identify the faces in the regions of ``mask`` (H, W) [0, 1] of ``image`` (H, W, 3) uint8.

    beta: target identity similarity in [0, 1]. model: see :data:`MODELS`. k / donors: k-Same donor
    count and pool, or a folder of donor photos (:func:`folder_pool`; default ``$PRIVPIX_DONORS``);
    without donors ksame fails. on_fail: what happens to a
    region without a usable face (:data:`ON_FAIL`). steps: latent optimisation steps. weights: a
    checkpoint file for the learned backends (default: the registry). judge: measure the identity
    similarity reached (dlib) per face.

    Returns ``(image, {"faces": [...], "model_used": ...})``; one record per face with box, backend,
    beta and ``identity_similarity`` (cosine of dlib descriptors, original vs output) or, for a
    region without landmarks, the fallback applied. Raises MethodError when a face cannot be
    de-identified (not enough donors, ``on_fail="error"``): then nothing is written.
    """
    image, mask = check_inputs(image, mask)
    if not 0.0 <= beta <= 1.0:
        raise UsageError(f"--beta {beta}: must be in [0, 1]")
    if on_fail not in ON_FAIL:
        raise UsageError(f"--on-fail {on_fail!r}: use one of {', '.join(ON_FAIL)}")
    if donors is None and os.environ.get(DONORS_ENV):
        donors = os.environ[DONORS_ENV]
    if isinstance(donors, str | Path):
        donors = folder_pool(str(donors), device)
    pool = donors if donors is not None else DonorPool()
    cached = pool.lookup(image)
    faces, failed = cached if cached is not None else analyse_faces(image, mask, box_scale)
    chosen = choose_model(model, beta, pool, k) if faces else (model if model != "auto" else "none")
    out = image.copy()
    records: list[dict[str, Any]] = []
    for region in failed:
        partial = any(f.region == region for f in faces)
        reason = "part of the region has no face with landmarks" if partial else "no facial landmarks"
        if on_fail == "error":
            raise MethodError(f"{reason} in region {list(region)} (--on-fail error)")
        out = _fallback(out, mask, region, on_fail, faces)
        records.append({"region": list(region), "backend": on_fail, "reason": reason})
    if faces:
        crops = _run_backend(chosen, faces, pool, beta, k, steps, device, weights)
        for face, (crop, extra) in zip(faces, crops, strict=True):
            out, _blend = paste_back(out, face.aligned, crop, limit=mask)
            rec: dict[str, Any] = {
                "region": list(face.region),
                "box": [round(float(v), 1) for v in face.box],
                "backend": chosen,
                "beta": beta,
                **extra,
            }
            records.append(rec)
        if judge:
            from ..faceid import default_recognizer

            rec_ = default_recognizer()
            for face, rec in zip(faces, records[len(failed) :], strict=True):
                emb = rec_.embed(out, face.box)
                rec["identity_similarity"] = round(_similarity(face.descriptor, emb), 4)
                dist = float(np.linalg.norm(face.descriptor - emb))
                rec["identity_distance"] = round(dist, 4)
                rec["recognised"] = dist < DONOR_MIN_DISTANCE  # dlib's own same-person decision
                rec["identity_judge"] = "dlib"
    return out, {"model_used": chosen, "faces": records}


def _run_backend(
    chosen: str,
    faces: list[FaceInfo],
    pool: DonorPool,
    beta: float,
    k: int,
    steps: int,
    device: str,
    weights: str | None,
) -> list[tuple[np.ndarray, dict[str, Any]]]:
    """Run one backend on every face: ``(crop in the face's aligned frame, record fields)`` per face."""
    if chosen == "ksame":
        results = []
        for face in faces:
            chosen_donors, eligible = pool.choose(face, k)
            if len(chosen_donors) < k:
                raise MethodError(
                    f"ksame needs {k} donor faces of other people, {eligible} available "
                    "(give more images or --donors DIR, or lower --k)"
                )
            results.append((ksame_face(face, chosen_donors, beta), {"k": k}))
        return results
    backend: Callable[..., list[tuple[np.ndarray, dict[str, Any]]]] = _BACKENDS[chosen]
    return backend(faces, beta=beta, steps=steps, device=device, weights=weights)


# ----------------------------------------------------------------------------------------------------------
# Learned backends (torch; imported lazily)


#: latent backend loss weights: identity target, LPIPS(alex) to the input, squared distance to the inversion
LATENT_LAMBDA_ID, LATENT_LAMBDA_LPIPS, LATENT_LAMBDA_W = 1.0, 0.3, 0.05
LATENT_LR = 0.02
#: folder (under the weights dir) holding Private-Encoder checkpoints named ``privacy_<beta>.pt``
PE_FOLDER = "private-encoder"
_TORCH_LOCK = threading.Lock()
_PSP_CACHE: dict[tuple[str, str], Any] = {}


def pe_checkpoint_name(beta: float) -> str:
    """File name of the Private-Encoder checkpoint for ``beta``: ``privacy_<beta>.pt`` (e.g. privacy_0.2.pt)."""
    return f"privacy_{round(float(beta), 4):g}.pt"


def private_encoder_checkpoints() -> dict[float, Path]:
    """Local Private-Encoder checkpoints by beta (``<weights dir>/private-encoder/privacy_<beta>.pt``)."""
    from ..weights import get_weights_dir

    folder = get_weights_dir() / PE_FOLDER
    found: dict[float, Path] = {}
    for f in sorted(folder.glob("privacy_*.pt")) if folder.is_dir() else []:
        try:
            found[float(f.stem[len("privacy_") :])] = f
        except ValueError:
            continue
    return found


def private_encoder_checkpoint(beta: float) -> Path | None:
    """Path of a local Private-Encoder checkpoint trained for ``beta`` (None when there is none)."""
    for b, path in private_encoder_checkpoints().items():
        if abs(b - beta) < 1e-6:
            return path
    return None


def latent_weights_present() -> bool:
    """True when the e4e checkpoint (generator + latent_avg) and the ArcFace identity net are present
    locally (never downloads)."""
    return not missing_latent_weights()


def missing_latent_weights() -> list[str]:
    """Registry names of the latent backend's weights that are not present locally: e4e (encoder,
    generator, latent_avg), ArcFace IR-SE50 (identity), AlexNet (LPIPS backbone)."""
    from ..weights import get_weights, locate

    out = []
    for name in ("e4e-ffhq", "arcface-ir-se50", "alexnet"):
        try:
            if locate(get_weights(name)) is None:
                out.append(name)
        except Exception:  # registry entry unreadable: treat as missing
            out.append(name)
    return out


def psp_output_size(state_dict: dict) -> int:
    """StyleGAN2 resolution of a pSp/e4e checkpoint's decoder: ``2 ** (number of to_rgbs + 2)``."""
    n = {k.split(".")[2] for k in state_dict if k.startswith("decoder.to_rgbs.")}
    if not n:
        from ..errors import WeightsError

        raise WeightsError("pSp checkpoint: no 'decoder.to_rgbs.*' keys (no StyleGAN2 decoder)")
    return 2 ** (len(n) + 2)


def load_psp(path: str | Path, encoder_type: str, device: str = "cpu") -> Any:
    """A :class:`~privacy_cli.models.psp.PSPPipeline` from a pSp / e4e / Private-Encoder checkpoint file
    (``{"state_dict": {"encoder.*", "decoder.*"}, "latent_avg", "opts"}``, read with weights_only), its
    decoder resolution taken from the checkpoint. Cached per (file, device). ``model.opts`` holds the
    checkpoint's opts (a dict, or {})."""
    from ..models.psp import PSPPipeline, psp_checkpoint_filter
    from ..weights import get_weights
    from ..weights.loading import fit_state_dict, read_checkpoint

    key = (str(Path(path).resolve()), f"{encoder_type}:{device}")
    with _TORCH_LOCK:
        if key in _PSP_CACHE:
            return _PSP_CACHE[key]
        entry = get_weights("e4e-ffhq" if encoder_type == "Encoder4Editing" else "psp-ffhq-encode")
        ckpt = read_checkpoint(path, entry)
        if not isinstance(ckpt, dict) or not isinstance(ckpt.get("state_dict"), dict):
            from ..errors import WeightsError

            raise WeightsError(f"{path}: not a pSp checkpoint (needs a 'state_dict' dict)")
        model = PSPPipeline(encoder_type, psp_output_size(ckpt["state_dict"]))
        sd = psp_checkpoint_filter(ckpt, model)
        fit_state_dict(model, sd, what=str(path), arch=f"pSp pipeline ({encoder_type})")
        opts = ckpt.get("opts")
        model.opts = dict(opts) if isinstance(opts, dict) else {}
        model = model.eval().to(device)
        _PSP_CACHE[key] = model
        return model


def _resolved_path(name: str) -> Path:
    from ..weights import resolve_any

    return Path(resolve_any(name).path)


def identity_net(device: str) -> Any:
    """The ArcFace IR-SE50 identity network (registry ``arcface-ir-se50``; WeightsError when missing)."""
    from ..models import build_model

    key = ("arcface-ir-se50", device)
    with _TORCH_LOCK:
        if key not in _PSP_CACHE:
            net = build_model("arcface-ir-se50", pretrained=True, device=device)
            for p in net.parameters():
                p.requires_grad_(False)
            _PSP_CACHE[key] = net
        return _PSP_CACHE[key]


def _to_tensor(faces: list[FaceInfo], device: str) -> Any:
    """Aligned crops as (B, 3, 256, 256) float32 in [-1, 1]."""
    import torch
    import torch.nn.functional as F

    x = torch.from_numpy(np.stack([f.aligned.crop for f in faces])).permute(0, 3, 1, 2).float() / 127.5 - 1.0
    if x.shape[-1] != 256:
        x = F.interpolate(x, size=(256, 256), mode="bilinear", align_corners=False, antialias=True)
    return x.to(device)


def _to_crops(y: Any, faces: list[FaceInfo]) -> list[np.ndarray]:
    import cv2

    arr = ((y.detach().clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).cpu().numpy()
    out = []
    for a, f in zip(arr, faces, strict=True):
        out.append(a if a.shape[0] == f.aligned.size else cv2.resize(a, (f.aligned.size,) * 2))
    return out


def _cos(net: Any, a: Any, b: Any) -> Any:
    from ..models.irse import idloss_face_crop

    return (net(idloss_face_crop(a)) * net(idloss_face_crop(b))).sum(1)


def _missing(what: str, e: Exception) -> Exception:
    from ..errors import WeightsError

    return WeightsError(f"{what}: {str(e).splitlines()[0]}")


def _latent(
    faces: list[FaceInfo], beta: float, steps: int, device: str, weights: str | None, **_: Any
) -> list[tuple[np.ndarray, dict[str, Any]]]:
    """e4e inversion, then ``steps`` Adam steps on the W+ codes towards cos(ArcFace) = beta."""
    import torch

    from ..errors import PrivpixError
    from ..runtime import resolve_device

    device = resolve_device(device)
    hint = "run `privpix weights fetch e4e-ffhq` (and arcface-ir-se50), or use --model ksame"
    try:
        model = load_psp(weights or _resolved_path("e4e-ffhq"), "Encoder4Editing", device)
        net = identity_net(device)
        from ..bench.features import build_lpips

        lp = build_lpips("alex", device=device)
    except PrivpixError as e:
        raise _missing(f"deidentify --model latent needs weights ({hint})", e) from None
    for p in list(model.parameters()) + list(lp.parameters()):
        p.requires_grad_(False)
    x = _to_tensor(faces, device)
    with torch.no_grad():
        w0 = model.encode(x)
    w = w0.clone().requires_grad_(True)
    opt = torch.optim.Adam([w], lr=LATENT_LR)
    for _step in range(steps):
        y = model.decode(w, resize=True)
        cos = _cos(net, y, x)
        loss = (
            LATENT_LAMBDA_ID * (beta - cos).abs().mean()
            + LATENT_LAMBDA_LPIPS * lp(y, x).mean()
            + LATENT_LAMBDA_W * ((w - w0) ** 2).sum(-1).mean()
        )
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    with torch.no_grad():
        y = model.decode(w, resize=True)
        cos = _cos(net, y, x).cpu().numpy()
    return [
        (c, {"steps": steps, "arcface_similarity": round(float(s), 4)})
        for c, s in zip(_to_crops(y, faces), cos, strict=True)
    ]


def _private_encoder(
    faces: list[FaceInfo], beta: float, device: str, weights: str | None, **_: Any
) -> list[tuple[np.ndarray, dict[str, Any]]]:
    """One pass through the pSp model trained for ``beta`` (Private-Encoder)."""
    import torch

    from ..errors import WeightsError
    from ..runtime import resolve_device

    device = resolve_device(device)
    path = Path(weights) if weights else private_encoder_checkpoint(beta)
    if path is None:
        have = ", ".join(f"{b:g}" for b in sorted(private_encoder_checkpoints())) or "none"
        raise WeightsError(
            f"deidentify --model private-encoder: no checkpoint for beta {beta:g} (available: {have}); "
            f"train one with `privpix train deidentify FACES/ --beta {beta:g}`"
        )
    model = load_psp(path, "GradualStyleEncoder", device)
    trained = model.opts.get("target_id")
    if trained is not None and abs(float(trained) - beta) > 1e-6:
        raise WeightsError(f"{path}: trained for beta {float(trained):g}, not {beta:g}")
    from ..engines.batching import autocast, finite_or_float32, forward, half_dtype

    def fp32(x: Any) -> Any:
        with torch.no_grad():
            return model(x, resize=True)

    def reduced(x: Any) -> Any:
        with torch.no_grad(), autocast(device):
            return model(x, resize=True).float()

    def fn(x: Any) -> Any:
        return finite_or_float32(fp32, reduced, x, device=device)

    # the faces of every image computed together go through the network at once (on CUDA)
    y = forward(("private-encoder", id(model)), fn, _to_tensor(faces, device))
    extra: dict[str, Any] = {"checkpoint": path.name}
    if (half := half_dtype(device)) is not None:
        extra["precision"] = str(half).removeprefix("torch.")
    return [(c, dict(extra)) for c in _to_crops(y, faces)]


_BACKENDS: dict[str, Callable[..., list[tuple[np.ndarray, dict[str, Any]]]]] = {
    "latent": _latent,
    "private-encoder": _private_encoder,
}
