"""The traced graph's series-parallel structure: a list of steps where a fork (one output read by
several operations) and the add or concat where its paths meet become one :class:`Fork` holding
the paths. The meeting point of a fork is its immediate post-dominator: the first operation that
every path from the fork passes through."""

from __future__ import annotations

from dataclasses import dataclass

from archsearch.importer.problems import ImportProblem
from archsearch.importer.trace import Prim, Traced

__all__ = ["Fork", "series_parallel"]

MERGES = ("add", "cat")


@dataclass
class Fork:
    """Paths from one input (each a list of Prims and Forks; empty: the identity) merged by ``merge``."""

    paths: list[list]
    merge: Prim


def _flatten_adds(prims: list[Prim], users: dict[str, list[str]]) -> list[Prim]:
    """``a + b + c`` traces as add(add(a, b), c): an add read only by another add joins it."""
    by_name = {p.name: p for p in prims}
    gone: set[str] = set()
    for p in prims:
        if p.kind != "add":
            continue
        ins: list[str] = []
        for i in p.inputs:
            q = by_name.get(i)
            if q is not None and q.kind == "add" and users.get(i) == [p.name]:
                ins += q.inputs
                gone.add(i)
            else:
                ins.append(i)
        p.inputs = ins
    return [p for p in prims if p.name not in gone]


class _Graph:
    def __init__(self, traced: Traced):
        users: dict[str, list[str]] = {}
        for p in traced.prims:
            for i in p.inputs:
                users.setdefault(i, []).append(p.name)
        prims = _flatten_adds(traced.prims, users)
        self.prims = {p.name: p for p in prims}
        self.order = {p.name: k for k, p in enumerate(prims)}
        self.users: dict[str, list[str]] = {p.name: [] for p in prims}
        for p in prims:
            for i in dict.fromkeys(p.inputs):
                self.users[i].append(p.name)
        self.output = traced.output
        self.pdom = self._post_dominators(prims)

    def _post_dominators(self, prims: list[Prim]) -> dict[str, set[str]]:
        pdom: dict[str, set[str]] = {}
        for p in reversed(prims):
            us = self.users[p.name]
            if p.name == self.output or not us:
                pdom[p.name] = {p.name}
            else:
                pdom[p.name] = {p.name} | set.intersection(*(pdom[u] for u in us))
        return pdom

    def meet(self, name: str) -> str:
        """Where the paths from ``name`` meet again."""
        rest = self.pdom[name] - {name}
        if not rest:
            p = self.prims[name]
            raise ImportProblem(f"{p.label}{f' at {p.where}' if p.where else ''}: its output goes on along "
                                "paths that never merge again; a spec has one output")
        return min(rest, key=self.order.__getitem__)

    def fail(self, p: Prim, why: str):
        raise ImportProblem(f"{p.label}{f' at {p.where}' if p.where else ''}: {why}")


def _sequence(g: _Graph, start: str, stop: str | None) -> list:
    """The steps after ``start`` up to (not including) ``stop`` (None: to the output)."""
    steps: list = []
    cur = start
    while cur != g.output:
        users = g.users[cur]
        if len(users) == 1:
            nxt = users[0]
            if nxt == stop:
                break
            p = g.prims[nxt]
            if p.kind in MERGES:
                g.fail(p, "merges paths that do not start from one fork (the grammar's blocks are paths from one "
                          "input, merged once)")
            steps.append(p)
            cur = nxt
            continue
        m = g.meet(cur)
        if stop is not None and g.order[m] > g.order[stop]:
            g.fail(g.prims[m], "paths cross the end of the block they start in; not a series-parallel network")
        steps.append(_fork(g, cur, m))
        cur = m
        if cur == stop:
            break
    return steps


def _fork(g: _Graph, start: str, m: str) -> Fork:
    merge = g.prims[m]
    if merge.kind not in MERGES:
        g.fail(merge, f"the paths from {g.prims[start].label} meet here, not at an add or torch.cat")
    ends: dict[str, list] = {}
    for u in g.users[start]:
        if u == m:
            ends[start] = []
            continue
        path = [g.prims[u], *_sequence(g, u, m)]
        last = path[-1].merge.name if isinstance(path[-1], Fork) else path[-1].name
        ends[last] = path
    if sorted(ends) != sorted(merge.inputs) or len(merge.inputs) != len(set(merge.inputs)):
        g.fail(merge, "its inputs are not the ends of the paths from one fork; not writable as a block")
    return Fork([ends[i] for i in merge.inputs], merge)


def series_parallel(traced: Traced) -> list:
    """The network as steps: Prims in a row, Forks for blocks."""
    g = _Graph(traced)
    first = next(iter(g.prims))
    return _sequence(g, first, None)
