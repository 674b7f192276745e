"""Training end to end on synthetic data (CPU), MLflow in a temp dir."""

import subprocess
import sys

import numpy as np
import pytest
from helpers import FAST, TINY_MODEL, cfg_for, runs

from archsearch.config.compose import compose


def no_mlflow_record(tmp_path):
    """Nothing was written to the run's MLflow store (the tests start it as an empty schema)."""
    import sqlite3

    db = tmp_path / "mlruns" / "mlflow.db"
    if not db.exists():
        return True
    with sqlite3.connect(db) as con:
        return not con.execute("select count(*) from runs").fetchone()[0] and not any(
            r[0] == "archsearch" for r in con.execute("select name from experiments"))


def test_train_end_to_end_logs_everything(tmp_path):
    from mlflow.tracking import MlflowClient

    from archsearch.training.job import train

    res = train(cfg_for(tmp_path, *TINY_MODEL, "trainer.epochs=3"), tmp_path / "out")
    assert res.epochs == 3 and res.params == 12_856 and res.rf == 61
    assert res.test_acc > 0.3  # chance is 0.1
    df = runs(tmp_path)
    assert len(df) == 1 and df.status[0] == "FINISHED"
    row = df.iloc[0]
    assert row["params.model.params"] == "12856" and row["params.model.rf"] == "61"
    assert row["params.optim.lr"] == "0.05" and row["params.budget.max_params"] == "200000"
    assert row["tags.model"] == "dilated_sep" and row["tags.device"] == "cpu" and row["tags.git_commit"]
    assert 0.3 < row["metrics.test_acc"] <= 1.0
    client = MlflowClient(f"sqlite:///{tmp_path}/mlruns/mlflow.db")
    hist = client.get_metric_history(row.run_id, "val_acc")
    assert [m.step for m in hist] == [1, 2, 3]
    for key in ("train_loss", "train_acc", "val_loss", "lr", "epoch_seconds", "images_per_s"):
        assert len(client.get_metric_history(row.run_id, key)) == 3
    arts = {a.path for a in client.list_artifacts(row.run_id)}
    assert {"config.yaml", "analysis.txt", "augmented_samples.png", "curves.png", "confusion_matrix.png",
            "checkpoints"} <= arts
    assert ("misclassified.png" in arts) == (res.test_acc < 1.0)
    assert (tmp_path / "out" / "best.pt").exists() and (tmp_path / "out" / "last.pt").exists()


def test_resume_continues_at_the_right_epoch(tmp_path):
    from archsearch.training.job import train

    class Stop(Exception):
        pass

    def stop_after_2(epoch, val):
        if epoch == 2:
            raise Stop

    with pytest.raises(Stop):
        train(cfg_for(tmp_path, *TINY_MODEL, "trainer.epochs=4", "trainer.ema=0.99"), tmp_path / "a", epoch_hook=stop_after_2)
    seen = []
    res = train(cfg_for(tmp_path, *TINY_MODEL, "trainer.epochs=4", "trainer.ema=0.99", f"trainer.resume={tmp_path}/a/last.pt"),
                tmp_path / "b", epoch_hook=lambda e, v: seen.append(e))
    assert seen == [3, 4]
    assert [h["epoch"] for h in res.history] == [1, 2, 3, 4]
    import torch

    assert torch.load(tmp_path / "b" / "last.pt", weights_only=False)["ema"]["updates"] == 4 * 21  # EMA resumed
    df = runs(tmp_path)
    assert len(df) == 1 and df.status[0] == "FINISHED"  # the same MLflow run, continued


def test_over_budget_spec_loads_no_data(tmp_path, monkeypatch):
    import archsearch.training.data
    from archsearch.config.gate import BudgetRejected
    from archsearch.training.job import train

    def boom(*a, **k):
        raise AssertionError("data was loaded for a rejected spec")

    monkeypatch.setattr(archsearch.training.data, "load_data", boom)
    with pytest.raises(BudgetRejected, match="params 220,128 exceed max_params 200,000"):
        train(cfg_for(tmp_path, "model=too_wide"), tmp_path / "out")
    assert no_mlflow_record(tmp_path)


def test_cli_refuses_over_budget_before_anything(tmp_path):
    p = subprocess.run([sys.executable, "-m", "archsearch.train", "model=too_wide", "data.root=/nonexistent",
                        f"hydra.run.dir={tmp_path}/out"], capture_output=True, text=True, cwd=tmp_path)
    assert p.returncode == 1
    assert "REJECTED too_wide" in p.stderr and "params 220,128 exceed max_params 200,000 (by 20,128)" in p.stderr
    assert "Traceback" not in p.stderr
    assert no_mlflow_record(tmp_path) and not (tmp_path / "data").exists()


def test_cli_malformed_spec_is_one_line_exit_2(tmp_path):
    p = subprocess.run([sys.executable, "-m", "archsearch.train", "model.layers.7.k=0", "data.root=/nonexistent"],
                       capture_output=True, text=True, cwd=tmp_path)
    assert p.returncode == 2
    assert p.stderr.strip().splitlines()[-1] == "error: model.layers[7].k: must be a positive int, got 0"
    assert "Traceback" not in p.stderr


def test_cli_unknown_model_lists_choices(tmp_path):
    p = subprocess.run([sys.executable, "-m", "archsearch.train", "model=nope"], capture_output=True, text=True,
                       cwd=tmp_path)
    assert p.returncode == 2 and "model: no config 'nope'; available: branchy, compact, dilated_sep" in p.stderr


def test_cli_multirun_with_cfg_is_one_line(tmp_path):
    p = subprocess.run([sys.executable, "-m", "archsearch.train", "-m", "sweep=smoke", "--cfg", "job"],
                       capture_output=True, text=True, cwd=tmp_path)
    assert p.returncode == 2 and not (tmp_path / "multirun").exists() and not (tmp_path / "outputs").exists()
    assert p.stderr.strip() == ("error: Only one of --run, --multirun, --cfg, --info and --shell_completion can be "
                                "specified: drop -m to print one run's config or info")


def test_bad_augmentation_argument_names_transform_and_argument():
    from archsearch.errors import AugError
    from archsearch.training.augment import build_pipeline

    with pytest.raises(AugError, match=r"aug.train\[0\].CoarseDropout: unknown argument 'max_holes'; valid arguments: "
                                       r"num_holes_range"):
        build_pipeline([{"CoarseDropout": {"max_holes": 2}}])
    with pytest.raises(AugError, match=r"unknown transform 'Mosaic'"):
        build_pipeline([{"Mosaic": {}}])
    with pytest.raises(AugError, match=r"aug.train\[0\].Affine: "):
        build_pipeline([{"Affine": {"rotate": "lots"}}])


def test_era_s9_pipeline_matches_the_assignment():
    from omegaconf import OmegaConf

    from archsearch.training.augment import build_pipeline

    cfg = compose("config", [])
    pipe = build_pipeline(OmegaConf.to_container(cfg.aug, resolve=True)["train"], [125.0, 123.0, 114.0])
    names = [type(t).__name__ for t in pipe.transforms]
    assert names == ["HorizontalFlip", "Affine", "CoarseDropout"]
    cd = pipe.transforms[2]
    assert (cd.num_holes_range, cd.hole_height_range, cd.hole_width_range) == ((1, 1), (16, 16), (16, 16))
    assert tuple(cd.fill) == (125.0, 123.0, 114.0)
    img = np.zeros((32, 32, 3), np.uint8)
    cd.p = 1.0
    out = cd(image=img)["image"]
    assert (out[..., 0] == 125).sum() == 16 * 16  # exactly one 16x16 hole in the dataset mean


def test_era_s9_cooldown_shifts_by_at_most_two_pixels():
    """The shipped cool-down is flips plus a random shift of up to 2 px: a lone bright pixel
    at the centre lands within 2 px of where a flip may put it, and not always in one place."""
    from omegaconf import OmegaConf

    from archsearch.training.augment import build_pipeline

    aug = OmegaConf.to_container(compose("config", []).aug, resolve=True)
    pipe = build_pipeline(aug["cooldown"], where="aug.cooldown")
    img = np.zeros((32, 32, 3), np.uint8)
    img[16, 16] = 255
    seen = set()
    for seed in range(60):
        pipe.set_random_seed(seed)
        out = pipe(image=img)["image"]
        assert out.shape == (32, 32, 3) and out.dtype == np.uint8
        ys, xs = np.nonzero(out[..., 0])
        assert len(ys) == 1  # moved, never duplicated by the reflect padding
        assert abs(ys[0] - 16) <= 2 and (abs(xs[0] - 16) <= 2 or abs(xs[0] - 15) <= 2)
        seen.add((int(ys[0]), int(xs[0])))
    assert len(seen) > 10


def test_folder_loader_reads_and_caches(tmp_path, monkeypatch):
    from PIL import Image

    import archsearch.training.data as D

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
    import urllib.error

    from archsearch.errors import DataError
    from archsearch.training.data import load_data

    def offline(*a, **k):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    with pytest.raises(DataError) as e:
        load_data({"source": "cifar10", "root": str(tmp_path / "data"), "download": True})
    msg = str(e.value)
    assert "\n" not in msg and "could not be downloaded" in msg and "data=folder data.root=PATH" in msg


def test_non_finite_loss_fails_the_run(tmp_path):
    from archsearch.errors import NonFiniteLoss
    from archsearch.training.job import train

    with pytest.raises(NonFiniteLoss, match="lower optim.lr"):
        train(cfg_for(tmp_path, *TINY_MODEL, "trainer.epochs=1", "optim.lr=1e12", "sched=constant", "trainer.log_every=1",
                      "trainer.amp=off"), tmp_path / "out")
    df = runs(tmp_path)
    assert df.status[0] == "FAILED" and "NonFiniteLoss" in df["tags.error"][0]


def test_sigterm_closes_the_run_as_killed(tmp_path):
    import os
    import signal
    import time


    cmd = [sys.executable, "-m", "archsearch.train", *FAST, *TINY_MODEL, "trainer.epochs=50", f"hydra.run.dir={tmp_path}/out"]
    p = subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                         env={**os.environ, "OMP_NUM_THREADS": "1"})
    deadline = time.time() + 120
    while time.time() < deadline and not (tmp_path / "out" / "last.pt").exists():
        time.sleep(0.3)
    p.send_signal(signal.SIGTERM)
    p.wait(timeout=60)
    assert p.returncode != 0
    df = runs(tmp_path)
    assert len(df) == 1 and df.status[0] == "KILLED"  # not left RUNNING, not looking complete


def test_onecycle_with_a_handful_of_steps_runs(tmp_path):
    """1 epoch of 5 steps: OneCycleLR with pct_start 0.2 divides by zero here."""
    from archsearch.training.job import train

    res = train(compose("config", [*FAST, *TINY_MODEL, "tracking=none", "data.n_train=288", "data.val_size=128",
                                   "trainer.epochs=1"]), tmp_path / "out")  # 160 images / batch 32 = 5 steps
    assert res.epochs == 1 and res.history[0]["lr"] == res.history[0]["lr"]


def test_ema_tta_and_cooldown_train_and_report_their_share(tmp_path):
    from mlflow.tracking import MlflowClient

    from archsearch.training.job import train

    res = train(cfg_for(tmp_path, *TINY_MODEL, "trainer.epochs=3", "trainer.ema=0.99", "trainer.tta=flip",
                        "aug.cooldown_fraction=0.34"), tmp_path / "out")  # 1 of 3 epochs
    assert res.test_acc > 0.3
    row = runs(tmp_path).iloc[0]
    # the evaluated (EMA, mirrored) model and the parts it is made of, from the same run
    for key in ("test_acc", "test_acc_raw", "test_acc_no_tta"):
        assert 0.1 < row[f"metrics.{key}"] <= 1.0, key
    assert row["params.trainer.ema"] == "0.99" and row["params.aug.cooldown_fraction"] == "0.34"
    client = MlflowClient(f"sqlite:///{tmp_path}/mlruns/mlflow.db")
    assert [m.step for m in client.get_metric_history(row.run_id, "val_acc_raw")] == [1, 2, 3]
    import torch

    ck = torch.load(tmp_path / "out" / "last.pt", weights_only=False)
    assert ck["ema"]["updates"] == 3 * 21  # one update per optimiser step (672 images / 32)


def test_cooldown_epochs_switch_to_the_light_pipeline():
    from archsearch.training.augment import build_pipeline
    from archsearch.training.batches import BatchAug as _BatchAug
    from archsearch.training.batches import EpochBatches as _EpochBatches

    x = np.full((8, 32, 32, 3), 200, np.uint8)
    y = np.zeros(8, np.int64)
    blackout = build_pipeline([{"CoarseDropout": {"num_holes_range": [1, 1], "hole_height_range": [32, 32],
                                                  "hole_width_range": [32, 32], "fill": 0, "p": 1.0}}])
    ds = _BatchAug(x, y, blackout, None)  # cool-down: no augmentation
    sampler = _EpochBatches(8, 4, seed=0, cooldown_from=2)
    for epoch, expect in ((0, 0), (1, 0), (2, 200), (3, 200)):
        sampler.epoch = epoch
        for item in sampler:
            xb, _ = ds[item]
            assert int(xb.max()) == expect, epoch


def test_flip_tta_averages_the_probabilities_of_image_and_mirror():
    import torch

    from archsearch.training.evaluate import evaluate

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 4 * 4, 10))
    x = np.random.default_rng(0).integers(0, 255, (6, 4, 4, 3), dtype=np.uint8)
    y = np.arange(6) % 10
    mean, std = torch.zeros(1, 3, 1, 1), torch.full((1, 3, 1, 1), 1 / 255)  # evaluate() multiplies
    loss, acc, pred = evaluate(model, x, y, torch.device("cpu"), mean, std, None, False, keep=True, tta="flip")
    t = torch.from_numpy(x).permute(0, 3, 1, 2).float() / 255
    with torch.no_grad():
        prob = (model(t).softmax(1) + model(t.flip(3)).softmax(1)) / 2
    assert pred.tolist() == prob.argmax(1).tolist()
    assert loss == pytest.approx(-prob.log()[torch.arange(6), torch.from_numpy(y)].mean().item(), rel=1e-5)
    assert acc == (prob.argmax(1).numpy() == y).mean()


def test_shifted_tta_views_move_the_image_by_one_pixel():
    import torch

    from archsearch.training.evaluate import TTA_VIEWS
    from archsearch.training.evaluate import view as _view

    x = torch.arange(2 * 3 * 5 * 5, dtype=torch.float32).view(2, 3, 5, 5)
    assert len(TTA_VIEWS["flip_shift"]) == 10 and len(set(TTA_VIEWS["flip_shift"])) == 10
    v = _view(x, 1, 1, False)  # content moves up-left: pixel (r, c) shows (r+1, c+1)
    assert v.shape == x.shape and torch.equal(v[..., :4, :4], x[..., 1:, 1:])
    v = _view(x, -1, 1, True)
    assert torch.equal(v, _view(x, -1, 1, False).flip(3))
    assert torch.equal(_view(x, -1, 1, False)[..., :4, 1:], x[..., 1:, :4])


def test_ema_follows_the_weights_with_a_ramped_decay():
    import torch

    from archsearch.training.optim import WeightEMA

    model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.BatchNorm1d(2))
    ema = WeightEMA(model, 0.9)
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(0.0)
        ema_w = ema.model[0].weight.clone()
        model[1].running_mean.fill_(1.0)
    ema.update()  # decay min(0.9, 2/11)
    d = 2 / 11
    assert torch.allclose(ema.model[0].weight, ema_w * d)
    assert torch.allclose(ema.model[1].running_mean, torch.full((2,), 1 - d))
    for _ in range(200):
        ema.update()
    assert ema.model[0].weight.abs().max() < 1e-6 and ema.updates == 201


@pytest.mark.parametrize("override, message", [
    ("trainer.ema=1.5", "error: trainer.ema: the per-step decay must be a number in (0, 1)"),
    ("trainer.tta=rotate", "error: trainer.tta: unknown test-time augmentation 'rotate'; choose one of none, flip, flip_shift"),
    ("aug.cooldown_fraction=1.5", "error: aug.cooldown_fraction: must be a number in [0, 1)"),
])
def test_cli_bad_ema_tta_cooldown_is_one_line_before_any_data(tmp_path, override, message):
    p = subprocess.run([sys.executable, "-m", "archsearch.train", override, "data.root=/nonexistent"],
                       capture_output=True, text=True, cwd=tmp_path)
    assert p.returncode == 2, p.stderr
    assert p.stderr.strip().splitlines()[-1].startswith(message)
    assert "Traceback" not in p.stderr and not (tmp_path / "data").exists()


def test_weight_decay_can_spare_norm_and_bias():
    from archsearch.config.compose import spec_from_cfg
    from archsearch.grammar.build import build_model
    from archsearch.training.optim import make_optimizer as _make_optimizer

    cfg = compose("config", ["optim.decay_norm_and_bias=false"])
    model = build_model(spec_from_cfg(cfg.model))
    opt = _make_optimizer(cfg.optim, model)
    decayed, spared = opt.param_groups
    assert decayed["weight_decay"] == 5e-4 and spared["weight_decay"] == 0.0
    assert all(p.ndim == 4 or p.ndim == 2 for p in decayed["params"])  # conv and linear weights
    assert sum(p.numel() for g in opt.param_groups for p in g["params"]) == 181_984
    assert len(_make_optimizer(compose("config", []).optim, model).param_groups) == 1


def test_cooldown_scales_with_the_run_length():
    from archsearch.training.job import _cooldown_epochs

    assert [_cooldown_epochs({"cooldown_fraction": 0.167}, e) for e in (1, 2, 3, 6, 15, 30)] == [0, 0, 1, 1, 3, 5]
    assert _cooldown_epochs({"cooldown_fraction": 0.267}, 30) == 8  # the shipped share
    assert _cooldown_epochs({}, 30) == 0


def test_no_validation_split_trains_on_everything_and_keeps_the_last_epoch(tmp_path):
    import math

    from archsearch.training.job import train

    res = train(cfg_for(tmp_path, *TINY_MODEL, "trainer.epochs=2", "data.val_size=0", "trainer.tta=none"), tmp_path / "out")
    assert math.isnan(res.val_acc) and res.test_acc > 0.1
    assert (tmp_path / "out" / "best.pt").exists()  # the last epoch's weights, not "never better than -1"


def test_fit_from_a_notebook_is_the_cli_run(tmp_path, monkeypatch):
    """``from archsearch import fit``: the same run, result and MLflow record as the CLI."""
    from archsearch import fit

    monkeypatch.chdir(tmp_path)
    res = fit(overrides=[*FAST, *TINY_MODEL, "trainer.epochs=1", "trainer.tta=none",
                         f"tracking.uri=sqlite:///{tmp_path}/mlruns/mlflow.db"])
    assert res.epochs == 1 and 0.0 <= res.test_acc <= 1.0 and res.run_id
    row = runs(tmp_path).iloc[0]
    assert row.run_id == res.run_id and row.status == "FINISHED"
    assert row["metrics.test_acc"] == pytest.approx(res.test_acc)
    # what the run computed in, and why, is on the run
    assert row["tags.amp"] in ("off", "bfloat16") and row["tags.channels_last"] in ("true", "false")
    assert row["tags.precision.source"] in ("probe", "cache") and "img/s" in row["tags.precision.why"]
    assert row["tags.compile"] == "false" and row["tags.compile.why"].startswith("eager (short run: 672 images")
    assert list((tmp_path / "outputs" / "fit").glob("*/*/last.pt"))
    with pytest.raises(Exception, match="either a composed cfg or overrides"):
        fit(cfg_for(tmp_path), overrides=["trainer.epochs=1"])


def test_resume_refuses_a_file_that_is_not_our_checkpoint(tmp_path):
    import torch

    from archsearch.errors import ConfigError
    from archsearch.training.job import train

    train(cfg_for(tmp_path, *TINY_MODEL, "trainer.epochs=1", "trainer.tta=none"), tmp_path / "a")
    ck = torch.load(tmp_path / "a" / "last.pt", weights_only=False)
    torch.save({**ck, "surprise": 1}, tmp_path / "odd.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    for f, msg in (("odd.pt", r"not an archsearch checkpoint \(missing \[\], unknown \['surprise'\]\)"),
                   ("junk.pt", "is not a readable checkpoint"), ("nope.pt", "no checkpoint at")):
        with pytest.raises(ConfigError, match=msg):
            train(cfg_for(tmp_path, *TINY_MODEL, "trainer.epochs=2",
                          f"trainer.resume={tmp_path}/{f}"), tmp_path / "b")
    with pytest.raises(ConfigError, match="different architecture"):
        train(cfg_for(tmp_path, "trainer.epochs=2", "trainer.amp=off", "trainer.channels_last=false",
                      f"trainer.resume={tmp_path}/a/last.pt"),
              tmp_path / "c")
