"""privpix: remove privacy-sensitive content from photos.

Python API (same behaviour as the CLI commands)::

    from PIL import Image
    import privacy_cli as pp

    img = Image.open("photo.jpg")
    regions = pp.detect(img)                 # faces + personal text
    out = pp.blur(img, regions)              # or pp.pixelate / pp.fill / pp.erase
    pp.save_image(np.asarray(out), "photo_blur.jpg")   # atomic, metadata stripped

Heavy modules (torch, detectors, models) load on first use.
"""

import sys as _sys
import types as _types

from ._version import __version__

__all__ = [
    "__version__",
    "blur",
    "pixelate",
    "fill",
    "erase",
    "detect",
    "load_image",
    "save_image",
    "build_model",
    "Region",
    "Regions",
]


def __getattr__(name: str):  # lazy public API keeps `import privacy_cli` and `privpix --help` fast
    if name in ("blur", "pixelate", "fill", "erase", "detect"):
        from . import api

        return getattr(api, name)
    if name in ("load_image", "save_image"):
        from . import io

        return getattr(io, name)
    if name in ("Region", "Regions"):
        from . import regions

        return getattr(regions, name)
    if name == "build_model":
        from .models import build_model

        return build_model
    raise AttributeError(f"module 'privacy_cli' has no attribute {name!r}")


class _PublicModule(_types.ModuleType):
    """``privacy_cli.detect`` is the API function, although a subpackage has the same name: importing
    the subpackage sets the package attribute to the module, which would break a second
    ``pp.detect(img)``. Submodule imports go through ``sys.modules`` and are unaffected."""

    def __getattribute__(self, name: str):
        if name == "detect":
            from .api import detect

            return detect
        return super().__getattribute__(name)


_sys.modules[__name__].__class__ = _PublicModule
