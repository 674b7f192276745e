"""The sweeper speaks Hydra's override language as its users expect: each form below, written in a
sweep file or on the command line, becomes the Optuna distribution in the table, and the job
receives the values in the table, through the public sweep path (`python -m archsearch.train -m`) on
a study scored by its MACs (nothing trains). The README's sweep section states the same mapping."""

import math
import subprocess
import sys
import textwrap

import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

from archsearch.config.compose import compose
from archsearch.search.study import open_storage

TINY = ["data.n_train=64", "data.n_test=32", "data.val_size=32", "hydra.sweeper.objectives=[macs]",
        "hydra.sweeper.direction=minimize", "tracking.log_model=false", "model.narrow=8",
        "budget.max_params=1000000"]
TENTHS = [i / 10 for i in range(10)]  # range(0, 1, 0.1): the stop is excluded, each number as written

# override (command line) -> (the Optuna distribution, the values the job may receive)
MAPPING = {
    "+x.lists=choice([1,2],[3,4])": (CategoricalDistribution(["[1,2]", "[3,4]"]), [[1, 2], [3, 4]]),
    "+x.dicts=choice({a:1},{a:2})": (CategoricalDistribution(["{a:1}", "{a:2}"]), [{"a": 1}, {"a": 2}]),
    "+x.tenths=range(0,1,0.1)": (FloatDistribution(0.0, 0.9, step=0.1), TENTHS),
    "+x.halves=range(0.5,5.5,step=1)": (FloatDistribution(0.5, 4.5, step=1.0), [0.5, 1.5, 2.5, 3.5, 4.5]),
    "+x.ints=range(1,10,3)": (IntDistribution(1, 7, step=3), [1, 4, 7]),
    "+x.comma=p,q": (CategoricalDistribution(["p", "q"]), ["p", "q"]),
    "+x.int=int(interval(1,5))": (IntDistribution(1, 5), [1, 2, 3, 4, 5]),
    "++x.forced=choice(a,b)": (CategoricalDistribution(["a", "b"]), ["a", "b"]),
    "+x.sorted=sort(3,1,2)": (CategoricalDistribution([1, 2, 3]), [1, 2, 3]),
}


def _sweep_file(tmp_path):
    """A user's sweep file on Hydra's search path: a searched lr and two fixed values."""
    d = tmp_path / "conf" / "sweep"
    d.mkdir(parents=True)
    (d / "mine.yaml").write_text(textwrap.dedent("""\
        # @package _global_
        defaults:
          - override /hydra/sweeper: archsearch
          - override /data: synthetic
        hydra:
          sweeper:
            n_trials: 6
            sampler: {name: random, seed: 0}
            params:
              model.wide: choice(32,48)
              optim.lr: tag(log, interval(0.01, 0.1))
              optim.momentum: 0.8
              optim.weight_decay: 0.001
        """))
    return f"hydra.searchpath=[file://{tmp_path}/conf]"


def _run(tmp_path, *args):
    cmd = [sys.executable, "-m", "archsearch.train", "-m", *TINY, *args]
    return subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def mapped(tmp_path_factory):
    """One scored sweep over every form of MAPPING, the user's sweep file, and the command line
    fixing one searched key (optim.lr) and one fixed key (optim.momentum)."""
    tmp = tmp_path_factory.mktemp("conformance")
    searchpath = _sweep_file(tmp)
    p = _run(tmp, "sweep=mine", searchpath, *MAPPING, "optim.lr=0.0333", "optim.momentum=0.85",
             "~trainer.system_metrics")
    assert p.returncode == 0, p.stderr[-3000:]
    study = optuna.load_study(study_name="mine", storage=open_storage(f"journal:{tmp}/mlruns/optuna/mine.journal"))
    base = [searchpath, *study.user_attrs["archsearch.base_overrides"]]  # (Hydra keeps hydra.* to itself)
    jobs = [compose("config", base + list(t.user_attrs["overrides"])) for t in study.trials
            if t.state == optuna.trial.TrialState.COMPLETE]
    return study, jobs, p.stdout + p.stderr  # (the sweeper's log lines go where Hydra's do: stdout)


def _key(override: str) -> str:
    return override.lstrip("+").partition("=")[0]


@pytest.mark.parametrize("override", list(MAPPING))
def test_each_form_maps_to_its_distribution_and_the_job_gets_its_values(mapped, override):
    study, jobs, _ = mapped
    dist, allowed = MAPPING[override]
    key = _key(override)
    assert study.trials[0].distributions[key] == dist
    got = [_plain(cfg, key) for cfg in jobs]
    assert len(jobs) == 6 and all(v in allowed for v in got), got  # each, as written (no 0.30000000000000004)
    assert all(type(v) is type(allowed[0]) for v in got)


def _plain(cfg, key: str):
    from omegaconf import OmegaConf

    node = OmegaConf.select(cfg, key)
    return OmegaConf.to_container(node) if OmegaConf.is_config(node) else node


def test_the_command_line_is_the_users_last_word(mapped):
    """A command-line value fixes a searched key (it leaves the space, the start line says so) and
    beats the sweep file's fixed value; the file's fixed value beats the defaults; ~key deletes."""
    study, jobs, output = mapped
    assert "optim.lr" not in study.trials[0].distributions
    assert "fixed by the command line, not searched: optim.lr=0.0333" in output
    assert {cfg.optim.lr for cfg in jobs} == {0.0333}
    assert {cfg.optim.momentum for cfg in jobs} == {0.85}
    assert {cfg.optim.weight_decay for cfg in jobs} == {0.001}
    assert {cfg.model.wide for cfg in jobs} <= {32, 48}
    assert all("system_metrics" not in cfg.trainer for cfg in jobs)  # ~key deletes it


def test_a_log_interval_is_a_log_float(tmp_path):
    p = _run(tmp_path, "sweep=smoke", "hydra.sweeper.n_trials=2", "optim.lr=tag(log, interval(0.001, 0.1))")
    assert p.returncode == 0, p.stderr[-2000:]
    st = optuna.load_study(study_name="smoke", storage=open_storage(f"journal:{tmp_path}/mlruns/optuna/smoke.journal"))
    assert st.trials[0].distributions["optim.lr"] == FloatDistribution(0.001, 0.1, log=True)


@pytest.mark.parametrize("args, message", [
    (["optim.lr=interval(5,1)"], "optim.lr: interval(5,1): the low end 5.0 is above the high end 1.0"),
    (["optim.lr=tag(log, interval(0, 0.1))"], "a log scale needs a low end above 0, got 0"),
    (["+x.r=range(3,1)"], "range(3,1) holds no values"),
    (["model.nosuch=choice(1,2)"], "model.nosuch: no such key in the composed config (model 'dilated_sep'); '+model.nosuch' adds a new one"),
    (["hydra.sweeper.direction=[maximize,minimize]", "hydra.sweeper.objectives=[val_acc]"],
     "1 objective(s) ['val_acc'] for 2 direction(s)"),
    (["hydra.sweeper.direction=[maximize,minimize]", "hydra.sweeper.objectives=[val_acc,ms_per_image]"],
     "ms_per_image scores candidates without training; combine it with params, macs or rf"),
    (["hydra.sweeper.objectives=[seconds]"],
     "unknown objective 'seconds'; choose from val_acc, params, macs, rf, ms_per_image"),
    (["hydra.sweeper.sampler.name=grid"], "optim.lr: the grid sampler needs choice(...) or range(...)"),
    (["hydra.sweeper.sampler.name=anneal"], "unknown sampler 'anneal'; choose one of tpe, random, grid, cmaes, gp"),
    (["hydra.sweeper.sampler.name=nsgaii", "+hydra.sweeper.sampler.kwargs.popsize=4"],
     "kwargs.popsize: not an argument of nsgaii (optuna's NSGAIISampler); valid: population_size"),
])
def test_a_sweep_it_cannot_run_is_one_line_and_writes_nothing(tmp_path, args, message):
    p = _run(tmp_path, "sweep=smoke", *args)
    assert p.returncode == 2, p.stderr[-2000:]
    assert message in p.stderr and "Traceback" not in p.stderr
    assert not (tmp_path / "mlruns" / "optuna").exists()  # no study was created


def test_minimising_the_accuracy_is_a_warning_on_the_start_line(tmp_path):
    p = subprocess.run([sys.executable, "-m", "archsearch.train", "-m", "sweep=smoke", "hydra.sweeper.n_trials=0",
                        "hydra.sweeper.direction=minimize"], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    assert "warning: hydra.sweeper.direction minimizes val_acc" in p.stdout + p.stderr


def test_another_hydra_app_gets_one_line(tmp_path):
    """The official plugin's kind of example (a function of x and y) under archsearch's sweeper."""
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "config.yaml").write_text("x: 1.0\ny: 1.0\n")
    (tmp_path / "sphere.py").write_text(textwrap.dedent("""\
        import hydra

        @hydra.main(version_base=None, config_path="conf", config_name="config")
        def sphere(cfg):
            return cfg.x ** 2 + cfg.y ** 2

        if __name__ == "__main__":
            sphere()
        """))
    p = subprocess.run([sys.executable, "sphere.py", "-m", "hydra/sweeper=archsearch", "x=interval(-5,5)"],
                       cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert p.returncode == 2 and "Traceback" not in p.stderr, p.stderr[-2000:]
    lines = [l for l in p.stderr.splitlines() if l.startswith("error:")]
    assert len(lines) == 1 and "this app's config has no model, budget, data, trainer, tracking" in lines[0]


# ------------------------------------------------------------------ samplers and their seeds
def _draws(sampler_conf, space, n):
    from archsearch.search.samplers import make_sampler
    from archsearch.search.space import suggest

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    st = optuna.create_study(sampler=make_sampler(sampler_conf, space))
    out = []
    for i in range(n):
        st.sampler = make_sampler(sampler_conf, space, draw=i)
        t = st.ask()
        values = {k: suggest(t, d) for k, d in space.items()}
        st.tell(t, sum(v for v in values.values() if isinstance(v, (int, float))))
        out.append(values)
    return out


def _space(**params):
    from archsearch.search.space import parse_space

    return parse_space(params)[0]


def test_nearby_seeds_draw_independent_streams():
    space = _space(a="interval(0, 1)", b="range(0, 100)")
    s123, s124 = _draws({"name": "random", "seed": 123}, space, 4), _draws({"name": "random", "seed": 124}, space, 4)
    assert s124[:3] != s123[1:4]  # not the same sequence shifted by one trial
    assert not {v["a"] for v in s123} & {v["a"] for v in s124}
    assert _draws({"name": "random", "seed": 123}, space, 4) == s123  # reproducible for a given seed


@pytest.mark.parametrize("name", ["tpe", "random", "grid", "cmaes", "gp", "nsgaii", "qmc"])
def test_every_sampler_users_know_runs(name):
    if name == "grid":
        space = _space(w="choice(32,48)", lr="range(0.1,0.4,0.1)", l="choice([1,2],[3,4])")
        draws = _draws({"name": "grid", "seed": 0}, space, 12)
        assert len({(d["w"], d["lr"], str(d["l"])) for d in draws}) == 12  # the whole grid, each point once
        assert {d["lr"] for d in draws} == {0.1, 0.2, 0.3}
        return
    space = _space(w="choice(32,48)", lr="tag(log, interval(0.001, 0.1))", d="range(0,1,0.25)")
    draws = _draws({"name": name, "seed": 0, "n_startup_trials": 2}, space, 5)
    assert all(d["w"] in (32, 48) and 0.001 <= d["lr"] <= 0.1 and d["d"] in (0.0, 0.25, 0.5, 0.75)
               for d in draws)
    assert not any(isinstance(d["lr"], float) and math.isnan(d["lr"]) for d in draws)


def test_sampler_kwargs_reach_the_sampler():
    from archsearch.search.samplers import make_sampler

    s = make_sampler({"name": "nsgaii", "seed": 0, "kwargs": {"population_size": 6}}, {})
    assert isinstance(s, optuna.samplers.NSGAIISampler) and s._population_size == 6
