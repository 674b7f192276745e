"""Config files: a user's own folder of models, and broken YAML answered in one line that
names the file (and line/column), exit 2, within seconds, from validate, train and the sweeper."""

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from archsearch import fit
from archsearch.config.paths import CONF_DIR


def billion_laughs() -> str:
    lines = ['a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    prev = "a"
    for n in "bcdefghi":
        lines.append(f"{n}: &{n} [" + ", ".join([f"*{prev}"] * 9) + "]")
        prev = n
    return "\n".join(lines) + "\nname: laughs\n"


BROKEN = {
    "syntax": ("name: x\nlayers: [1, 2\nin_channels: 3\n", r"syntax.yaml:3:12: expected ',' or '\]'"),
    "tab": ("name: x\nlayers:\n\t- {op: conv}\n", r"tab.yaml:3:1: found character '\\t' that cannot start any token"),
    "duplicate": ("name: x\nin_channels: 3\nin_channels: 1\n", r"duplicate.yaml:3:1: duplicate key 'in_channels' "
                                                               r"\(first at line 2\)"),
    "scalar": ("just a sentence\n", r"scalar.yaml:1:1: the file's root must be a mapping of fields"),
    "code": ('name: !!python/object/apply:os.system ["touch pwned"]\n',
             r"code.yaml:1:7: tag !!python/object/apply:os.system is not allowed"),
    "laughs": (billion_laughs(), r"laughs.yaml:\d+:\d+: aliases here expand to more than 100,000 nodes"),
}


@pytest.fixture
def user_conf(tmp_path):
    """A project folder of the user's own: conf/model/ with a good model and every kind of broken file."""
    d = tmp_path / "myconf" / "model"
    d.mkdir(parents=True)
    text = (CONF_DIR / "model" / "dilated_sep.yaml").read_text().replace("name: dilated_sep", "name: mynet")
    (d / "mynet.yaml").write_text(text.replace("narrow: 32", "narrow: 8").replace("wide: 64", "wide: 16"))
    for name, (body, _) in BROKEN.items():
        (d / f"{name}.yaml").write_text(body)
    return f"hydra.searchpath=[file://{tmp_path / 'myconf'}]"


@pytest.mark.parametrize("name", list(BROKEN))
def test_validate_names_the_file_line_and_column(run_validate, user_conf, name):
    t0 = time.time()
    code, out, err = run_validate(f"model={name}", user_conf)
    assert time.time() - t0 < 2.0
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err, err
    assert re.search(BROKEN[name][1], err), err


def test_train_refuses_a_broken_file_in_one_line_within_seconds(tmp_path, user_conf):
    for name in ("laughs", "duplicate"):
        t0 = time.time()
        p = subprocess.run([sys.executable, "-m", "archsearch.train", f"model={name}", user_conf],
                           capture_output=True, text=True, cwd=tmp_path, timeout=60)
        assert p.returncode == 2 and p.stderr.count("\n") == 1, p.stderr[-2000:]
        assert f"{name}.yaml:" in p.stderr and time.time() - t0 < 10  # interpreter start included
    assert not (tmp_path / "pwned").exists()


def test_a_users_own_model_validates_trains_and_sweeps(tmp_path, user_conf, run_validate, monkeypatch):
    assert run_validate("model=mynet", user_conf)[0] == 0
    monkeypatch.chdir(tmp_path)
    res = fit(overrides=[user_conf, "model=mynet", "data=synthetic", "data.n_train=300", "data.val_size=100",
                         "data.n_test=50", "trainer.epochs=1", "trainer.progress=false", "trainer.workers=0",
                         "trainer.batch_size=50", "trainer.tta=none", "tracking=none", "trainer.amp=off",
                         "trainer.channels_last=false"])
    assert res.epochs == 1 and res.params < 30_000
    # a sweep over the user's models: the good one trains, each broken file is a rejected candidate
    # (a grid over the three models, the smoke sweep's other keys fixed: each model drawn once)
    p = subprocess.run([sys.executable, "-m", "archsearch.train", "-m", "sweep=smoke", user_conf,
                        "model=choice(mynet,tab,laughs)", "model.wide=16", "model.dropout=0.0", "optim.lr=0.05",
                        "hydra.sweeper.sampler.name=grid", "hydra.sweeper.n_trials=3", "trainer.epochs=1", "data.n_train=300",
                        "data.val_size=100", "data.n_test=50", "trainer.amp=off", "trainer.channels_last=false",
                        "trainer.tta=none", "tracking.log_model=false", "hydra.sweep.dir=multirun/u"],
                       capture_output=True, text=True, cwd=tmp_path, timeout=300,
                       env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert p.returncode == 0, p.stderr[-3000:]
    out = p.stdout + p.stderr
    rejected = [line for line in out.splitlines() if "REJECTED (no job launched)" in line]
    assert any("tab.yaml:3:1: found character" in line for line in rejected)
    assert any("laughs.yaml:" in line and "100,000 nodes" in line for line in rejected)
    assert "1 trained (1 complete" in out
    assert Path(tmp_path / "multirun" / "u").exists()
