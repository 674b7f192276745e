"""``python -m archsearch.import SOURCE name=NEWNAME [init.ARG=VALUE ...] [out=DIR] [overwrite=true]
[in_channels=C] [input_size=S]``

Writes a PyTorch model as a model spec, ``<out>/NEWNAME.yaml`` (out: ``conf/model`` unless given).
SOURCE is ``path/to/model.py:ClassName`` or ``package.module:ClassName`` (a factory function works
too); ``init.ARG=VALUE`` are its keyword arguments, read as YAML scalars (``init.width=64``).
This imports and runs that Python file: only name code you trust.

The forward is traced with torch.fx on a 1 x C x S x S input (C: the first conv's input channels,
S: 32, unless in_channels= / input_size= say otherwise) and written as layers and blocks. The file
is written only when it is proven to be the same network: (a) the parameter count equals the torch
module's (modules built but never called are named and not counted), (b) every layer's output shape
equals the traced one, (c) the module's weights copied into the built spec give the same outputs
(fp64, eval mode, random inputs, within 1e-5), (d) the receptive field equals a gradient measurement
on the module. An existing file is kept unless ``overwrite=true``.

Exit codes: 0 written (the budget's verdict is printed, not enforced); 2 a construct the grammar
cannot write, a failed check or a user mistake (one line on stderr; nothing written).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

from omegaconf import OmegaConf

from archsearch import cli
from archsearch.config.compose import compose
from archsearch.config.paths import CONF_DIR
from archsearch.errors import ConfigError
from archsearch.grammar.budget import check, parse_budget
from archsearch.importer import import_model
from archsearch.importer.source import split_import_args
from archsearch.importer.yaml_out import model_yaml, write_atomically

__all__ = ["main", "parse_args"]

OWN = ("name", "out", "overwrite", "in_channels", "input_size")
_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_\-]*")


def parse_args(argv: Sequence[str]) -> tuple[str, dict, dict, list[str]]:
    """(SOURCE, the command's own settings, the init.* arguments, the rest: budget overrides)."""
    source, mine, init, rest = split_import_args(argv, OWN)
    if source is None:
        raise ConfigError("SOURCE: give one path/to/model.py:ClassName or package.module:ClassName")
    bad = [a for a in rest if not a.lstrip("+~").startswith("budget")]
    if bad:
        raise ConfigError(f"{bad[0].partition('=')[0]}: unknown argument; valid: {', '.join(OWN)}, init.ARG=VALUE, "
                          "budget.*")
    return source, mine, init, rest


def _import(argv: Sequence[str]) -> int:
    source, mine, init, rest = parse_args(argv)
    name = mine.get("name", "")
    if not _NAME.fullmatch(name):
        raise ConfigError(f"name: the new model's name, e.g. name=mynet (letters, digits, _ and -); got {name!r}")
    out = Path(mine.get("out") or CONF_DIR / "model").expanduser()
    path = out / f"{name}.yaml"
    if path.exists() and not cli.boolean("overwrite", mine.get("overwrite", "false")):
        raise ConfigError(f"overwrite: {path} exists; choose another name= or pass overwrite=true to replace it")
    size = cli.positive_int("input_size", mine["input_size"]) if "input_size" in mine else 32
    chans = cli.positive_int("in_channels", mine["in_channels"]) if "in_channels" in mine else None
    budget = parse_budget(OmegaConf.to_container(compose("validate", rest).budget, resolve=True))
    imp = import_model(source, name, init, chans, size)
    write_atomically(path, model_yaml(imp))
    violations = check(imp.analysis, budget)
    verdict = (f"REJECTED by the budget: {'; '.join(v.message for v in violations)}" if violations
               else "within budget")
    searchpath = "" if out.resolve() == (CONF_DIR / "model").resolve() else f" 'hydra.searchpath=[file://{out.resolve().parent}]'"
    print(f"wrote {path}\n{name}: {imp.analysis.params:,} params, RF {imp.analysis.rf}; {verdict}\n"
          f"checks passed: {imp.proof.summary()}\n"
          f"validate it: python -m archsearch.validate model={name}{searchpath}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return cli.start(__doc__, _import, argv)


if __name__ == "__main__":
    cli.run(main)
