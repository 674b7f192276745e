"""The engine: model, optimiser, schedule, weight average and batches of one run, and the
epoch loop over them. One method per phase: :meth:`Engine.train_epoch`,
:meth:`Engine.validate`, :meth:`Engine.test`; :class:`TrainState` is what moves from epoch
to epoch (and into checkpoints, with the engine's :meth:`~Engine.state_dict`).
"""

from __future__ import annotations

import logging
import math
import sys
import time
from dataclasses import dataclass, field
from typing import Any

from tqdm import tqdm

from archsearch.errors import NonFiniteLoss
from archsearch.training.batches import BatchAug, EpochBatches, make_loader, to_device, worker_count
from archsearch.training.compilation import CompileChoice
from archsearch.training.evaluate import bn_lags, evaluate, refresh_bn_stats
from archsearch.training.mixing import MixSpec, mix_batch, mixed_loss
from archsearch.training.optim import WeightEMA, effective_lr, make_optimizer, make_scheduler
from archsearch.training.precision import Precision

__all__ = ["Engine", "TrainState"]

log = logging.getLogger("archsearch")

# torch is imported in the methods that use it: archsearch.train imports the training modules at its
# top and refuses a mistyped knob before torch is loaded, and `from archsearch import fit` loads torch
# only when called


@dataclass
class TrainState:
    """Progress of a run: epochs done, the best validation accuracy so far, one record per epoch."""

    epoch: int = 0  # epochs completed; the next epoch to run (0-based)
    best_val: float = -1.0
    history: list[dict] = field(default_factory=list)
    run_id: str | None = None  # the MLflow run, so a resumed run continues it

    def record(self, rec: dict, has_val: bool) -> bool:
        """Append an epoch's record; -> whether it is the best so far (always, without a val split)."""
        self.history.append(rec)
        self.epoch = rec["epoch"]
        is_best = rec["val_acc"] > self.best_val if has_val else True
        self.best_val = max(self.best_val, rec["val_acc"]) if has_val else float("nan")
        return is_best


class Engine:
    """Everything that changes during training, built once per run from the config."""

    def __init__(self, *, cfg, model, data, precision: Precision, pipelines: tuple[Any, Any], epochs: int,
                 cooldown_epochs: int, ema_decay: float | None, alternate_flip: tuple[bool, bool] = (False, False),
                 compiled: tuple[CompileChoice, Any] | None = None, mix: MixSpec | None = None):
        """``pipelines``: the training and cool-down augmentation (None: none); the last
        ``cooldown_epochs`` epochs use the second. ``alternate_flip``: whether each of them flips
        alternate epochs instead of at random. ``compiled``: (choice, the module a full batch runs
        through); None: eager. ``mix``: batch mixing (mixup / cutmix), None: off."""
        import torch

        tcfg, dev = cfg.trainer, precision.device
        self.cfg, self.data, self.precision, self.epochs = cfg, data, precision, epochs
        self.model = model
        mean_px = [m * 255 for m in data.mean]
        self.mean = torch.tensor(mean_px, device=dev).view(1, 3, 1, 1)
        self.istd = (1.0 / (torch.tensor(data.std, device=dev) * 255)).view(1, 3, 1, 1)
        self.batch_size = int(tcfg.batch_size)
        self.sampler = EpochBatches(len(data.x_train), self.batch_size, int(cfg.seed),
                                    cooldown_from=epochs - cooldown_epochs if cooldown_epochs else None)
        self.workers = worker_count(tcfg.workers, dev)
        self.loader = make_loader(BatchAug(data.x_train, data.y_train, *pipelines, alternate=alternate_flip,
                                           seed=int(cfg.seed)), self.sampler, self.workers, dev)
        self.lr = effective_lr(cfg.optim, self.batch_size)  # optim.lr, scaled to the batch size if asked
        self.opt = make_optimizer(cfg.optim, model, self.lr)
        self.sched, self.sched_kind = make_scheduler(cfg.sched, self.opt, self.lr, epochs, len(self.sampler))
        self.mix = mix
        self.scaler = torch.amp.GradScaler(dev.type, enabled=precision.amp == torch.float16)
        # (choice, module): the compiled wrapper takes the full batches (archsearch/training/compilation.py)
        self.compiled, self.step_fn = compiled or (CompileChoice(False), model)
        self.ema = WeightEMA(model, ema_decay) if ema_decay else None
        self.eval_model = self.ema.model if self.ema else model  # what val/test accuracy and best.pt describe
        self.label_smoothing = float(tcfg.label_smoothing)
        self.log_every = max(1, int(tcfg.log_every))
        # a bar only on a terminal: written to a file or a pipe it interleaves with the log lines (the
        # epoch's own line says the same once an epoch ends)
        # epochs too short for BatchNorm's running statistics to follow the weights: recomputed before evaluating
        self.bn_refresh = bn_lags(model, len(self.sampler))
        self.show_bar = bool(tcfg.get("progress", True)) and sys.stderr.isatty() and sys.stdout.isatty()

    # -------------------------------------------------------------- training
    def _step(self, xb, yb, draw=None):
        """One optimiser step on a host batch (mixed as ``draw`` says, None: not mixed) ->
        (loss, logits), both still on the device."""
        import torch
        import torch.nn.functional as F

        p = self.precision
        x = to_device(xb, p.device, self.mean, self.istd, p.channels_last)
        y = yb.to(p.device, non_blocking=True)
        if draw is not None:
            x, y_partner = mix_batch(x, y, draw)
            if p.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
        fn = self.step_fn if len(y) == self.batch_size else self.model  # a new shape would compile again
        with torch.autocast(p.device.type, dtype=p.amp or torch.float32, enabled=p.amp is not None):
            logits = fn(x)
        if draw is None:
            loss = F.cross_entropy(logits.float(), y, label_smoothing=self.label_smoothing)
        else:
            loss = mixed_loss(logits.float(), y, y_partner, draw.lam, self.label_smoothing)
        self.opt.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.opt)
        self.scaler.update()
        if self.sched_kind == "step":
            self.sched.step()
        if self.ema is not None:
            self.ema.update()
        return loss, logits, y

    def train_epoch(self, epoch: int) -> dict:
        """One pass over the training split (``epoch`` is 0-based) -> its loss, accuracy and speed.
        Metrics accumulate on the device; the host syncs every ``trainer.log_every`` steps. On mixed
        batches the accuracy counts against each image's own label."""
        import torch

        self.sampler.epoch = epoch
        mix = self.mix if self.mix is not None and (self.mix.cooldown or not self.sampler.in_cooldown()) else None
        draws = mix.draws(int(self.cfg.seed), epoch) if mix else None
        self.model.train()
        dev, n_steps = self.precision.device, len(self.sampler)
        loss_sum = torch.zeros((), device=dev)
        correct = torch.zeros((), device=dev, dtype=torch.long)
        seen, t0 = 0, time.time()
        bar = tqdm(total=n_steps, desc=f"epoch {epoch + 1}/{self.epochs}", leave=False, disable=not self.show_bar,
                   dynamic_ncols=True, file=sys.stderr)
        for step, (xb, yb) in enumerate(self.loader):
            draw = mix.draw(draws, len(yb), xb.shape[1], xb.shape[2]) if mix else None
            loss, logits, y = self._step(xb, yb, draw)
            loss_sum += loss.detach() * len(y)
            correct += (logits.detach().argmax(1) == y).sum()
            seen += len(y)
            if (step + 1) % self.log_every == 0 or step + 1 == n_steps:
                self._progress(bar, step + 1, epoch, loss_sum.item(), correct.item(), seen, time.time() - t0)
        bar.close()
        secs = time.time() - t0
        return {"epoch": epoch + 1, "train_loss": loss_sum.item() / max(seen, 1),
                "train_acc": correct.item() / max(seen, 1), "epoch_seconds": secs,
                "images_per_s": seen / max(secs, 1e-9)}

    def _progress(self, bar, steps_done: int, epoch: int, loss_sum: float, correct: int, seen: int,
                  elapsed: float) -> None:
        if not math.isfinite(loss_sum):
            low = f", or train in fp32 (trainer.amp=off; {self.precision.amp_short} in use)" if self.precision.amp else ""
            raise NonFiniteLoss(f"training loss became {loss_sum} in epoch {epoch + 1} (step {steps_done}); "
                                f"lower optim.lr (set to {self.cfg.optim.lr}; {self.lr:g} in use){low} "
                                "or check the data")
        bar.update(steps_done - bar.n)
        bar.set_postfix(loss=f"{loss_sum / seen:.3f}", acc=f"{correct / seen:.3f}",
                        img_s=f"{seen / max(elapsed, 1e-9):.0f}")

    def end_epoch(self, val_loss: float) -> float:
        """Step an epoch-wise schedule; -> the learning rate now in use."""
        if self.sched_kind == "plateau":
            self.sched.step(val_loss)
        return self.opt.param_groups[0]["lr"]

    # -------------------------------------------------------------- evaluation
    def _eval(self, model, x, y, **kw):
        p = self.precision
        return evaluate(model, x, y, p.device, self.mean, self.istd, p.amp, p.channels_last,
                        batch_size=int(self.cfg.trainer.eval_batch_size), **kw)

    def validate(self) -> dict:
        """Single-view validation of the evaluated weights (and of the live ones under EMA); on short
        epochs (:func:`~archsearch.training.evaluate.bn_lags`) with BatchNorm statistics recomputed."""
        d = self.data
        if self.bn_refresh:
            p = self.precision
            for m in {id(self.model): self.model, id(self.eval_model): self.eval_model}.values():
                refresh_bn_stats(m, d.x_train, p.device, self.mean, self.istd, p.channels_last, self.batch_size)
        out = dict(zip(("val_loss", "val_acc"), self._eval(self.eval_model, d.x_val, d.y_val)[:2]))
        if self.ema is not None:  # the live weights too: what EMA adds is visible in every run
            out["val_loss_raw"], out["val_acc_raw"], _ = self._eval(self.model, d.x_val, d.y_val)
        return out

    def test(self, tta: str) -> tuple[float, float, Any, dict]:
        """-> (loss, acc, predictions, parts): ``parts`` holds what each evaluation-side choice
        adds, measured on the same weights (``test_acc_raw`` without EMA, ``test_acc_no_tta``)."""
        d = self.data
        loss, acc, preds = self._eval(self.eval_model, d.x_test, d.y_test, keep=True, tta=tta)
        parts = {}
        if self.ema is not None:
            parts["test_acc_raw"] = self._eval(self.model, d.x_test, d.y_test, tta=tta)[1]
        if tta != "none":
            parts["test_acc_no_tta"] = self._eval(self.eval_model, d.x_test, d.y_test)[1]
        return loss, acc, preds, parts

    # -------------------------------------------------------------- checkpoints
    def state_dict(self) -> dict:
        return {"model": self.model.state_dict(), "optimizer": self.opt.state_dict(),
                "scheduler": self.sched.state_dict() if self.sched is not None else None,
                "scaler": self.scaler.state_dict(), "ema": self.ema.state_dict() if self.ema else None}

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.opt.load_state_dict(state["optimizer"])
        if self.sched is not None and state.get("scheduler"):
            self.sched.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        if self.ema is not None:
            self.ema.load_state_dict(state["ema"])
