"""The bench's content-keyed disk cache (detections, outputs, metric values, features) and its counters."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

# --------------------------------------------------------------------------------------------- cache


def default_cache_dir() -> Path:
    """``$PRIVPIX_CACHE_DIR/bench``, else ``$XDG_CACHE_HOME/privpix/bench``, else ``~/.cache/privpix/bench``."""
    env = os.environ.get("PRIVPIX_CACHE_DIR")
    if env:
        return Path(env).expanduser() / "bench"
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "privpix" / "bench"


def _h(*parts: Any) -> str:
    """sha256 over the canonical JSON of ``parts`` (24 hex digits)."""
    blob = json.dumps(parts, sort_keys=True, default=str, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()[:24]


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


class DiskCache:
    """Content-addressed store: PNG images, JSON documents and (via ``features``) arrays.

    ``root=None`` keeps everything in memory for this run only. Writes are atomic (tmp + rename).
    """

    def __init__(self, root: Path | None) -> None:
        from .features import FeatureCache

        self.root = Path(root) if root is not None else None
        self._mem_json: dict[str, Any] = {}
        if self.root is not None:
            self.root.mkdir(parents=True, exist_ok=True)
            self.features = FeatureCache(self.root / "features")
        else:
            self.features = FeatureCache(None)

    def _path(self, kind: str, key: str, suffix: str) -> Path:
        assert self.root is not None
        return self.root / kind / key[:2] / f"{key}{suffix}"

    def get_json(self, kind: str, key: str) -> Any | None:
        mk = f"{kind}/{key}"
        if mk in self._mem_json:
            return self._mem_json[mk]
        if self.root is None:
            return None
        p = self._path(kind, key, ".json")
        try:
            value = json.loads(p.read_text())
        except (OSError, ValueError):
            return None
        self._mem_json[mk] = value
        return value

    def put_json(self, kind: str, key: str, value: Any) -> None:
        self._mem_json[f"{kind}/{key}"] = value
        if self.root is None:
            return
        p = self._path(kind, key, ".json")
        p.parent.mkdir(parents=True, exist_ok=True)
        tmp = p.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(value, sort_keys=True, default=_json_default))
        tmp.replace(p)

    def has_image(self, key: str) -> bool:
        """True when the output image ``key`` is stored (always True without a cache folder)."""
        return self.root is None or self._path("outputs", key, ".png").is_file()

    def get_image(self, key: str) -> np.ndarray | None:
        if self.root is None:
            return None
        p = self._path("outputs", key, ".png")
        if not p.is_file():
            return None
        import cv2

        bgr = cv2.imread(str(p), cv2.IMREAD_COLOR)
        if bgr is None:
            return None
        return np.ascontiguousarray(bgr[..., ::-1])

    def put_image(self, key: str, rgb: np.ndarray) -> None:
        """Store an (H, W, 3) uint8 RGB output losslessly (PNG); a no-op without a cache folder."""
        if self.root is None:
            return
        import cv2

        p = self._path("outputs", key, ".png")
        p.parent.mkdir(parents=True, exist_ok=True)
        tmp = p.with_name(f"{key}.{os.getpid()}.tmp.png")
        if not cv2.imwrite(str(tmp), np.ascontiguousarray(rgb[..., ::-1])):
            raise OSError(f"{tmp}: cannot write cache image")
        tmp.replace(p)


def _json_default(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


@dataclass
class CacheStats:
    """What a run computed and what it reused (a re-run of an unchanged bench computes nothing)."""

    outputs_computed: int = 0
    outputs_cached: int = 0
    values_computed: int = 0
    values_cached: int = 0
    detections_computed: int = 0
    detections_cached: int = 0

    @property
    def computed(self) -> int:
        return self.outputs_computed + self.values_computed + self.detections_computed

    def add(self, other: CacheStats) -> None:
        for k in asdict(self):
            setattr(self, k, getattr(self, k) + getattr(other, k))

    def to_json(self) -> dict[str, int]:
        d = asdict(self)
        d["computed"] = self.computed
        return d
