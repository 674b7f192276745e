"""One training run: data and augmentation, precision and compilation, optimiser and recipe,
the epoch loop (engine), evaluation, checkpoints, plots, everything before the first epoch
(run_setup), what a run records in MLflow and its log (run_log), and the run itself (job).
"""
