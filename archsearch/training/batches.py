"""Training batches: uint8 images augmented in DataLoader workers, normalised on the device.

Each batch is an index ``(seed, indices, phase)``: the albumentations pipeline is reseeded
per batch, so augmentation is reproducible (and resumable) whatever the number of workers.
"""

from __future__ import annotations

import os

import numpy as np

__all__ = ["BatchAug", "EpochBatches", "make_loader", "to_device", "worker_count"]

# torch is imported in the functions that use it: archsearch.train imports the training modules at
# its top and refuses a mistyped knob before torch is loaded, and `from archsearch import fit` loads
# torch only when called



class BatchAug:
    """Dataset indexed by (seed, indices, phase, epoch): returns one augmented uint8 NHWC batch.

    ``phase`` picks the pipeline: 0 the main one, 1 the cool-down one (the last
    ``aug.cooldown_fraction`` of the epochs). The phase travels with the index because
    persistent workers hold their own copy of this object: switching an attribute in the
    main process would not reach them.

    ``alternate`` (one flag per phase): flip horizontally on alternate epochs instead of at
    random, image ``i`` in epoch ``e`` iff ``(bit_i + e)`` is odd with a seeded random bit per
    image. Every image is seen both ways in any two consecutive epochs (``aug.flip=alternate``)."""

    def __init__(self, x, y, pipeline, cooldown=None, alternate: tuple[bool, bool] = (False, False), seed: int = 0):
        self.x, self.y, self.pipelines = x, y, (pipeline, cooldown)
        self.alternate = tuple(alternate)
        self.bits = np.random.default_rng([seed, 7]).integers(0, 2, len(x)).astype(np.int64) if any(alternate) \
            else None

    def __len__(self):
        return len(self.x)

    def __getitem__(self, item):
        import torch

        seed, idx, phase, epoch = item
        xb = self.x[idx]
        if self.alternate[phase]:
            flip = (self.bits[idx] + epoch) % 2 == 1
            xb = np.where(flip[:, None, None, None], xb[:, :, ::-1], xb)
        pipeline = self.pipelines[phase]
        if pipeline is not None:
            pipeline.set_random_seed(seed)
            xb = np.stack([pipeline(image=im)["image"] for im in xb])
        return torch.from_numpy(np.ascontiguousarray(xb)), torch.from_numpy(self.y[idx])


class EpochBatches:
    """Sampler of (seed, indices, phase, epoch) with a per-epoch seeded permutation; phase 1 from
    epoch ``cooldown_from`` on (0-based). Set ``epoch`` before iterating."""

    def __init__(self, n: int, batch_size: int, seed: int, cooldown_from: int | None = None):
        self.n, self.bs, self.seed, self.epoch = n, batch_size, seed, 0
        self.cooldown_from = cooldown_from

    def __len__(self):
        return (self.n + self.bs - 1) // self.bs

    def in_cooldown(self) -> bool:
        """Whether the current epoch trains on the cool-down pipeline."""
        return self.cooldown_from is not None and self.epoch >= self.cooldown_from

    def __iter__(self):
        rng = np.random.default_rng([self.seed, self.epoch])
        perm = rng.permutation(self.n)
        phase = int(self.in_cooldown())
        for b in range(len(self)):
            yield (int(self.seed * 1_000_003 + self.epoch * 10_007 + b) % 2**31, perm[b * self.bs:(b + 1) * self.bs],
                   phase, self.epoch)


def worker_count(setting, device) -> int:
    """``trainer.workers``: a number, or auto. On a CPU the model needs the cores: with 2 of them
    a worker process costs the training step more than it saves (augmenting a batch takes
    about 2% of a step), so auto augments in the training process there (docs/engine.md)."""
    if setting not in (None, "auto"):
        return int(setting)
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if device.type == "cuda":
        return min(8, max(1, cpus - 1))
    if cpus <= 2:
        return 0
    return 1 if cpus <= 4 else min(4, cpus // 4)


def _worker_init(_: int) -> None:
    """A worker augments with OpenCV on one thread: it shares the machine with the model's
    threads, and OpenCV's own pool on a few small images only adds contention."""
    _single_threaded_opencv()
    import torch

    torch.set_num_threads(1)


def _single_threaded_opencv() -> None:
    try:  # OpenCV comes with albumentations; without it there is no pool to tame
        import cv2

        cv2.setNumThreads(1)
    except ImportError:
        pass


def make_loader(dataset: BatchAug, sampler: EpochBatches, workers: int, device):
    import torch

    if workers > 0:
        # Workers are forked from this process. If it has run OpenCV's thread pool (the run's
        # grid of augmented samples does), a forked worker's first warpAffine waits forever
        # on that pool's lock: this process keeps OpenCV on one thread instead.
        _single_threaded_opencv()

    return torch.utils.data.DataLoader(
        dataset, sampler=sampler, batch_size=None, num_workers=workers, pin_memory=device.type == "cuda",
        persistent_workers=workers > 0, prefetch_factor=4 if workers > 0 else None,
        worker_init_fn=_worker_init if workers > 0 else None)


def to_device(xb, device, mean, istd, channels_last: bool):
    """uint8 NHWC on the host -> normalised float NCHW on the device. ``mean`` holds
    255*mean, ``istd`` 1/(255*std), both shaped (1, 3, 1, 1)."""
    import torch

    x = xb.to(device, non_blocking=True).permute(0, 3, 1, 2).float()
    x = (x - mean) * istd
    return x.contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
