"""Plugin dependencies: missing, mismatched, cyclic, or on a plugin that cannot load."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping

from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.version import InvalidVersion, Version

from ._records import AVAILABLE, DENIED, DISABLED, FAILED, Record

__all__ = ["check_dependencies"]


def check_dependencies(records: Mapping[str, Record], fail: Callable[..., None]) -> None:
    """Mark plugins whose dependencies are missing, mismatched or cyclic as failed."""
    graph: dict[str, list[str]] = {}
    for rec in records.values():
        if rec.status != AVAILABLE or rec.manifest is None:
            continue
        deps = rec.manifest.dependencies
        graph[rec.id] = list(deps)
        for dep_id, spec in deps.items():
            dep = records.get(dep_id)
            if dep is None:
                missing = f"depends on {dep_id} {spec or ''}".rstrip()
                fail(rec, f"{missing}, which is not installed", dependency=True)
                break
            try:
                ok = not spec or Version(
                    dep.manifest.version if dep.manifest else "0"
                ) in SpecifierSet(spec)
            except (InvalidSpecifier, InvalidVersion) as e:
                fail(rec, f"bad dependency {dep_id} {spec!r}: {e}", dependency=True)
                break
            if not ok:
                have = dep.manifest.version if dep.manifest else "?"
                fail(rec, f"depends on {dep_id} {spec}, but {have} is installed", dependency=True)
                break
    # cycles (iterative DFS, colours)
    colour: dict[str, int] = {}
    for start in graph:
        stack: list[tuple[str, Iterator[str]]] = [(start, iter(graph.get(start, [])))]
        path = [start]
        if colour.get(start):
            continue
        colour[start] = 1
        while stack:
            node, it = stack[-1]
            nxt = next(it, None)
            if nxt is None:
                colour[node] = 2
                stack.pop()
                path.pop()
            elif colour.get(nxt) == 1:
                cycle = [*path[path.index(nxt) :], nxt]
                for member in cycle[:-1]:
                    fail(
                        records[member],
                        "dependency cycle: " + " -> ".join(cycle),
                        dependency=True,
                    )
            elif not colour.get(nxt) and nxt in graph:
                colour[nxt] = 1
                stack.append((nxt, iter(graph.get(nxt, []))))
                path.append(nxt)
    # anything depending on a failed plugin fails too (to a fixed point)
    changed = True
    while changed:
        changed = False
        for rec in records.values():
            if rec.status == AVAILABLE and rec.manifest is not None:
                for dep_id in rec.manifest.dependencies:
                    dep = records.get(dep_id)
                    if dep is not None and dep.status in (FAILED, DENIED, DISABLED):
                        fail(rec, f"depends on {dep_id}, which is {dep.status}", dependency=True)
                        changed = True
                        break
