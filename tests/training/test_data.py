"""Loading data: an image folder read once and cached, CIFAR-10 offline in one line of advice."""

import urllib.error
import urllib.request

import numpy as np
import pytest
from PIL import Image

import archsearch.training.data as D
from archsearch.errors import DataError
from archsearch.training.data import load_data


def test_folder_loader_reads_and_caches(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    for split, n in (("train", 6), ("test", 3)):
        for c in ("cat", "dog"):
            d = tmp_path / "ds" / split / c
            d.mkdir(parents=True)
            for i in range(n):
                Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(d / f"{i}.png")
    s = D.load_data({"source": "folder", "root": str(tmp_path / "ds"), "val_size": 2})
    assert s.classes == ("cat", "dog")
    assert (len(s.x_train), len(s.x_val), len(s.x_test)) == (10, 2, 6)
    assert s.x_train.dtype == np.uint8 and s.x_train.shape[1:] == (32, 32, 3)
    assert list((tmp_path / "ds" / ".archsearch-cache").glob("*.npz"))
    monkeypatch.setattr(D, "_decode", lambda *a: (_ for _ in ()).throw(AssertionError("decoded again")))
    s2 = D.load_data({"source": "folder", "root": str(tmp_path / "ds"), "val_size": 2})
    assert np.array_equal(s2.x_test, s.x_test)


def test_offline_cifar10_gives_one_line_advice(tmp_path, monkeypatch):
    def offline(*a, **k):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    with pytest.raises(DataError) as e:
        load_data({"source": "cifar10", "root": str(tmp_path / "data"), "download": True})
    msg = str(e.value)
    assert "\n" not in msg and "could not be downloaded" in msg and "data=folder data.root=PATH" in msg
