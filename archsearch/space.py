"""``python -m archsearch.space sweep=NAME [samples=N] [seed=S] [overrides]``: a sweep's search space
checked against the budget before any trial runs.

Every architecture of the space (or ``samples`` of them drawn at random when there are more,
default 1000) is analysed as the sweeper's budget gate would (no model built, no data loaded),
and the command prints how many are within the budget, which rules reject the others, the
params / MACs / receptive-field range of those within it, and for every architecture dimension
how often each value is within the budget: a value that is almost always rejected wastes the
sampler's draws (and TPE learns the feasible region only from rejections). The candidates are
written to ``outputs/space/<sweep>.csv`` (values, params, MACs, RF, within the budget or why not).

Dimensions over ``model.*`` and ``budget.*`` (and config groups such as ``model=choice(a,b)``)
shape the architecture; the others (``optim.lr``, ...) are training knobs and are listed, not
drawn. A command-line ``key=choice(...)`` adds a dimension, as with ``-m``.
"""

from __future__ import annotations

import copy
import csv
import io
import math
import random
import re
import statistics
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from archsearch import cli
from archsearch.config.compose import compose, compose_with_hydra
from archsearch.config.gate import verdict
from archsearch.config.paths import base_dir
from archsearch.errors import ConfigError, SpecError, SweepConfigError
from archsearch.files import write_whole
from archsearch.grammar.analysis import analyze
from archsearch.grammar.budget import check, parse_budget
from archsearch.grammar.spec import parse_spec
from archsearch.search.space import check_keys, merge_space
from archsearch.search.study import override_value, split_sweep_args

__all__ = ["Candidate", "SpaceReport", "check_space", "main"]

ARCH_ROOTS = ("model", "budget")


@dataclass
class Candidate:
    values: dict[str, Any]
    params: int | None = None
    macs: int | None = None
    rf: int | None = None
    reasons: list[str] = field(default_factory=list)  # empty: within the budget
    rules: list[str] = field(default_factory=list)  # the budget rules it breaks ("invalid" for a malformed spec)

    @property
    def ok(self) -> bool:
        return not self.reasons

    @classmethod
    def measured(cls, combo: dict[str, Any], analysis, violations=()) -> Candidate:
        """A candidate the analysis measured, with the budget rules it breaks (none: within it)."""
        return cls(combo, analysis.params, analysis.macs, analysis.rf, [v.message for v in violations],
                   [v.rule for v in violations])


@dataclass
class SpaceReport:
    sweep: str
    dims: dict[str, list]  # architecture dimension -> its values (None: a continuous interval)
    training: list[str]  # dimensions that do not shape the architecture
    size: int | None  # architectures in the space (None: infinite)
    enumerated: bool
    candidates: list[Candidate]


def _is_arch_dimension(key: str) -> bool:
    """``model.*`` / ``budget.*`` values, or a choice of the model / budget config group."""
    return key.lstrip("+~").split(".")[0] in ARCH_ROOTS


def _draw(rng: random.Random, sweep) -> Any:
    """One value of a continuous interval (log-uniform when tagged ``log``)."""
    lo, hi = sweep.start, sweep.end
    if "log" in (sweep.tags or set()):
        v = math.exp(rng.uniform(math.log(lo), math.log(hi)))
    else:
        v = rng.uniform(lo, hi)
    return int(round(v)) if isinstance(lo, int) and isinstance(hi, int) else v


def _value_combinations(dims: dict[str, list], sweeps: dict[str, Any], samples: int,
                        seed: int) -> tuple[list[dict], int | None, bool]:
    """-> (value combinations to check, the space's size, whether they are all of it)."""
    rng = random.Random(seed)
    names = list(dims)
    finite = all(dims[n] is not None for n in names)
    size = math.prod(len(dims[n]) for n in names) if finite else None
    if finite and size <= samples:
        idx: Sequence[int] = range(size)
    elif finite:
        idx = rng.sample(range(size), samples)  # distinct architectures
    else:
        idx = [None] * samples
    combos = []
    for i in idx:
        combo = {}
        for n in reversed(names):  # mixed-radix decoding of the index (or an independent draw)
            vals = dims[n]
            if vals is None:
                combo[n] = _draw(rng, sweeps[n])
            elif i is None:
                combo[n] = rng.choice(vals)
            else:
                i, r = divmod(i, len(vals))
                combo[n] = vals[r]
        combos.append({n: combo[n] for n in names})
    return combos, size, finite and size <= samples


_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z0-9_]+)+)\}")


class _NotSimple(Exception):
    """An interpolation other than a plain ``${model.x}`` reference: OmegaConf resolves it."""


def _get(root: Any, path: str) -> Any:
    node = root
    for part in path.split("."):
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            raise KeyError(path)
    return node


def _set(root: Any, path: str, value: Any, add: bool) -> None:
    *head, last = path.split(".")
    node = _get(root, ".".join(head)) if head else root
    if isinstance(node, list) and last.isdigit() and int(last) < len(node):
        node[int(last)] = value
    elif isinstance(node, dict) and (last in node or add):
        node[last] = value
    else:
        raise KeyError(path)


def _resolve(node: Any, root: Any, depth: int = 0) -> Any:
    """``node`` with every plain ``${a.b.c}`` reference replaced by its (resolved) value."""
    if isinstance(node, dict):
        return {k: _resolve(v, root, depth) for k, v in node.items()}
    if isinstance(node, list):
        return [_resolve(v, root, depth) for v in node]
    if isinstance(node, str) and "${" in node:
        m = _REF.fullmatch(node)
        if m is None or depth > 20:
            raise _NotSimple(node)
        try:
            return _resolve(_get(root, m[1]), root, depth + 1)
        except KeyError:
            raise _NotSimple(node) from None
    return node


def _fast_check(base: dict, combo: dict[str, Any], full: dict | None = None) -> Candidate:
    """Set the values in a copy of the composed ``model``/``budget`` nodes (plain containers) and
    gate it: what composing each candidate gives for value overrides, without composing.
    Interpolations other than plain references within them are left to OmegaConf, on a copy of
    the whole composed config ``full`` (they may point anywhere in it)."""
    raw = copy.deepcopy(base)
    try:
        for key, value in combo.items():
            _set(raw, key.lstrip("+"), value, add=key.startswith("+"))
    except KeyError as e:
        return Candidate(combo, reasons=[f"{e.args[0]}: no such key to set"], rules=["invalid"])
    try:
        resolved = _resolve(raw, raw)
    except _NotSimple:
        whole = copy.deepcopy(full) if full is not None else {}
        whole.update(raw)
        return _gated(combo, OmegaConf.create(whole))
    try:
        analysis = analyze(parse_spec(resolved["model"], raw=raw["model"]))
    except SpecError as e:
        return Candidate(combo, reasons=[str(e)], rules=["invalid"])
    return Candidate.measured(combo, analysis, check(analysis, parse_budget(resolved["budget"])))


def _slow_check(overrides: list[str], combo: dict[str, Any]) -> Candidate:
    """Compose the candidate as the sweeper does (a config-group dimension needs it)."""
    try:
        cfg = compose("config", [*overrides, *(f"{k}={override_value(v)}" for k, v in combo.items())])
    except ConfigError as e:
        return Candidate(combo, reasons=[str(e)], rules=["invalid"])
    return _gated(combo, cfg)


def _gated(combo, cfg) -> Candidate:
    """The sweeper's budget gate on a composed config."""
    try:
        _, analysis, violations = verdict(cfg)
    except SpecError as e:
        return Candidate(combo, reasons=[str(e)], rules=["invalid"])
    return Candidate.measured(combo, analysis, violations)


def check_space(overrides: Sequence[str], samples: int = 1000, seed: int = 0) -> SpaceReport:
    """Compose the sweep (``sweep=NAME`` among ``overrides``), and check its architectures."""
    plain, _ = split_sweep_args(overrides)
    cfg = compose_with_hydra("config", plain)
    name = cfg.hydra.runtime.choices.get("sweep")
    if not name:
        raise ConfigError("sweep: name a sweep whose space to check (sweep=arch_residual)")
    params = OmegaConf.to_container(cfg.hydra.sweeper.get("params") or {}, resolve=False)
    try:  # the sweeper's own reading: the command line's values and dimensions over the sweep file's
        space, base_ovs, _ = merge_space({str(k): str(v) for k, v in params.items()}, list(overrides))
    except SweepConfigError as e:
        raise ConfigError(str(e)) from None
    if base_ovs != plain:
        cfg = compose_with_hydra("config", base_ovs)
    try:
        check_keys(space, cfg)  # the sweeper's own check, before it would reject every candidate
    except SweepConfigError as e:
        raise ConfigError(str(e)) from None
    # keyed as the override writes it (+model.x adds the key), valued by its dimension
    arch = {d.prefix + k: d for k, d in space.items() if _is_arch_dimension(k)}
    training = [k for k in space if not _is_arch_dimension(k)]
    if not arch:
        raise ConfigError(f"hydra.sweeper.params: sweep {name!r} has no dimension over model.* or budget.* "
                          f"(only {', '.join(training) or 'none'}): every trial has the same architecture")
    dims = {k: d.values() or None for k, d in arch.items()}  # None: an interval, drawn
    combos, size, enumerated = _value_combinations(dims, {k: d.sweep for k, d in arch.items()}, samples, seed)
    if any("." not in k.lstrip("+~") or k.startswith("~") for k in arch):  # group choices, deletions: compose each
        cands = [_slow_check(base_ovs, c) for c in combos]
    else:
        full = OmegaConf.to_container(cfg, resolve=False)
        full.pop("hydra", None)
        base = {"model": full["model"], "budget": full["budget"]}  # (copied per candidate before any change)
        cands = [_fast_check(base, c, full) for c in combos]
    return SpaceReport(str(name), dims, training, size, enumerated, cands)


# ------------------------------------------------------------------ output
def _pct(n: int, d: int) -> str:
    return f"{100 * n / d:.1f}%" if d else "n/a"


def _spread(xs: list[int], fmt=lambda v: f"{v:,}") -> str:
    if min(xs) == max(xs):
        return fmt(xs[0])
    return f"{fmt(min(xs))}-{fmt(max(xs))} (median {fmt(int(statistics.median(xs)))})"


def _fmt_value(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def summary_lines(rep: SpaceReport) -> list[str]:
    n = len(rep.candidates)
    ok = [c for c in rep.candidates if c.ok]
    size = f"{rep.size:,} architectures" if rep.size is not None else "a continuous space"
    dims = f"{len(rep.dims)} architecture dimension{'s' if len(rep.dims) != 1 else ''}"
    lines = [f"space of sweep {rep.sweep}: {dims}, {size}"
             + (f"; training knobs, not drawn: {', '.join(rep.training)}" if rep.training else "")]
    how = f"all {n:,} checked" if rep.enumerated else f"{n:,} drawn at random"
    lines.append(f"{how}: {len(ok):,} ({_pct(len(ok), n)}) within the budget")
    rules = Counter(r for c in rep.candidates for r in set(c.rules))
    if rules:
        example = {r: next(c.reasons[c.rules.index(r)] for c in rep.candidates if r in c.rules) for r in rules}
        lines.append("rejected by (a candidate can break several rules):")
        lines += [f"  {r}: {k:,} ({_pct(k, n)}), e.g. {example[r]}" for r, k in rules.most_common()]
    if ok:
        lines.append(f"within the budget: params {_spread([c.params for c in ok])}, "
                     f"MACs {_spread([c.macs for c in ok], lambda v: f'{v / 1e6:.1f}M')}, "
                     f"RF {_spread([c.rf for c in ok], str)}")
    lines.append("within the budget, by value of each dimension:")
    for k, vals in rep.dims.items():
        if vals is None:
            continue
        parts = []
        for v in vals:
            have = [c for c in rep.candidates if c.values[k] == v]
            parts.append(f"{_fmt_value(v)} {_pct(sum(c.ok for c in have), len(have))}")
        lines.append(f"  {k}: " + ", ".join(parts))
    return lines


def write_csv(rep: SpaceReport, path: Path) -> Path:
    buf = io.StringIO(newline="")
    w = csv.writer(buf)
    w.writerow([*rep.dims, "within_budget", "params", "macs", "rf", "reasons"])
    for c in rep.candidates:
        w.writerow([*(c.values[k] for k in rep.dims), c.ok, c.params, c.macs, c.rf, "; ".join(c.reasons)])
    return write_whole(path, buf.getvalue())


def _check_and_write(argv: list[str]) -> int:
    mine, rest = cli.split_args(argv, ("samples", "seed"))
    samples = cli.positive_int("samples", mine.get("samples", "1000"))
    try:
        seed = int(mine.get("seed", "0"))
    except ValueError:
        raise ConfigError(f"seed: expected an integer, got {mine['seed']!r}") from None
    try:
        rep = check_space(rest, samples, seed)
    except ValueError as e:  # any ValueError here is a bad argument or sweep (OmegaConf's too): one line, status 2
        raise ConfigError(str(e)) from None
    for line in summary_lines(rep):
        print(line)
    out = write_csv(rep, base_dir() / "outputs" / "space" / f"{rep.sweep}.csv")
    print(f"wrote {out}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return cli.start(__doc__, _check_and_write, argv)


if __name__ == "__main__":
    cli.run(main)
