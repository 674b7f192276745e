"""``python -m archsearch.export sweep=NAME [trial=best|N] name=NEWNAME [what=model|recipe] [out=conf/model] [overwrite=true]``

Writes a sweep trial's architecture as a model file of its own, ``<out>/NEWNAME.yaml``, so
that ``python -m archsearch.train model=NEWNAME`` trains it with any recipe.

The file starts from the model file the trial was composed from (e.g. ``conf/model/res_dilated.yaml``,
read as written: ``${model.w1}``-style knob references are kept), applies the trial's
``model.*`` settings at their paths (the sweep command's recorded ``model.*`` overrides, the
trial's sampled values, then any ``model.*`` override given here), sets ``name: NEWNAME``, and
starts with a comment saying where it came from: study, storage and trial; the settings
applied; params and receptive field (archsearch's analysis of the file); the trial's proxy
validation accuracy; the full-recipe accuracies per seed if the trial was retrained
(``python -m archsearch.retrain``); and the trial's other sampled values (``trained with:
optim.lr=...``, not part of a model file). YAML comments of the original file are not kept.
A ``model.*`` override given here makes a network the sweep did not train: the header lists it
as changed at export and says the proxy and full-recipe figures are the trial's network's.

``trial=best`` (the default): the trial with the best full-recipe validation accuracy (mean
over seeds) among retrained trials if any were retrained, else the best proxy trial.
``out`` must be a ``model/`` folder of a config search path: ``conf/model`` (the default), or
``<your conf>/model``, used as ``hydra.searchpath=[file://<your conf>]``. An existing file is
kept unless ``overwrite=true``. The written file is checked as ``python -m archsearch.validate
model=NEWNAME`` would check it (under the budget the sweep ran with: its file's and command's); a file the
validator refuses is removed again.

``what=recipe`` writes the trial's training recipe instead, as ``<out>/NEWNAME.yaml`` in the
``recipe`` group (``out`` default ``conf/recipe``): every ``optim``, ``sched``, ``trainer`` and
``aug`` value of the trial's full-recipe config that differs from the defaults (its sampled
values and what the sweep file set, e.g. ``optim.batch_scaling``), and the group options it
chose; not the run's length, device or precision. ``python -m archsearch.train model=M
recipe=NEWNAME`` then trains any network with it. The file is checked to compose.

Exit codes: 0 written; 1 the validator refused it; 2 a user mistake (one line on stderr).
"""

from __future__ import annotations

import re
import sys
import textwrap
from collections.abc import Sequence
from pathlib import Path

from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf

from archsearch import cli
from archsearch.config.compose import compose_with_hydra, spec_from_cfg
from archsearch.config.paths import CONF_DIR, base_dir, config_file, search_dirs
from archsearch.errors import ConfigError
from archsearch.files import put_back, read_if_any, write_whole
from archsearch.grammar.analysis import analyze
from archsearch.search.proxy_rank import proxy_vs_full
from archsearch.search.recipe_file import recipe_diff, recipe_yaml
from archsearch.search.results import open_study, proxy_val_acc, retrained
from archsearch.search.selection import (
    complete_trials,
    pick_trials,
    run_overrides,
    sampled_overrides,
    shape_note,
)
from archsearch.search.study import override_key, override_value
from archsearch.validate import run as validate_run

__all__ = ["best_trial", "main", "model_node"]

OWN = ("trial", "name", "out", "overwrite", "what")
WHAT = ("model", "recipe")
_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_\-]*")


# ------------------------------------------------------------------ which trial
def best_trial(study):
    """Best mean full-recipe validation accuracy among retrained trials, else the best proxy trial."""
    done = complete_trials(study)
    table = proxy_vs_full(study)
    table = table[table.full_val_acc.notna() & table.trial.isin([t.number for t in done])]
    if len(table):
        n = int(table.sort_values(["full_val_acc", "trial"], ascending=[False, True]).trial.iloc[0])
        return next(t for t in done if t.number == n)
    return pick_trials(study, 1, None)[0]


def _pick(study, value: str):
    if value == "best":
        return best_trial(study)
    if not value.isdigit():
        raise ConfigError(f"trial: expected a trial number or best; got {value!r}")
    return pick_trials(study, None, [int(value)], field_name="trial")[0]


# ------------------------------------------------------------------ the file
def model_node(base_file: Path, overrides: Sequence[str]):
    """The model file as written (unresolved) with the ``model.*`` overrides applied at their paths."""
    node = OmegaConf.load(base_file)
    parser = OverridesParser.create()
    for text in overrides:
        ov = parser.parse_override(text)
        key = ov.key_or_group
        if not key.startswith("model."):
            continue
        path = key[len("model."):]
        if ov.is_delete():
            parent, _, leaf = path.rpartition(".")
            holder = OmegaConf.select(node, parent) if parent else node
            if holder is not None:
                del holder[int(leaf) if leaf.isdigit() else leaf]
        else:
            OmegaConf.update(node, path, ov.value(), merge=False)
    return node


def _analyze(node):
    root = OmegaConf.create({"model": node})  # the ${model.*} references resolve as in a composed config
    return analyze(spec_from_cfg(root.model)), OmegaConf.to_container(root.model, resolve=True)


def _fmt_acc(v) -> str:
    return "n/a" if v is None or v != v else f"{v:.4f}"


def _relative_to_base(text: str) -> str:
    """Paths inside the base folder (``archsearch.config.paths.base_dir``: where ``mlruns/`` lives) written
    relative to it: the header stays true on another machine."""
    return text.replace(str(base_dir()).rstrip("/") + "/", "")


def _proxy_text(trial) -> str:
    scored = trial.user_attrs.get("scored")
    if not scored:
        return f"proxy val_acc {_fmt_acc(proxy_val_acc(trial))}"
    ms = trial.user_attrs.get("model.ms_per_image")
    timed = f" ({ms:.2f} ms per training image in {trial.user_attrs.get('timed_in')}, timed by the sweep)" if ms else ""
    return f"scored without training by {scored}{timed}"


def _trials_network(trial) -> str:
    swept = trial.user_attrs.get("model.params")
    return f"trial {trial.number}'s network" + (f" ({int(swept):,} params)" if swept is not None else "")


def _is_swept(trial, analysis) -> bool:
    """Whether this is the network the sweep trained: its params, RF and MACs as the trial recorded them."""
    recorded = [trial.user_attrs.get(f"model.{k}") for k in ("params", "rf", "macs")]
    return None not in recorded and recorded == [analysis.params, analysis.rf, analysis.macs]


def _header(study, url: str, trial, base_file: Path, model_ovs: list[str], changed: list[str], analysis) -> str:
    def block(label: str, items: Sequence[str]) -> list[str]:
        return textwrap.wrap(f"{label} {' '.join(items)}", 100, initial_indent="# ", subsequent_indent="#   ")

    lines = [f"# Exported by python -m archsearch.export from trial {trial.number} of study {study.study_name!r}",
             f"#   storage: {_relative_to_base(url)}", f"#   based on: {_relative_to_base(str(base_file))}"]
    lines += block("model settings applied:", [o for o in model_ovs if o not in changed] or ["(none)"])
    if changed:
        lines += block("changed at export (this network was not trained by the sweep):", changed)
    lines.append(f"# {analysis.params:,} params, RF {analysis.rf}, {analysis.macs:,} MACs (archsearch's analysis of this file)")
    if changed:
        lines.append(f"# the figures below are of {_trials_network(trial)}, not of this file's:")
    lines.append(f"# proxy: {_proxy_text(trial)}" if trial.user_attrs.get("scored")
                 else f"# proxy (the sweep's training): val_acc {_fmt_acc(proxy_val_acc(trial))}")
    recs = retrained(study).get(trial.number, {})
    for seed, rec in sorted(recs.items()):
        lines.append(f"# full recipe (archsearch.retrain), seed {seed}: val_acc {_fmt_acc(rec.get('val_acc'))}, test_acc single view "
                     f"{_fmt_acc(rec.get('test_acc_single_view'))} ({rec.get('epochs')} epochs, MLflow run "
                     f"{rec.get('run_id')})")
    other = [o for o in sampled_overrides(trial) if override_key(o) != "model" and not override_key(o).startswith("model.")]
    if other:
        lines += block("trained with:", other)
    return "\n".join(lines) + "\n"


def _searchpath(out: Path, overrides: Sequence[str]) -> list[str]:
    """The ``hydra.searchpath`` override under which ``model=NEWNAME`` finds ``out``."""
    dirs = [d.resolve() for d in search_dirs(overrides) if d.resolve() != CONF_DIR.resolve()]
    if out.parent.resolve() != CONF_DIR.resolve() and out.parent.resolve() not in dirs:
        dirs.insert(0, out.parent.resolve())
    return [f"hydra.searchpath=[{','.join(f'file://{d}' for d in dirs)}]"] if dirs else []


def _first_difference(a, b, path: str = "model") -> str | None:
    if isinstance(a, dict) and isinstance(b, dict):
        for k in [*a, *(k for k in b if k not in a)]:
            d = _first_difference(a.get(k), b.get(k), f"{path}.{k}")
            if d:
                return d
        return None
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return next((d for i, (x, y) in enumerate(zip(a, b)) if (d := _first_difference(x, y, f"{path}.{i}"))), None)
    return None if a == b else path


# ------------------------------------------------------------------ the command
def _args(argv: Sequence[str]):
    mine, rest = cli.split_args(argv, OWN)
    what = mine.get("what", "model")
    if what not in WHAT:
        raise ConfigError(f"what: unknown value {what!r}; choose one of {', '.join(WHAT)}")
    name = mine.get("name", "")
    if not _NAME.fullmatch(name):
        raise ConfigError(f"name: the new {what}'s name, e.g. name={'res_best' if what == 'model' else 'fast20'} "
                          f"(letters, digits, _ and -); got {name!r}")
    out = Path(mine.get("out") or CONF_DIR / what).expanduser()
    if out.name != what:
        raise ConfigError(f"out: must be a {what}/ folder of a config search path (conf/{what}, or <your conf>/{what} "
                          f"with hydra.searchpath=[file://<your conf>]); got {out}")
    return what, mine.get("trial", "best"), name, out, cli.boolean("overwrite", mine.get("overwrite", "false")), rest


def _compose_trial(study, trial, user: Sequence[str]):
    """The trial's overrides, its composed config and the model file it started from."""
    ovs = run_overrides(study, trial, user, seed=None)
    cfg = compose_with_hydra("config", ovs)
    choice = str(cfg.hydra.runtime.choices.get("model"))
    base_file = config_file("model", choice, search_dirs(ovs))
    if base_file is None:
        raise ConfigError(f"model: the trial's model {choice!r} is no file in {', '.join(map(str, search_dirs(ovs)))}")
    return ovs, cfg, base_file


def _check_target(path: Path, name: str, overwrite: bool, overrides: Sequence[str], group: str = "model") -> None:
    if path.exists() and not overwrite:
        raise ConfigError(f"overwrite: {path} exists; choose another name= or pass overwrite=true to replace it")
    # another folder of the search path with the name (the target's own folder is the overwrite above)
    others = [d for d in search_dirs(overrides) if (d / group).resolve() != path.parent.resolve()]
    other = config_file(group, name, others) if others else None
    if other is not None:
        raise ConfigError(f"name: a {group} {name!r} already exists ({other}); choose another name")


def _budget_overrides(budget) -> list[str]:
    """The trial's composed budget as overrides: what the sweep file and its command set, so a file
    exported from a sweep under a tighter budget (e.g. ``budget.max_params: 100000``) is held to it."""
    return [f"budget.{k}={override_value(v)}" for k, v in OmegaConf.to_container(budget, resolve=True).items()]


def _validate_or_put_back(path: Path, before: bytes | None, name: str, overrides: Sequence[str],
                        budget: Sequence[str]) -> tuple[int, str]:
    """``python -m archsearch.validate model=NAME``, in process, under the trial's budget; a refused
    file is taken back (the file it replaced, if any, put back)."""
    try:
        code, text = validate_run([f"model={name}", *_searchpath(path.parent, overrides), *budget])
    except BaseException:
        put_back(path, before)
        raise
    if code:
        put_back(path, before)
    return code, text


def _export_recipe(study, url: str, trial, name: str, out: Path, overwrite: bool, rest) -> tuple[int, str]:
    """``what=recipe``: the trial's recipe as ``<out>/NAME.yaml`` (archsearch.search.recipe_file)."""
    ovs = run_overrides(study, trial, rest, seed=None)
    cfg = compose_with_hydra("config", ovs)
    path = out / f"{name}.yaml"
    _check_target(path, name, overwrite, ovs, group="recipe")
    choices, values = recipe_diff(cfg)
    lines = [f"# Exported by python -m archsearch.export what=recipe from trial {trial.number} of study "
             f"{study.study_name!r}", f"#   storage: {_relative_to_base(url)}",
             f"# proxy (the sweep's training): val_acc {_fmt_acc(proxy_val_acc(trial))}"]
    for seed, rec in sorted(retrained(study).get(trial.number, {}).items()):
        lines.append(f"# full recipe (archsearch.retrain), seed {seed}: val_acc {_fmt_acc(rec.get('val_acc'))}, "
                     f"test_acc single view {_fmt_acc(rec.get('test_acc_single_view'))} ({rec.get('epochs')} epochs, "
                     f"model {cfg.model.name})")
    lines.append(f"# train with it: python -m archsearch.train model=NAME recipe={name}")
    before = read_if_any(path)
    write_whole(path, recipe_yaml("\n".join(lines) + "\n", choices, values))
    sp = _searchpath_for(out)
    try:  # the file must compose, as `train recipe=NAME` will, to the trial's values
        back = compose_with_hydra("config", [*sp, f"recipe={name}"])
        wrong = [k for k, v in values.items() if OmegaConf.select(back, k) != v]
        if wrong:
            raise ConfigError(f"{wrong[0]}: the written recipe composes to {OmegaConf.select(back, wrong[0])!r}, "
                              f"not the trial's {values[wrong[0]]!r}; nothing written")
    except BaseException:  # a refused file goes (the one it replaced, if any, comes back); so does an interrupted one
        put_back(path, before)
        raise
    keys = [*(f"{g}={c}" for g, c in choices.items()), *(f"{k}={v}" for k, v in values.items())]
    return 0, (f"wrote {path}\n{name}: the recipe of trial {trial.number} of study {study.study_name!r} "
               f"({_proxy_text(trial)}): {' '.join(keys) or '(the defaults)'}; train with it: "
               f"python -m archsearch.train model=NAME recipe={name} {' '.join(repr(s) for s in sp)}".rstrip())


def _searchpath_for(out: Path) -> list[str]:
    return [] if out.parent.resolve() == CONF_DIR.resolve() else [f"hydra.searchpath=[file://{out.parent.resolve()}]"]


def _export(argv: Sequence[str]) -> tuple[int, str]:
    what, which, name, out, overwrite, rest = _args(argv)
    _, study, url = open_study(rest)
    trial = _pick(study, which)
    if what == "recipe":
        return _export_recipe(study, url, trial, name, out, overwrite, rest)
    ovs, cfg, base_file = _compose_trial(study, trial, rest)
    path = out / f"{name}.yaml"
    _check_target(path, name, overwrite, ovs)
    model_ovs = [o for o in ovs if override_key(o).startswith("model.")]
    node = model_node(base_file, model_ovs)
    composed = OmegaConf.to_container(cfg.model, resolve=True)
    node.name = composed["name"]
    analysis, resolved = _analyze(node)
    # model.* overrides given here change the network, unless they rebuild the one the sweep trained
    # (a study's command overrides passed again, as shape_note asks for)
    changed = [] if _is_swept(trial, analysis) else [o for o in rest if override_key(o).startswith("model.")]
    diff = _first_difference(composed, resolved)
    if diff:
        raise ConfigError(f"{diff}: the trial's composed model differs from {base_file} with its model overrides "
                          "(set by the sweep file itself?); export cannot rebuild it")
    node.name = name
    before = read_if_any(path)
    write_whole(path, _header(study, url, trial, base_file, model_ovs, changed, analysis) + OmegaConf.to_yaml(node))
    code, text = _validate_or_put_back(path, before, name, ovs, _budget_overrides(cfg.budget))
    if code:
        return code, f"error: the validator refused the exported model; nothing written:\n{text}"
    full = [r.get("val_acc") for r in retrained(study).get(trial.number, {}).values() if r.get("val_acc") is not None]
    seeds = f"{len(full)} seed{'s' if len(full) > 1 else ''}"
    full_text = f", full-recipe val_acc {sum(full) / len(full):.4f} ({seeds})" if full else ""
    sp = " ".join(f"'{s}'" for s in _searchpath(out, ovs))
    # A network changed here on purpose is not the sweep's: no hint to pass the sweep's overrides again.
    note = "" if changed else "".join(f"\n{n}" for n in shape_note(trial, analysis.params))
    scores = f"{_proxy_text(trial)}{full_text}"
    if changed:
        scores = f"changed at export ({' '.join(changed)}); {_trials_network(trial)}: {scores}"
    return 0, (f"wrote {path}\n{name}: trial {trial.number} of study {study.study_name!r}, {analysis.params:,} params, "
               f"RF {analysis.rf}, {scores}; "
               f"{text.strip().splitlines()[-1]}; train it: python -m archsearch.train model={name} {sp}".rstrip() + note)


def _export_and_print(argv: list[str]) -> int:
    code, text = _export(argv)
    print(text, file=sys.stderr if code else sys.stdout)
    return code


def main(argv: Sequence[str] | None = None) -> int:
    return cli.start(__doc__, _export_and_print, argv)


if __name__ == "__main__":
    cli.run(main)
