"""Micro-benchmarks of fgzoom ops (importable; entry scripts live in ``scripts/``)."""

from fgzoom.bench.crop_resize_bench import bench_crop_resize, format_table

__all__ = ["bench_crop_resize", "format_table"]
