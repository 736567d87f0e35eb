"""The interpolation options of a 2-D ``F.interpolate`` call, and their one validator.

Every place that accepts a ``mode``/``align_corners``/``antialias`` triple (``crop_resize``, the zoom config,
the summary tables) takes the lists below and calls ``check_interpolation``, so they cannot disagree; every
place that writes one as text (sweep tables and plots, figure titles, the crop_resize bench) calls
``interp_label``, so they all read alike.

Accepted ``mode`` strings (every 2-D mode of ``F.interpolate``), with the knobs each takes:

* ``"nearest"``, ``"nearest-exact"``: ``align_corners=None``, ``antialias=False``.
* ``"bilinear"``, ``"bicubic"``: ``align_corners`` None, False or True (None means False); ``antialias``
  False or True.
* ``"area"``: adaptive average pooling; ``align_corners=None``, ``antialias=False``.
* ``"lanczos"``: ``antialias=True`` (required); ``align_corners`` None or False, never True.

The lanczos rule. ``F.interpolate`` has one lanczos geometry, the pixel-centre one of
``align_corners=False``: it accepts ``align_corners=False`` (the same result as None) and rejects ``True``.
``crop_resize`` reads its lanczos weights off ``F.interpolate`` itself, so it implements ``False`` exactly
(tested against the per-sample loop) and has no ``True`` to implement. Hence: ``False`` is accepted
everywhere, ``True`` rejected everywhere.

This module imports nothing beyond the standard library.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from typing import NamedTuple

__all__ = [
    "ALIGN_CORNERS_MODES",
    "ANTIALIAS_MODES",
    "MODES",
    "NEAREST_MODES",
    "ResizeSpec",
    "check_interpolation",
    "interp_label",
    "resize_spec",
]

MODES = ("nearest", "nearest-exact", "bilinear", "bicubic", "area", "lanczos")
ALIGN_CORNERS_MODES = ("bilinear", "bicubic", "lanczos")  # lanczos: None or False only
ANTIALIAS_MODES = ("bilinear", "bicubic", "lanczos")  # lanczos: True only
NEAREST_MODES = ("nearest", "nearest-exact")


def check_interpolation(mode: str, align_corners: bool | None, antialias: bool, *, prefix: str = "") -> None:
    """Raise ``ValueError`` unless ``(mode, align_corners, antialias)`` is a valid ``F.interpolate`` setting.

    The rules are those of the module docstring. The message is one line,
    ``f"{prefix}{argument}={value!r}: "`` followed by what is allowed and what to do, e.g. with
    ``prefix="model.zoom."``: ``model.zoom.align_corners=False: mode=nearest does not take align_corners;
    leave it None (null in a config); it applies to ('bilinear', 'bicubic', 'lanczos')``.

    Args:
        mode: one of ``MODES``.
        align_corners: None, False or True, for ``ALIGN_CORNERS_MODES`` only (lanczos: not True).
        antialias: False or True; True for ``ANTIALIAS_MODES`` only, and required by lanczos.
        prefix: prepended to the argument's name, e.g. the config group ``"model.zoom."``.

    Raises:
        ValueError: on the first argument that is not allowed (checked in the order mode, align_corners,
            antialias).
    """
    p = prefix
    if not isinstance(mode, str) or mode not in MODES:
        raise ValueError(f"{p}mode={mode!r}: must be one of {MODES}")
    if align_corners not in (None, True, False):
        raise ValueError(f"{p}align_corners={align_corners!r}: must be None, True or False")
    if align_corners is not None and mode not in ALIGN_CORNERS_MODES:
        raise ValueError(
            f"{p}align_corners={align_corners!r}: mode={mode} does not take align_corners; leave it None "
            f"(null in a config); it applies to {ALIGN_CORNERS_MODES}"
        )
    if mode == "lanczos" and align_corners:
        raise ValueError(
            f"{p}align_corners={align_corners!r}: mode=lanczos has only the align_corners=False geometry "
            "(PyTorch's lanczos kernel); use None or False"
        )
    if antialias not in (True, False):
        raise ValueError(f"{p}antialias={antialias!r}: must be True or False")
    if antialias and mode not in ANTIALIAS_MODES:
        raise ValueError(
            f"{p}antialias={antialias!r}: mode={mode} does not antialias; use one of {ANTIALIAS_MODES} or "
            "antialias=False"
        )
    if mode == "lanczos" and not antialias:
        raise ValueError(f"{p}antialias={antialias!r}: mode=lanczos requires antialias=True; set it to True")


def interp_label(mode: str, align_corners: bool | None = None, antialias: bool = False) -> str:
    """The one text of an interpolation setting: ``<mode>[, align_corners=<true|false>][, antialias]``.

    ``align_corners`` is written when it is set (not None), lower-case as in a config; ``antialias`` when
    True. E.g. ``bilinear``, ``bicubic, align_corners=true, antialias``, ``lanczos, align_corners=false,
    antialias``.
    """
    label = str(mode)
    if align_corners is not None:
        label += f", align_corners={str(align_corners).lower()}"
    if antialias:
        label += ", antialias"
    return label


class ResizeSpec(NamedTuple):
    """Validated, hashable arguments of one ``F.interpolate`` call (per-axis pairs are ``(height, width)``).

    ``align_corners`` is False (not None) for the modes that take it; exactly one of ``size`` and
    ``scale_factor`` is set. Build it with ``resize_spec``.
    """

    mode: str
    align_corners: bool | None
    antialias: bool
    size: tuple[int, int] | None
    scale_factor: tuple[float, float] | None
    recompute_scale_factor: bool | None


def resize_spec(
    mode: str = "bilinear",
    align_corners: bool | None = None,
    antialias: bool = False,
    size: int | Sequence[int] | None = None,
    scale_factor: float | Sequence[float] | None = None,
    recompute_scale_factor: bool | None = None,
) -> ResizeSpec:
    """Validate the resize arguments of ``F.interpolate`` (2-D) and return them as a ``ResizeSpec``.

    Args:
        mode, align_corners, antialias: as in ``check_interpolation``.
        size: ``int`` or ``(h, w)`` of positive ints. Exactly one of ``size`` and ``scale_factor``.
        scale_factor: positive finite ``float`` or ``(sh, sw)``.
        recompute_scale_factor: None, False or True; True only with ``scale_factor``.

    Returns:
        ``ResizeSpec`` with ``align_corners`` None replaced by False for the modes that take it, and
        ``size``/``scale_factor`` as pairs.

    Raises:
        ValueError: naming the first argument that is not allowed, its value and what is allowed.
    """
    check_interpolation(mode, align_corners, antialias)
    if mode in ALIGN_CORNERS_MODES and align_corners is None:
        align_corners = False  # F.interpolate's default for these modes
    if recompute_scale_factor not in (None, True, False):
        raise ValueError(f"recompute_scale_factor={recompute_scale_factor!r}: must be None, True or False")
    if (size is None) == (scale_factor is None):
        raise ValueError(
            f"size={size!r}, scale_factor={scale_factor!r}: exactly one of size and scale_factor must be given"
        )
    out_size: tuple[int, int] | None = None
    scales: tuple[float, float] | None = None
    if size is not None:
        if recompute_scale_factor:
            raise ValueError(
                f"recompute_scale_factor={recompute_scale_factor!r}: only meaningful with scale_factor, got it "
                f"with an explicit size={size!r}; use None or False"
            )
        out_size = _pair(size, "size", integer=True)
    else:
        scales = _pair(scale_factor, "scale_factor", integer=False)
    return ResizeSpec(mode, align_corners, bool(antialias), out_size, scales, recompute_scale_factor)


def _pair(value: object, name: str, *, integer: bool) -> tuple:
    """``value`` or ``(h, w)`` as a pair of positive ints (``integer``) or positive finite floats."""
    if integer:
        kind = "a positive int or a pair (h, w) of positive ints"
    else:
        kind = "a positive float or a pair (sh, sw) of positive floats"
    items = list(value) if isinstance(value, (tuple, list)) else [value, value]  # torch.Size is a tuple
    number = numbers.Integral if integer else numbers.Real
    ok = len(items) == 2 and all(
        isinstance(v, number) and not isinstance(v, bool) and math.isfinite(v) and v > 0 for v in items
    )
    if not ok:
        raise ValueError(f"{name}={value!r}: must be {kind}")
    return (int(items[0]), int(items[1])) if integer else (float(items[0]), float(items[1]))
