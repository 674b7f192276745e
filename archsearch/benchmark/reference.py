"""The reference the training rows compare to: the ERA-S9 reference network's training loop, as
the assignment's notebook runs it (per-sample albumentations on the host, Normalize + ToTensorV2
in a Dataset, fp32, NCHW, log_softmax + NLL, ``.item()`` every step), with the same transforms
and probabilities as archsearch's default augmentation."""

from __future__ import annotations

import time

from omegaconf import OmegaConf

from archsearch.config.compose import compose
from archsearch.training.augment import build_pipeline
from archsearch.training.data import channel_stats

__all__ = ["ReferenceDataset", "ReferenceLoop", "era_s9_pipeline", "reference_transform"]

# torch and albumentations (seconds each) are imported where they are used: `python -m archsearch.bench
# --help` and a mistyped option answer without them


class ReferenceDataset:
    """How the assignment's notebook feeds data: per-sample albumentations on a numpy image,
    Normalize + ToTensorV2 on the host, in a Dataset."""

    def __init__(self, x, y, tf):
        self.x, self.y, self.tf = x, y, tf

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return self.tf(image=self.x[i])["image"], int(self.y[i])


def era_s9_pipeline(mean_px):
    """The shipped default augmentation (conf/aug/era_s9.yaml), as training builds it."""
    return build_pipeline(OmegaConf.to_container(compose("config", []).aug, resolve=True)["train"], mean_px)


def reference_transform(mean, std):
    """The same transforms and probabilities as ours, then Normalize + ToTensorV2 per sample."""
    import albumentations as A
    from albumentations.pytorch import ToTensorV2

    ours = era_s9_pipeline([m * 255 for m in mean])
    return A.Compose([*ours.transforms, A.Normalize(mean=mean, std=std), ToTensorV2()])


class ReferenceLoop:
    """The reference's training loop (fp32, NCHW, log_softmax + NLL, ``.item()`` every step) over one
    DataLoader kept for every epoch, its workers too (``persistent_workers``): measured epochs pay
    for training, not for starting worker processes, so the reference is not made slower than it is."""

    def __init__(self, model, x, y, batch: int, workers: int, device):
        import torch

        mean, std = channel_stats(x)
        self.model, self.device = model, device
        self.loader = torch.utils.data.DataLoader(
            ReferenceDataset(x, y, reference_transform(mean, std)), batch_size=batch, shuffle=True,
            num_workers=workers, pin_memory=device.type == "cuda", persistent_workers=workers > 0)
        self.opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

    def epoch(self) -> float:
        """One epoch -> images/s."""
        import torch
        import torch.nn.functional as F

        self.model.train()
        seen, t0 = 0, time.perf_counter()
        for data, target in self.loader:
            data, target = data.to(self.device), target.to(self.device)
            self.opt.zero_grad()
            out = F.log_softmax(self.model(data), dim=-1)
            loss = F.nll_loss(out, target)
            loss.backward()
            self.opt.step()
            _ = loss.item()  # the reference prints the loss every step (tqdm description)
            seen += len(target)
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return seen / (time.perf_counter() - t0)
