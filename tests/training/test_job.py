"""One training run, ``train()`` and ``fit()``, end to end on synthetic data (CPU), MLflow in a
temp dir: what it records, resuming, refusing, and the recipe parts it reports."""

import math

import pytest
from helpers import FAST, TINY_MODEL, cfg_for, runs

import archsearch.training.data
from archsearch import fit
from archsearch.config.compose import compose
from archsearch.config.gate import BudgetRejected
from archsearch.errors import ConfigError, NonFiniteLoss
from archsearch.training.job import train

# torch and mlflow are imported in the tests that use them: pytest imports every test module to
# collect it, and collecting stays quick


def test_train_end_to_end_logs_everything(tmp_path):
    from mlflow.tracking import MlflowClient

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
    assert {"config.yaml", "analysis.txt", "model_diagram.svg", "augmented_samples.png", "curves.png", "confusion_matrix.png",
            "checkpoints"} <= arts
    assert ("misclassified.png" in arts) == (res.test_acc < 1.0)
    assert (tmp_path / "out" / "best.pt").exists() and (tmp_path / "out" / "last.pt").exists()
    first80 = next((h["epoch"] for h in res.history if h["val_acc"] >= 0.8), None)  # time to accuracy
    logged = client.get_metric_history(row.run_id, "epoch_to_val80")
    assert [m.value for m in logged] == ([first80] if first80 else [])


def test_time_to_accuracy_is_the_first_epoch_at_each_threshold():
    """epoch_to_valNN / seconds_to_valNN: logged once, at the epoch validation first reaches NN%, with
    the wall seconds of every epoch up to it."""
    from archsearch.training.job import first_crossings

    accs, walls, got = [0.5, 0.82, 0.79, 0.86, 0.95, 0.96], [10.0, 12.0, 11.0, 10.5, 10.0, 10.0], []
    history = []
    for i, (acc, wall) in enumerate(zip(accs, walls)):
        history.append({"epoch": i + 1, "val_acc": acc, "epoch_seconds": wall - 1, "epoch_wall_seconds": wall})
        got.append(first_crossings(history))
    assert got[0] == {} and got[2] == {} and got[5] == {}  # none crossed; 80% again after a dip is no news
    assert got[1] == {"epoch_to_val80": 2, "seconds_to_val80": 22.0}
    assert got[3] == {"epoch_to_val85": 4, "seconds_to_val85": 43.5}
    assert got[4] == {"epoch_to_val90": 5, "seconds_to_val90": 53.5}


def test_resume_continues_at_the_right_epoch(tmp_path):
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


def test_resume_refuses_other_settings_and_a_branch_tries_another_last_phase(tmp_path, caplog):
    """trainer.resume continues the same run, so it may not train otherwise (named, refused before
    any data is loaded); trainer.branch=true starts a new run from the checkpoint with another label
    smoothing, its first epochs copied in so that its curves are whole."""
    from mlflow.tracking import MlflowClient

    class Stop(Exception):
        pass

    def stop_after_2(epoch, val):
        if epoch == 2:
            raise Stop

    caplog.set_level("INFO", logger="archsearch")
    base = [*TINY_MODEL, "trainer.epochs=3", "trainer.tta=none"]
    with pytest.raises(Stop):
        train(cfg_for(tmp_path, *base, "run_name=first"), tmp_path / "a", epoch_hook=stop_after_2)
    ck = f"trainer.resume={tmp_path}/a/last.pt"
    for extra, says in (
            (["trainer.label_smoothing=0"], r"trainer.label_smoothing: .*last.pt was trained with "
             r"trainer.label_smoothing=0.05, this run sets 0; resume with the checkpoint's value, or add "
             r"trainer.branch=true to start a new run from it with this one"),
            (["trainer.epochs=5"], r"trainer.epochs: .* was trained with trainer.epochs=3, this run sets 5; resume "
             r"with the checkpoint's value$"),
            (["optim.lr=0.2", "trainer.branch=true"], r"optim.lr: .*; a branch may change only aug.\*, "
             r"trainer.label_smoothing, trainer.tta"),
            (["trainer.branch=yes"], r"trainer.branch: must be true or false; got 'yes'")):
        with pytest.raises(ConfigError, match=says):
            train(cfg_for(tmp_path, *base, ck, *extra), tmp_path / "refused")
    assert not (tmp_path / "refused").exists()  # refused before the run's folder, data or MLflow run
    with pytest.raises(ConfigError, match="trainer.branch: true starts a new run from a checkpoint; name it with"):
        train(cfg_for(tmp_path, *base, "trainer.branch=true"), tmp_path / "refused")

    seen = []
    res = train(cfg_for(tmp_path, *base, ck, "trainer.branch=true", "trainer.label_smoothing=0", "run_name=branch"),
                tmp_path / "b", epoch_hook=lambda e, v: seen.append(e))
    assert seen == [3] and [h["epoch"] for h in res.history] == [1, 2, 3]
    df = runs(tmp_path)
    first, branch = (df[df["tags.mlflow.runName"] == n].iloc[0] for n in ("first", "branch"))
    assert branch.run_id != first.run_id and branch.status == "FINISHED"
    assert branch["tags.archsearch.branched_from"].startswith(f"run {first.run_id}, epoch 2, ")
    assert branch["tags.archsearch.branch_changes"] == "trainer.label_smoothing=0"
    assert branch["params.trainer.label_smoothing"] == "0"
    assert (f"branched from run {first.run_id} at epoch 2: a new run ({branch.run_id}), its first 2 epochs copied; "
            "changed: trainer.label_smoothing=0") in caplog.text
    client = MlflowClient(f"sqlite:///{tmp_path}/mlruns/mlflow.db")
    assert [m.step for m in client.get_metric_history(branch.run_id, "val_acc")] == [1, 2, 3]
    assert [m.step for m in client.get_metric_history(first.run_id, "val_acc")] == [1, 2]  # the first run untouched


def test_a_setting_typed_another_way_is_the_same_setting(tmp_path):
    from pathlib import Path

    from archsearch.training.resume_check import check_settings

    ck = {"settings": {"trainer.label_smoothing": 0, "aug.mix.cooldown": True}, "path": Path("last.pt")}
    assert check_settings(ck, {"trainer.label_smoothing": 0.0, "aug.mix.cooldown": True}, branch=False) == []
    with pytest.raises(ConfigError, match="aug.mix.cooldown: last.pt was trained with aug.mix.cooldown=true, this run sets 1"):
        check_settings(ck, {"trainer.label_smoothing": 0, "aug.mix.cooldown": 1}, branch=False)
    # written before settings were kept: checked against the run's config.yaml beside it, where there is one
    assert check_settings({"path": tmp_path / "last.pt"}, {"seed": 1}, branch=False) == []
    (tmp_path / "config.yaml").write_text("seed: 0\ntrainer: {label_smoothing: 0.05, device: cpu}\n")
    with pytest.raises(ConfigError, match=r"seed: .*last.pt was trained with seed=0, this run sets 1; resume with "
                                          r"the checkpoint's value \(also differ: trainer.label_smoothing\)$"):
        check_settings({"path": tmp_path / "last.pt"}, {"seed": 1, "trainer.label_smoothing": 0.1}, branch=False)
    assert check_settings({"path": tmp_path / "last.pt"}, {"seed": 0, "trainer.label_smoothing": 0.1},
                          branch=True) == ["trainer.label_smoothing=0.1"]


def test_over_budget_spec_loads_no_data(tmp_path, monkeypatch, no_mlflow_record):
    def boom(*a, **k):
        raise AssertionError("data was loaded for a rejected spec")

    monkeypatch.setattr(archsearch.training.data, "load_data", boom)
    with pytest.raises(BudgetRejected, match="params 220,128 exceed max_params 200,000"):
        train(cfg_for(tmp_path, "model=too_wide"), tmp_path / "out")
    assert no_mlflow_record()


@pytest.mark.parametrize("amp, hint", [("off", "or check the data"),
                                       ("bf16", "or train in fp32 (trainer.amp=off; bf16 in use) or check the data")])
def test_non_finite_loss_fails_the_run(tmp_path, amp, hint):
    with pytest.raises(NonFiniteLoss, match="lower optim.lr") as e:
        train(cfg_for(tmp_path, *TINY_MODEL, "trainer.epochs=1", "optim.lr=1e12", "sched=constant", "trainer.log_every=1",
                      f"trainer.amp={amp}"), tmp_path / "out")
    assert str(e.value).endswith(hint) and ("trainer.amp=off" in str(e.value)) == (amp == "bf16")
    df = runs(tmp_path)
    assert df.status[0] == "FAILED" and "NonFiniteLoss" in df["tags.error"][0]


def test_onecycle_with_a_handful_of_steps_runs(tmp_path):
    """1 epoch of 5 steps: OneCycleLR with pct_start 0.2 divides by zero here."""
    res = train(compose("config", [*FAST, *TINY_MODEL, "tracking=none", "data.n_train=288", "data.val_size=128",
                                   "trainer.epochs=1"]), tmp_path / "out")  # 160 images / batch 32 = 5 steps
    assert res.epochs == 1 and res.history[0]["lr"] == res.history[0]["lr"]


def test_ema_tta_and_cooldown_train_and_report_their_share(tmp_path):
    from mlflow.tracking import MlflowClient

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


def test_no_validation_split_trains_on_everything_and_keeps_the_last_epoch(tmp_path):
    res = train(cfg_for(tmp_path, *TINY_MODEL, "trainer.epochs=2", "data.val_size=0", "trainer.tta=none"), tmp_path / "out")
    assert math.isnan(res.val_acc) and res.test_acc > 0.1
    assert (tmp_path / "out" / "best.pt").exists()  # the last epoch's weights, not "never better than -1"


def test_fit_from_a_notebook_is_the_cli_run(tmp_path, monkeypatch):
    """``from archsearch import fit``: the same run, result and MLflow record as the CLI."""
    monkeypatch.chdir(tmp_path)
    res = fit(overrides=[*FAST, *TINY_MODEL, "trainer.epochs=1", "trainer.tta=none",
                         f"tracking.uri=sqlite:///{tmp_path}/mlruns/mlflow.db"])
    assert res.epochs == 1 and 0.0 <= res.test_acc <= 1.0 and res.run_id
    row = runs(tmp_path).iloc[0]
    assert row.run_id == res.run_id and row.status == "FINISHED"
    assert row["metrics.test_acc"] == pytest.approx(res.test_acc)
    # what the run computed in, and why, is on the run
    # any mode auto may pick on a CPU: which one wins the probe depends on the machine
    assert row["tags.amp"] in ("off", "bfloat16", "bfloat16, depthwise fp32")
    assert row["tags.channels_last"] in ("true", "false")
    assert row["tags.precision.source"] in ("probe", "cache") and "img/s" in row["tags.precision.why"]
    assert row["tags.compile"] == "false" and row["tags.compile.why"].startswith("eager (short run: 672 images")
    assert list((tmp_path / "outputs" / "fit").glob("*/*/last.pt"))
    with pytest.raises(Exception, match="either a composed cfg or overrides"):
        fit(cfg_for(tmp_path), overrides=["trainer.epochs=1"])


def test_resume_refuses_a_file_that_is_not_our_checkpoint(tmp_path):
    import torch

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
