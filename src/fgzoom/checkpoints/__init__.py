"""Checkpoint files: atomic writes, weights-only reads, the shareable model folder, foreign weights for timm."""
