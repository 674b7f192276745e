"""One training run: data and augmentation, precision and compilation, optimiser and recipe,
the epoch loop (engine), evaluation, checkpoints, plots, and the run itself (job).
"""
