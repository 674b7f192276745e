"""What the parts measure on, read from the options: the model's name, the training images, and
the model as a run with ``trainer.amp=auto`` / ``trainer.channels_last=auto`` has it here."""

from __future__ import annotations

from typing import Any

from omegaconf import OmegaConf

from archsearch import build_model, load_spec
from archsearch.grammar.spec import spec_hash
from archsearch.training.data import load_data, synthetic
from archsearch.training.precision import choose_precision, pick_device

__all__ = ["auto_model", "bench_device", "bench_images", "model_name"]

# torch is imported where it is used: `python -m archsearch.bench --help` and a mistyped option
# answer without it


def model_name(opts: dict) -> str:
    """The network of parts train, breakdown and compile (option ``model``)."""
    return str(opts.get("model", "dilated_sep"))


def bench_device(opts: dict):
    """Option ``device``: auto (a GPU if there is one), cpu, cuda or cuda:N -> the torch device."""
    return pick_device(str(opts.get("device", "auto")))


def bench_images(opts: dict) -> tuple[Any, Any]:
    """The first ``images`` training images (uint8 N x H x W x C) and labels: synthetic, or from
    the image folder ``data.root`` with ``data=folder``."""
    n = int(opts.get("images", 4096 if bench_device(opts).type == "cpu" else 32768))
    if opts.get("data", "synthetic") == "folder":
        s = load_data({"source": "folder", "root": opts["data.root"], "val_size": 0})
        return s.x_train[:n], s.y_train[:n]
    return synthetic(n, seed=0)


def auto_model(device, batch: int, name: str):
    """Model ``name`` as a run with trainer.amp=auto / channels_last=auto has it here -> (spec,
    precision (the cached probe), the model on the device in the chosen memory layout)."""
    import torch

    spec = load_spec(name)
    model = build_model(spec)
    precision = choose_precision(OmegaConf.create({"amp": "auto", "channels_last": "auto"}), device, model,
                                 spec_hash(spec), batch, spec.input_shape, spec.num_classes)
    fmt = torch.channels_last if precision.channels_last else torch.contiguous_format
    return spec, precision, model.to(device).to(memory_format=fmt)  # as built: each candidate sets up its own copy
