"""Which trials to retrain or export, and the overrides that rebuild them: the best COMPLETE
trials (of distinct architectures), the sweep command's recorded overrides, and a trial's own.
"""

from __future__ import annotations

from collections.abc import Sequence

from optuna.study import StudyDirection

from archsearch.errors import ConfigError
from archsearch.search.results import scored_by
from archsearch.search.study import override_key, override_value

ARCH_KEYS = ("model", "budget", "hydra.searchpath")  # sweep-command overrides that shape the trial's architecture


# ------------------------------------------------------------------ which trials, which config
def _state(trial) -> str:
    return trial.user_attrs.get("state") or trial.state.name


def complete_trials(study) -> list:
    """The trained COMPLETE trials (not the budget's rejections), best objective value first."""
    done = [t for t in study.get_trials(deepcopy=False) if _state(t) == "COMPLETE" and t.values]
    best_high = study.directions[0] == StudyDirection.MAXIMIZE
    return sorted(done, key=lambda t: (-t.values[0] if best_high else t.values[0], t.number))


def distinct_architectures(trials: list, by_score: bool = False) -> list:
    """The best trial of each architecture (its sampled ``model.*`` values), in order: TPE
    often settles on one architecture and tunes the lr around it, and ``top=3`` should
    retrain three networks, not one three times. ``by_score``: of each score instead (a study
    scored without training cannot tell apart candidates with the same MACs, e.g. dilation
    variants of one network; the first of each is kept)."""
    seen, out = set(), []
    for t in trials:
        arch = tuple(t.values) if by_score else tuple(
            sorted((k, repr(v)) for k, v in t.params.items() if k.startswith("model.")))
        if arch not in seen:
            seen.add(arch)
            out.append(t)
    return out


def pick_trials(study, top: int | None, numbers: Sequence[int] | None, field_name: str = "trials",
                distinct: bool = True) -> list:
    """The ``top`` best COMPLETE trials (of distinct architectures unless ``distinct`` is false), or the trials ``numbers`` (each must be COMPLETE;
    ``field_name`` is the argument named in the error)."""
    done = complete_trials(study)
    name = study.study_name
    if not done:
        raise ConfigError(f"sweep: study {name!r} has no COMPLETE trial yet; run the sweep first: "
                          f"python -m archsearch.train -m sweep={name}")
    if numbers is None:
        return (distinct_architectures(done, bool(scored_by(study))) if distinct else done)[: top or DEFAULT_TOP]
    ok = {t.number: t for t in done}
    nums = sorted(ok)
    choices = ", ".join(map(str, nums[:30])) + (", ..." if len(nums) > 30 else "")
    every = {t.number: t for t in study.get_trials(deepcopy=False)}
    for n in numbers:
        if n not in every:
            raise ConfigError(f"{field_name}: study {name!r} has no trial {n}; choose one of the COMPLETE trials "
                              f"{choices}")
        if n not in ok:
            raise ConfigError(f"{field_name}: trial {n} of study {name!r} is {_state(every[n])}, not COMPLETE; "
                              f"choose one of {choices}")
    return [ok[n] for n in numbers]


def _is_arch_override(override: str) -> bool:
    key = override_key(override)
    return any(key == k or key.startswith(k + ".") for k in ARCH_KEYS)


def sweep_overrides(study) -> tuple[list[str], list[str]]:
    """The sweep command's overrides as the sweeper recorded them: (reapplied: those that shape
    the architecture and its budget; not reapplied: the training settings)."""
    base = [str(o) for o in study.user_attrs.get("archsearch.base_overrides") or []]
    kept = [o for o in base if _is_arch_override(o)]
    other = [o for o in base if not _is_arch_override(o) and not override_key(o).startswith("hydra.")
             and override_key(o) != "sweep"]
    return kept, other


def trial_overrides(study, trial) -> list[str]:
    """What made the trial's architecture and recipe: the reapplied sweep-command overrides,
    then its sampled values (Optuna's parameter names are the override keys)."""
    kept, _ = sweep_overrides(study)
    return kept + sampled_overrides(trial)


def sampled_overrides(trial) -> list[str]:
    """The trial's sampled values as the job received them (the sweeper records them: ``+`` prefixes
    and list or dict choices included); for a trial recorded without them, rebuilt from its params."""
    recorded = trial.user_attrs.get("overrides")
    if recorded:
        return [str(o) for o in recorded]
    return [f"{k}={override_value(v)}" for k, v in trial.params.items()]


def run_overrides(study, trial, user: Sequence[str], seed: int | None) -> list[str]:
    """The full-recipe config of ``trial``: sweep, trial, ``proxy=none``, the user's, the seed."""
    sweep = [o for o in user if override_key(o) == "sweep"]
    rest = [o for o in user if override_key(o) != "sweep"]
    run_name = [f"run_name={override_value(f'{study.study_name}-t{trial.number}-full-s{seed}')}"]
    return [*sweep, *trial_overrides(study, trial), "proxy=none", *(run_name if seed is not None else []),
            *rest, *([f"seed={seed}"] if seed is not None else [])]


def shape_note(trial, params: int) -> list[str]:
    """A warning when the rebuilt architecture is not the one the sweep trained (e.g. a study
    from before the sweeper recorded its command's ``model.*`` overrides)."""
    swept = trial.user_attrs.get("model.params")
    if swept is None or int(swept) == params:
        return []
    return [f"note: trial {trial.number} had {int(swept):,} params in the sweep, this config has {params:,}: pass the "
            "sweep command's model.* overrides again"]


DEFAULT_TOP = 3
