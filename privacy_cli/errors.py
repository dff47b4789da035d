"""Typed errors. The CLI maps each to a one-line message on stderr (see cli/output.py)."""

from __future__ import annotations


class PrivpixError(Exception):
    """Base class: a problem the user can act on; printed as one line, never a traceback."""

    exit_code = 1


class InputError(PrivpixError):
    """An input file is unreadable, corrupt, truncated, unsupported or too large."""


class RegionError(PrivpixError):
    """A region source (mask, boxes, annotations) is invalid or does not fit the image."""


class DetectorError(PrivpixError):
    """A detector failed on an image (the image then gets no output: privacy fails closed)."""


class MethodError(PrivpixError):
    """An obfuscation method failed on an image."""


class WeightsError(PrivpixError):
    """Pretrained weights are missing, unverifiable or in the wrong format."""


class UsageError(PrivpixError):
    """Options that cannot work together or have bad values (exit code 2)."""

    exit_code = 2
