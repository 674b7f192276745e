"""Albumentations pipelines declared in YAML (``conf/aug/NAME.yaml``), built through a registry.

A pipeline is a list of ``{TransformName: {arg: value, ...}}`` entries. Only the
transforms in :data:`TRANSFORMS` can be named (no arbitrary import), and arguments
are checked against the transform's signature *and* by albumentations' own strict
validation: a misspelled or removed argument is an error naming both.

The special value ``mean`` for a ``fill`` argument is the training split's mean colour
(in pixel units), e.g. CoarseDropout filling its hole with the dataset mean.

Normalize + ToTensorV2 are not listed: the pipeline yields uint8 images and the
training loop normalises on the device with the training split's mean/std (same
arithmetic, less host work; see ``archsearch.training.batches.to_device``).
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from archsearch.errors import AugError

__all__ = ["FLIPS", "TRANSFORMS", "build_pipeline", "save_grid", "split_flip"]

# the transforms a config may name (albumentations 2.0.x)
TRANSFORMS = (
    "HorizontalFlip", "VerticalFlip", "Affine", "ShiftScaleRotate", "CoarseDropout",
    "RandomBrightnessContrast", "ToGray", "ColorJitter", "HueSaturationValue", "RandomCrop",
    "PadIfNeeded", "RandomResizedCrop", "Rotate", "GaussNoise", "CLAHE", "Sharpen", "Blur",
    "RandomGamma", "Perspective", "GridDistortion", "Erasing", "ChannelShuffle", "Solarize",
    "Posterize", "Equalize", "InvertImg", "SafeRotate", "RandomRotate90", "Transpose",
    "ConstrainedCoarseDropout",
)


def _resolve(v: Any, mean_px: Sequence[float] | None) -> Any:
    if isinstance(v, str) and v == "mean":
        if mean_px is None:
            raise AugError("'mean' fill needs the dataset mean")
        return tuple(float(m) for m in mean_px)
    if isinstance(v, list):
        return tuple(_resolve(x, mean_px) for x in v)
    return v


def _entries(spec: Any, where: str) -> list[tuple[str, dict]]:
    if spec is None:
        return []
    if not isinstance(spec, (list, tuple)):
        raise AugError(f"{where}: must be a list of {{TransformName: {{args}}}}, got {type(spec).__name__}")
    out = []
    for i, item in enumerate(spec):
        if isinstance(item, str):
            out.append((item, {}))
            continue
        if not isinstance(item, Mapping) or len(item) != 1:
            raise AugError(f"{where}[{i}]: each entry is one {{TransformName: {{args}}}} mapping, got {item!r}")
        (name, args), = item.items()
        out.append((name, dict(args or {})))
    return out


FLIPS = ("random", "alternate")


def split_flip(spec: Any, flip: str, where: str) -> tuple[Any, bool]:
    """``aug.flip``: with ``random`` the list is used as written; with ``alternate`` its
    ``HorizontalFlip`` (p 0.5) is taken out and done by the batch loader on alternate epochs
    instead (see :class:`archsearch.training.batches.BatchAug`). -> (the list to build, alternate?)."""
    if flip not in FLIPS:
        raise AugError(f"aug.flip: unknown value {flip!r}; choose one of {', '.join(FLIPS)}")
    entries = _entries(spec, where)
    if flip == "random":
        return spec, False
    keep, found = [], False
    for i, (name, args) in enumerate(entries):
        if name != "HorizontalFlip":
            keep.append({name: args})
            continue
        if float(args.get("p", 0.5)) != 0.5:
            raise AugError(f"{where}[{i}].HorizontalFlip: aug.flip=alternate flips half the images each epoch and "
                           f"replaces a HorizontalFlip with p 0.5 only; got p {args.get('p')}")
        found = True
    return keep, found


def build_pipeline(spec: Any, mean_px: Sequence[float] | None = None, where: str = "aug.train"):
    """An ``albumentations.Compose`` (or None for an empty list) from the YAML list."""
    import albumentations as A  # seconds to import: not for a config check (split_flip) or a refused run

    transforms = []
    for i, (name, args) in enumerate(_entries(spec, where)):
        path = f"{where}[{i}].{name}"
        if name not in TRANSFORMS or not hasattr(A, name):
            raise AugError(f"{where}[{i}]: unknown transform {name!r}; choose one of {', '.join(TRANSFORMS)}")
        cls = getattr(A, name)
        valid = [p for p in inspect.signature(cls).parameters if p not in ("self", "args", "kwargs")]
        for key in args:
            if key not in valid:
                raise AugError(f"{path}: unknown argument {key!r}; valid arguments: {', '.join(valid)}")
        kwargs = {k: _resolve(v, mean_px) for k, v in args.items()}
        try:
            transforms.append(cls(**kwargs, strict=True))
        except Exception as e:  # pydantic ValidationError / ValueError from albumentations
            msg = " ".join(str(e).split())
            raise AugError(f"{path}: {msg[:300]}") from None
    if not transforms:
        return None
    return A.Compose(transforms)


def save_grid(images: np.ndarray, path: str, labels: Sequence[str] | None = None, ncol: int = 8,
              scale: int = 3) -> str:
    """Save uint8 HWC images as one PNG grid (optional caption under each) and return the path.

    Composed with numpy + PIL (milliseconds), not a matplotlib figure per image (seconds)."""
    images = np.asarray(images)
    n, h, w = images.shape[:3]
    if images.ndim == 3:
        images = np.repeat(images[..., None], 3, -1)
    nrow = max(1, (n + ncol - 1) // ncol)
    ch = 12 if labels else 0  # caption height, px
    cw, chh = w * scale + 4, h * scale + 4 + ch
    canvas = Image.new("RGB", (ncol * cw, nrow * chh), "white")
    draw = ImageDraw.Draw(canvas)
    for i in range(n):
        r, c = divmod(i, ncol)
        tile = Image.fromarray(images[i].astype(np.uint8)).resize((w * scale, h * scale), Image.NEAREST)
        canvas.paste(tile, (c * cw + 2, r * chh + 2))
        if labels:
            draw.text((c * cw + 2, r * chh + h * scale + 3), str(labels[i])[:16], fill="black")
    canvas.save(path)
    return path
