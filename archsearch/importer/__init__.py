"""Bring a user's ``torch.nn.Module`` into the grammar: load it (source), trace it with torch.fx
(trace, operations), find its blocks (structure), write it as layers (emit), prove the spec is the
same network (checks), write the YAML file (yaml_out). ``import_model`` does it all in memory."""

from archsearch.importer.importing import Imported, import_model
from archsearch.importer.problems import ImportProblem

__all__ = ["ImportProblem", "Imported", "import_model"]
