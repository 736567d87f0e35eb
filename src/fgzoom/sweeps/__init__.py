"""Sweep analysis: summarize a multirun folder, resume a sweep, compare run configs."""
