"""Entries of the scripts/ commands (train, eval, predict, export, save_model) and what they share: config checks,
instantiation, run folders under a scheduler, one-line errors."""
