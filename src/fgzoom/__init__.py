"""fgzoom: fine-grained visual classification with attention-crop zoom."""

__version__ = "0.1.0"
