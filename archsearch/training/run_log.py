"""What a training run records, in MLflow through :mod:`archsearch.tracking` (never MLflow
directly) and in its log: the run's tags (the git commit among them), its inputs (parameters,
the resolved config, the analysis table, the dataset, a grid of augmented samples), its outputs
(plots, the best checkpoint, the best weights as a logged model), whether it samples system
metrics, and its start and closing lines.
"""

from __future__ import annotations

import hashlib
import json
import logging
import subprocess
import time
from pathlib import Path

import numpy as np
from omegaconf import OmegaConf

from archsearch.errors import ConfigError
from archsearch.grammar.budget import parse_budget
from archsearch.grammar.table import format_table
from archsearch.tracking import flatten, size_metrics, ui_link
from archsearch.training.augment import save_grid
from archsearch.training.engine import TrainState
from archsearch.training.plots import write_diagram, write_plots
from archsearch.training.run_setup import RunSetup

__all__ = ["dataset_input", "git_sha", "gpu_uuids", "log_done", "log_inputs", "log_outputs", "log_start", "run_tags",
           "system_metrics_interval"]

log = logging.getLogger("archsearch")

# torch (and archsearch.grammar.build, which imports it) is imported inside _log_model:
# archsearch.train imports the training modules at its top and refuses a mistyped knob before torch
# is loaded, and `from archsearch import fit` loads torch only when called


def git_sha(cwd: Path) -> str:
    """The commit checked out in ``cwd`` (``-dirty`` with uncommitted changes), or ``unknown``."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=5)
        sha = out.stdout.strip()
        if sha:
            dirty = subprocess.run(["git", "status", "--porcelain", "-uno"], cwd=cwd, capture_output=True,
                                   text=True, timeout=5).stdout.strip()
            return sha + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        pass
    return "unknown"


def run_tags(s: RunSetup, cfg, resolved: dict, extra: dict | None) -> dict:
    """The run's MLflow tags: model, spec hash, git commit, device, precision and compile choices
    (with why), seed, data source, and the caller's ``extra``."""
    return {"model": s.spec.name, "spec_hash": s.spec_hash, "git_commit": git_sha(s.base_dir),
            "device": str(s.engine.precision.device), **s.engine.precision.tags(),
            **s.engine.compiled.tags(), "seed": int(cfg.seed),
            "data": resolved["data"].get("source"), **(extra or {})}


def system_metrics_interval(v) -> float | None:
    """``trainer.system_metrics``: false | true (every 10 s) | seconds -> the interval, or None."""
    if v is None or v is False:
        return None
    if v is True:
        v = 10.0
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not v > 0:
        raise ConfigError(f"trainer.system_metrics: must be false, true or a sampling interval in seconds > 0; "
                          f"got {v!r}")
    try:  # an optional dependency: asked for only when system metrics are
        import psutil  # noqa: F401  (what MLflow samples with)
    except ImportError:
        raise ConfigError("trainer.system_metrics: needs psutil (pip install psutil)") from None
    return float(v)


def gpu_uuids(device) -> list[str] | None:
    """The UUID of the GPU a run computes on (what its system metrics sample), None on a CPU."""
    if device.type != "cuda":
        return None
    import torch  # a CUDA run has it loaded

    return [str(torch.cuda.get_device_properties(device).uuid)]


def log_inputs(run, cfg, resolved: dict, s: RunSetup) -> None:
    """Parameters, the resolved config, the analysis table, the model's picture and a grid of augmented
    samples."""
    r, d = s.analysis, s.data
    params = flatten({k: v for k, v in resolved.items() if k not in ("tracking", "trial", "hydra")})
    params.update({"model.params": r.params, "model.rf": r.rf, "model.macs": r.macs,
                   "model.spec_hash": s.spec_hash, "data.n_train": len(d.x_train),
                   "data.n_val": len(d.x_val), "data.n_test": len(d.x_test)})
    run.log_params(params)
    run.log_metrics(size_metrics(r))  # the columns users compare, beside val_acc, test_acc and epochs
    if run.enabled:
        run.log_dataset(**dataset_input(resolved["data"], d, s.base_dir))
    (s.out / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    budget = parse_budget(resolved["budget"])
    (s.out / "analysis.txt").write_text(format_table(r, budget, []) + "\n")
    run.log_artifact(s.out / "config.yaml")
    run.log_artifact(s.out / "analysis.txt")
    run.log_artifact(write_diagram(s.out, r, budget))  # the run page shows what was trained
    if s.pipeline is not None and run.enabled:
        seed = int(cfg.seed)
        idx = np.random.default_rng(seed).choice(len(d.x_train), size=min(32, len(d.x_train)), replace=False)
        s.pipeline.set_random_seed(seed)
        aug = np.stack([s.pipeline(image=im)["image"] for im in d.x_train[idx]])
        run.log_artifact(save_grid(aug, str(s.out / "augmented_samples.png"), [d.classes[i] for i in d.y_train[idx]]))


def dataset_input(cfg_data: dict, d, base_dir: Path) -> dict:
    """The data as MLflow sees it: name, source, a digest of the exact splits, their sizes."""
    src = str(cfg_data.get("source"))
    h = hashlib.sha256()
    for a in (d.x_train, d.y_train, d.x_val, d.y_val, d.x_test, d.y_test):
        h.update(str(a.shape).encode())
        h.update(a.tobytes())
    if src == "synthetic":
        name, source_type, source = "synthetic", "synthetic", {"uri": "synthetic", "seed": cfg_data.get("seed")}
    else:
        root = Path(str(cfg_data.get("root"))).expanduser()
        root = root if root.is_absolute() else base_dir / root
        name, source_type, source = (src if src == "cifar10" else root.name), "local", {"uri": str(root.resolve())}
    c, hh, w = d.image_shape
    profile = {"num_rows": len(d.x_train), "train": len(d.x_train), "val": len(d.x_val), "test": len(d.x_test),
               "classes": d.num_classes, "image": f"{c}x{hh}x{w} uint8"}
    schema = {"mlflow_tensorspec": {
        "features": json.dumps([{"type": "tensor", "tensor-spec": {"dtype": "uint8", "shape": [-1, hh, w, c]}}]),
        "targets": json.dumps([{"type": "tensor", "tensor-spec": {"dtype": str(d.y_train.dtype), "shape": [-1]}}])}}
    return {"name": name, "digest": h.hexdigest()[:10], "source_type": source_type, "source": source,
            "profile": profile, "schema": schema}


def log_outputs(run, s: RunSetup, state: TrainState, cfg, preds) -> None:
    """With tracking on: the plots (curves, confusion matrix, misclassified test images), the
    best checkpoint (``tracking.log_checkpoint``) and the logged model (``tracking.log_model``)."""
    if not run.enabled:
        return
    for p in write_plots(s.out, state.history, s.data.classes, s.data.y_test, preds, s.data.x_test):
        run.log_artifact(p)
    if cfg.trainer.checkpoint and (s.out / "best.pt").exists() and cfg.tracking.get("log_checkpoint", True):
        run.log_artifact(s.out / "best.pt", "checkpoints")
    if cfg.tracking.get("log_model", True):
        _log_model(s, state, run)


def _log_model(s: RunSetup, state: TrainState, run) -> None:
    """The best weights (``best.pt``; the final ones without checkpoints) as an MLflow PyTorch
    model taking float32 RGB in [0, 1], N x 3 x H x W (the normalisation is its first layer)."""
    import torch

    from archsearch.grammar.build import build_model

    t0, net, step = time.time(), build_model(s.spec), len(state.history)
    best = s.out / "best.pt"
    if best.exists():
        ck = torch.load(best, map_location="cpu", weights_only=False)
        net.load_state_dict(ck["ema"]["model"] if ck.get("ema") else ck["model"])
        step = int(ck["epoch"]) + 1
    else:
        net.load_state_dict({k: v.cpu() for k, v in s.engine.eval_model.state_dict().items()})
    mean, std = torch.tensor(s.data.mean), torch.tensor(s.data.std)
    norm = torch.nn.Conv2d(3, 3, 1).requires_grad_(False)  # (x - mean) / std as a 1x1 conv
    norm.weight.copy_(torch.diag(1 / std).view(3, 3, 1, 1))
    norm.bias.copy_(-mean / std)
    c, h, w = s.data.image_shape
    example = (s.data.x_test[:1].transpose(0, 3, 1, 2) / 255.0).astype(np.float32).reshape(1, c, h, w)
    model_id = run.log_model(torch.nn.Sequential(norm, net.float()), example, step, name=s.spec.name,
                             params={"spec_hash": s.spec_hash, "epoch": step},
                             metadata={"input": f"float32 N x {c} x {h} x {w}, RGB in [0, 1]",
                                       "output": "logits", "classes": list(s.data.classes)})
    log.info("logged model %s (epoch %d weights) in %.1fs", model_id, step, time.time() - t0)


def log_start(s: RunSetup, resumed: bool) -> None:
    """The run's first line: model, size, data, device, precision, compilation, workers, batch."""
    r, eng = s.analysis, s.engine
    log.info("%s:%s params %s, RF %d, %s MACs | %s | device %s, %s, %s, %d workers, batch %d",
             s.spec.name, " (resumed)" if resumed else "", f"{r.params:,}", r.rf, f"{r.macs:,}", s.data.summary(),
             eng.precision.device, eng.precision.describe(), eng.compiled.describe(), eng.workers, eng.batch_size)


def log_done(s: RunSetup, state: TrainState, run, test_acc: float, test_loss: float, parts: dict,
             wall: float) -> None:
    """The run's closing line (test accuracy and what each evaluation choice added, best val,
    size, epochs, wall time) and where its MLflow run is."""
    how = []
    if s.tta != "none":
        how.append(f"{s.tta} TTA, single view {parts['test_acc_no_tta']:.4f}")
    if s.engine.ema is not None:
        how.append(f"EMA weights, live weights {parts['test_acc_raw']:.4f}")
    has_val = len(s.data.x_val) > 0
    r = s.analysis
    log.info("done %s: test acc %.4f%s (loss %.4f), %s, %s params, RF %d, %d epochs, %.0fs wall",
             s.spec.name, test_acc, f" ({'; '.join(how)})" if how else "", test_loss,
             f"best val acc {state.best_val:.4f}" if has_val else "no validation split (data.val_size=0)",
             f"{r.params:,}", r.rf, len(state.history), wall)
    link = ui_link(run, run.run_id)
    if link:
        log.info("MLflow: %s", link)
