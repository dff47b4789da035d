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
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..align import AlignedFace, align_face, face_outline, paste_back
from ..errors import MethodError, UsageError
from . import register_method
from .compose import check_inputs, components, composite

MODELS = ("auto", "private-encoder", "latent", "ksame")
ON_FAIL = ("blur", "mask", "error")
DEFAULT_K = 5
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
            if desc is None:  # pragma: no cover - embed with a box always returns a vector
                failed.append(region)
                continue
            faces.append(FaceInfo(region, fl.box, al, desc, appearance_vector(al), source))
    return faces, failed


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


def _fallback(image: np.ndarray, mask: np.ndarray, region: tuple[int, int, int, int], how: str) -> np.ndarray:
    x0, y0, x1, y1 = region
    local = np.zeros_like(mask)
    local[y0:y1, x0:x1] = mask[y0:y1, x0:x1]
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
    donors: DonorPool | None = None,
    on_fail: str = "blur",
    steps: int = 100,
    box_scale: float = 1.3,
    device: str = "cpu",
    weights: str | None = None,
    judge: bool = True,
) -> tuple[np.ndarray, dict[str, Any]]:
    """De-identify the faces in the regions of ``mask`` (H, W) [0, 1] of ``image`` (H, W, 3) uint8.

    beta: target identity similarity in [0, 1]. model: see :data:`MODELS`. k / donors: k-Same donor
    count and pool (a pool built from this image alone has no donors). on_fail: what happens to a
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
    pool = donors if donors is not None else DonorPool()
    cached = pool.lookup(image)
    faces, failed = cached if cached is not None else analyse_faces(image, mask, box_scale)
    chosen = choose_model(model, beta, pool, k) if faces else (model if model != "auto" else "none")
    out = image.copy()
    records: list[dict[str, Any]] = []
    for region in failed:
        if on_fail == "error":
            raise MethodError(f"no facial landmarks found in region {list(region)} (--on-fail error)")
        out = _fallback(out, mask, region, on_fail)
        records.append({"region": list(region), "backend": on_fail, "reason": "no facial landmarks"})
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


def private_encoder_checkpoint(beta: float) -> str | None:
    """Path of a local Private-Encoder checkpoint trained for ``beta`` (None when there is none)."""
    return None


def latent_weights_present() -> bool:
    """True when the e4e checkpoint (generator + latent_avg) is present locally (never downloads)."""
    return False


def _latent(faces: list[FaceInfo], **kw: Any) -> list[tuple[np.ndarray, dict[str, Any]]]:
    raise MethodError("latent backend not available yet")


def _private_encoder(faces: list[FaceInfo], **kw: Any) -> list[tuple[np.ndarray, dict[str, Any]]]:
    raise MethodError("private-encoder backend not available yet")


_BACKENDS: dict[str, Callable[..., list[tuple[np.ndarray, dict[str, Any]]]]] = {
    "latent": _latent,
    "private-encoder": _private_encoder,
}
