"""Lightning add-ons: checkpoint selection, EMA of the weights, the SLURM requeue checkpoint, loggers."""
