"""Pure tensor ops (typed functions, batched, no per-sample host syncs)."""

from fgzoom.ops.crop_resize import crop_resize

__all__ = ["crop_resize"]
