"""What one training image costs a network on this machine: the objective ``ms_per_image``.

MACs are what a search can score without training, and on a CPU they are not time: a depthwise
7x7 conv took 1.3-4x a full 3x3 conv's time at a sixth of its MACs (docs/search-results.md). A
sweep scored by ``ms_per_image`` times each candidate's training step instead, as a run would
train it: the precision probe of ``trainer.amp=auto`` (or the precision set), whose rates are
cached per machine, torch, spec and batch size, so a network the sweep meets again costs nothing.
The figure belongs to the machine that measured it; the trial records which precision it timed.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["TrainSpeed", "train_speed"]


@dataclass(frozen=True)
class TrainSpeed:
    ms_per_image: float  # milliseconds of one training step per image, forward + backward + update
    precision: str  # the candidate timed, e.g. "fp32 channels_last"
    source: str  # probe / cache / timed (a precision set by hand is timed on its own)
    busy: str = ""  # why the figure may be off: other work shared the CPU or GPU while it was timed


def train_speed(spec, tcfg, batch_size: int) -> TrainSpeed:
    """Time ``spec``'s training step at ``batch_size`` on the device and precision ``tcfg``
    (``trainer.*``) gives; ``amp``/``channels_last`` auto: the probe's rate of the candidate it picks."""
    from archsearch.grammar.build import build_model
    from archsearch.grammar.spec import spec_hash
    from archsearch.training.precision import choose_precision, pick_device, probe

    model = build_model(spec)
    device = pick_device(str(tcfg.get("device", "auto")))
    p = choose_precision(tcfg, device, model, spec_hash(spec), batch_size, spec.input_shape, spec.num_classes)
    rate, source = p.rates.get(p.label, 0.0), p.source
    if not rate:  # set by hand: no probe ran
        rate = probe(model, device, [(p.amp_short, p.channels_last)], batch_size, spec.input_shape,
                     spec.num_classes)[p.label]
        source = "timed"
    if not rate:
        raise RuntimeError(f"{p.label}: the training step's loss or gradients were not finite")
    return TrainSpeed(1000.0 / rate, p.label, source, p.note)
