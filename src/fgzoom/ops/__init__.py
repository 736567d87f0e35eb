"""Pure tensor ops (typed functions, batched, no per-sample host syncs).

Modules, one job each:

* ``interpolation``: the interpolation modes and knobs, their one validator ``check_interpolation`` and their one
  text ``interp_label``.
* ``crop_resize``: the exact batched crop-and-resize (public API and argument checks); its weight tables and
  kernels are ``resize_kernels``, the weights of float (continuous) boxes ``resize_continuous``, its method
  choice (a CPU cost model) ``resize_cost``.
* ``crop_affine``: the differentiable crop of continuous boxes (``grid_sample``).
* ``attention_boxes``: boxes from attention maps (the rules, glimpses, k regions).
* ``proposals``: candidate boxes from attention maps (peaks x scales, non-maximum suppression; ``box=ranked``).
* ``boxes``: box geometry (grow, round, scale between grids, nest, masks, elementwise IoU); ``box_checks`` the
  argument checks of both.
* ``components``: 8-connected components of binary masks, their bounding boxes and the best IoU of a mask's
  component boxes with a box (the candidate boxes of MaxBoxAccV2).

The package re-exports the public functions; ``fgzoom.ops.crop_resize`` and ``fgzoom.ops.crop_affine`` are
therefore the functions here, their modules are reached with ``from fgzoom.ops.crop_resize import ...``.
"""

from fgzoom.ops.attention_boxes import *  # noqa: F403  (the names of attention_boxes.__all__)
from fgzoom.ops.attention_boxes import __all__ as _ATTENTION_BOX_NAMES
from fgzoom.ops.boxes import *  # noqa: F403  (the names of boxes.__all__)
from fgzoom.ops.boxes import __all__ as _BOX_NAMES
from fgzoom.ops.crop_affine import AFFINE_MODES, crop_affine
from fgzoom.ops.crop_resize import METHODS, crop_resize
from fgzoom.ops.interpolation import (
    ALIGN_CORNERS_MODES,
    ANTIALIAS_MODES,
    MODES,
    NEAREST_MODES,
    check_interpolation,
    interp_label,
)
from fgzoom.ops.proposals import *  # noqa: F403  (the names of proposals.__all__)
from fgzoom.ops.proposals import __all__ as _PROPOSAL_NAMES

__all__ = [
    *_ATTENTION_BOX_NAMES,
    *_BOX_NAMES,
    *_PROPOSAL_NAMES,
    "AFFINE_MODES",
    "ALIGN_CORNERS_MODES",
    "ANTIALIAS_MODES",
    "METHODS",
    "MODES",
    "NEAREST_MODES",
    "check_interpolation",
    "crop_affine",
    "crop_resize",
    "interp_label",
]
