"""Datasets as uint8 arrays in memory: CIFAR-10, an image folder, or synthetic images.

Every source yields ``(x uint8 [N, H, W, C], y int64 [N])`` for train and test; a
seeded validation split is carved from train (sweeps select on it, the test set is only
reported); normalisation statistics come from the training split.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from archsearch.errors import DataError
from archsearch.files import write_whole

__all__ = ["Splits", "load_data", "load_data_once", "synthetic", "read_folder", "CIFAR10_CLASSES"]

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp")
SOURCES = ("cifar10", "folder", "synthetic")


@dataclass
class Splits:
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    classes: tuple[str, ...]
    mean: tuple[float, float, float]  # per channel, in [0, 1], from the training split
    std: tuple[float, float, float]

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        n, h, w, c = self.x_train.shape
        return (c, h, w)

    def summary(self) -> str:
        c, h, w = self.image_shape
        return (f"{len(self.x_train):,} train / {len(self.x_val):,} val / {len(self.x_test):,} test "
                f"images {c}x{h}x{w}, {self.num_classes} classes")


# ---------------------------------------------------------------- synthetic
def synthetic(n: int, num_classes: int = 10, size: int = 32, seed: int = 0, noise: float = 40.0):
    """Images whose class is learnable: a class colour and a class stripe pattern plus noise."""
    rng = np.random.default_rng(seed)
    base = np.random.default_rng(1234).uniform(40, 215, size=(num_classes, 3))
    y = rng.integers(0, num_classes, size=n)
    yy, xx = np.mgrid[0:size, 0:size]
    angles = np.arange(num_classes) * np.pi / num_classes
    img = np.empty((n, size, size, 3), np.float32)
    for c in range(num_classes):
        idx = np.nonzero(y == c)[0]
        if not len(idx):
            continue
        stripe = 35.0 * np.sin((xx * np.cos(angles[c]) + yy * np.sin(angles[c])) * 0.6)
        img[idx] = base[c][None, None, None, :] + stripe[None, :, :, None]
    img += rng.normal(0, noise, size=img.shape).astype(np.float32)
    return np.clip(img, 0, 255).astype(np.uint8), y.astype(np.int64)


# ---------------------------------------------------------------- folder
def _listing(root: Path, split: str) -> tuple[list[str], list[tuple[str, int]]]:
    d = root / split
    if not d.is_dir():
        raise DataError(f"data.root: {d} does not exist; expected the layout root/{{train,test}}/<class>/*.png|jpg")
    classes = sorted(p.name for p in d.iterdir() if p.is_dir())
    if not classes:
        raise DataError(f"data.root: {d} has no class folders; expected root/{split}/<class>/*.png|jpg")
    files = []
    for ci, c in enumerate(classes):
        for f in sorted(os.listdir(d / c)):
            if f.lower().endswith(IMAGE_EXTS):
                files.append((f"{split}/{c}/{f}", ci))
    if not files:
        raise DataError(f"data.root: no images under {d}/<class>/ (looked for {', '.join(IMAGE_EXTS)})")
    return classes, files


def _decode(root: Path, files: list[tuple[str, int]]) -> tuple[np.ndarray, np.ndarray]:
    import cv2  # for image folders only (OpenCV takes a while to import)

    def one(rel: str) -> np.ndarray:
        im = cv2.imread(str(root / rel), cv2.IMREAD_COLOR)
        if im is None:
            raise DataError(f"data.root: cannot decode {root / rel}")
        return cv2.cvtColor(im, cv2.COLOR_BGR2RGB)

    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as ex:
        imgs = list(ex.map(one, [f for f, _ in files], chunksize=256))
    shapes = {im.shape for im in imgs}
    if len(shapes) > 1:
        raise DataError(f"data.root: images differ in size ({', '.join(map(str, sorted(shapes)[:3]))}); "
                        "archsearch needs one image size")
    return np.stack(imgs), np.array([c for _, c in files], np.int64)


def _fingerprint(root: Path, files: list[tuple[str, int]]) -> str:
    h = hashlib.sha256()
    for rel, c in files:
        st = (root / rel).stat()
        h.update(f"{rel}\0{c}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:16]


def read_folder(root: str | Path, split: str, cache: bool = True):
    """Decode ``root/split/<class>/*`` once into uint8 arrays; later calls load a cache file
    next to the data (``root/.archsearch-cache/``; ``~/.cache/archsearch`` if read-only)
    keyed by the listing's names, sizes and mtimes, so an edited folder is re-decoded."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DataError(f"data.root: {root} is not a directory")
    classes, files = _listing(root, split)
    key = _fingerprint(root, files)
    name = f"{split}-{key}.npz"
    for cdir in (root / ".archsearch-cache", Path.home() / ".cache" / "archsearch" / "folders"):
        p = cdir / name
        if cache and p.exists():
            with np.load(p) as z:
                return z["x"], z["y"], tuple(classes)
    x, y = _decode(root, files)
    if cache:
        for cdir in (root / ".archsearch-cache", Path.home() / ".cache" / "archsearch" / "folders"):
            try:
                write_whole(cdir / name, lambda f: np.savez(f, x=x, y=y))  # a killed run leaves no half file
                break
            except OSError:
                continue
    return x, y, tuple(classes)


# ---------------------------------------------------------------- cifar10
def _cifar10(root: Path, download: bool):
    from torchvision.datasets import CIFAR10  # imports torch: only for data=cifar10

    try:
        tr = CIFAR10(str(root), train=True, download=download)
        te = CIFAR10(str(root), train=False, download=download)
    except Exception as e:  # URLError, RuntimeError("Dataset not found"), ...
        reason = " ".join(str(e).split())[:160]
        raise DataError(
            f"data.root: CIFAR-10 is not in {root} and could not be downloaded ({reason}); "
            "point data.root at a folder holding cifar-10-batches-py, or use "
            "data=folder data.root=PATH for an image-folder copy"
        ) from None
    return (np.asarray(tr.data), np.asarray(tr.targets, np.int64),
            np.asarray(te.data), np.asarray(te.targets, np.int64), CIFAR10_CLASSES)


def _subset(x, y, n, rng):
    if n is None or n >= len(x):
        return x, y
    idx = np.sort(rng.permutation(len(x))[:n])
    return x[idx], y[idx]


def channel_stats(x: np.ndarray) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean/std in [0, 1], in chunks (no float copy of the whole set)."""
    c = x.shape[-1]
    s1, s2, n = np.zeros(c), np.zeros(c), 0
    for i in range(0, len(x), 4096):
        f = x[i:i + 4096].reshape(-1, c).astype(np.float64)
        s1 += f.sum(0)
        s2 += (f * f).sum(0)
        n += len(f)
    mean = s1 / n
    std = np.sqrt(np.maximum(s2 / n - mean * mean, 1e-12))
    return tuple(float(m) / 255 for m in mean), tuple(float(v) / 255 for v in std)


def load_data(cfg: Mapping[str, Any], base_dir: str | Path = ".") -> Splits:
    """Load ``cfg`` (the ``data`` config group) into :class:`Splits`."""
    src = cfg.get("source")
    if src not in SOURCES:
        raise DataError(f"data.source: unknown source {src!r}; choose one of {', '.join(SOURCES)}")
    seed = int(cfg.get("seed", 0))
    if src == "synthetic":
        n_tr, n_te = int(cfg.get("n_train", 2000)), int(cfg.get("n_test", 500))
        k, size = int(cfg.get("num_classes", 10)), int(cfg.get("size", 32))
        x_tr, y_tr = synthetic(n_tr, k, size, seed=seed)
        x_te, y_te = synthetic(n_te, k, size, seed=seed + 1)
        classes = tuple(f"class{i}" for i in range(k))
    else:
        if not cfg.get("root"):
            raise DataError(f"data.root: missing; set data.root=PATH for data={src}")
        root = Path(str(cfg["root"])).expanduser()
        if not root.is_absolute():
            root = Path(base_dir) / root
        if src == "cifar10":
            x_tr, y_tr, x_te, y_te, classes = _cifar10(root, bool(cfg.get("download", True)))
        else:
            x_tr, y_tr, classes = read_folder(root, "train", cache=bool(cfg.get("cache", True)))
            x_te, y_te, te_classes = read_folder(root, "test", cache=bool(cfg.get("cache", True)))
            if te_classes != classes:
                raise DataError(f"data.root: train classes {classes} differ from test classes {te_classes}")
    rng = np.random.default_rng(seed)
    val_size = int(cfg.get("val_size") or 0)
    if not 0 <= val_size < len(x_tr):
        raise DataError(f"data.val_size: must be in [0, {len(x_tr)}), got {val_size}")
    perm = rng.permutation(len(x_tr))
    vi, ti = np.sort(perm[:val_size]), np.sort(perm[val_size:])
    x_val, y_val, x_tr, y_tr = x_tr[vi], y_tr[vi], x_tr[ti], y_tr[ti]
    x_tr, y_tr = _subset(x_tr, y_tr, cfg.get("limit_train"), rng)
    x_te, y_te = _subset(x_te, y_te, cfg.get("limit_test"), rng)
    if x_tr.ndim == 3:  # grayscale -> 3 channels
        x_tr, x_val, x_te = (np.repeat(a[..., None], 3, -1) for a in (x_tr, x_val, x_te))
    x_tr, x_val, x_te = (np.ascontiguousarray(a) for a in (x_tr, x_val, x_te))
    mean, std = channel_stats(x_tr)
    return Splits(x_tr, y_tr, x_val, y_val, x_te, y_te, tuple(classes), mean, std)


_LOADED: dict[str, Splits] = {}


def load_data_once(cfg: Mapping[str, Any], base_dir: str | Path = ".") -> Splits:
    """:func:`load_data`, kept for the next call with the same ``data`` config: a sweep or a
    retrain process loads its dataset once for all its runs (only the last one is kept)."""
    key = json.dumps(dict(cfg), sort_keys=True, default=str)
    if key not in _LOADED:
        _LOADED.clear()
        _LOADED[key] = load_data(cfg, base_dir)
    return _LOADED[key]
