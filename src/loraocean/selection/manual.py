"""`manual`: experts picked from a hand-written relevance map (the paper's Manual strategy).

The shipped map (`relevance.yaml` beside this file) lists, for each catalog task, its related tasks
most relevant first, each with a one-line rationale. Users can pass their own map in the same
format. Missing related LoRAs are filled from the target's category, then the rest by name.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from loraocean.errors import DataError, UnknownNameError
from loraocean.selection.base import Choice, ModelRef, strategy

SHIPPED = Path(__file__).with_name("relevance.yaml")


@dataclass(frozen=True)
class Related:
    task: str
    why: str
    line: int  # 1-based line in the map file


def read_map(path: str | Path | None = None, known: set[str] | None = None) -> dict[str, list[Related]]:
    """target -> related tasks (in file order). Raises DataError naming the file, the line and the
    offending entry for malformed YAML or task names outside `known` (default: the task catalog)."""
    import yaml

    from loraocean import yamlio
    from loraocean.artifacts import read_text
    from loraocean.tasks import CATALOG

    path = Path(path) if path is not None else SHIPPED
    known = set(CATALOG) if known is None else known
    try:
        root = yamlio.compose(read_text(path, fix="pass an existing UTF-8 YAML file with --map"))
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        raise DataError(path, f"not valid YAML ({getattr(err, 'problem', err)})",
                        line=mark.line + 1 if mark else None) from None
    if root is None or not isinstance(root, yaml.MappingNode):
        raise DataError(path, "a relevance map is a mapping `target: {related: rationale}`",
                        fix="see the shipped relevance.yaml for the format")
    out: dict[str, list[Related]] = {}
    unknown: list[str] = []
    for key, value in root.value:
        target = key.value
        if target not in known:
            unknown.append(f"{target!r} (line {key.start_mark.line + 1}, target)")
        if not isinstance(value, yaml.MappingNode):
            raise DataError(path, "the related tasks must be a mapping `task: rationale`",
                            line=value.start_mark.line + 1, field=target)
        related = []
        for rkey, rval in value.value:
            if rkey.value not in known:
                unknown.append(f"{rkey.value!r} (line {rkey.start_mark.line + 1}, under {target})")
            if not isinstance(rval, yaml.ScalarNode) or not str(rval.value).strip():
                raise DataError(path, "each related task needs a one-line rationale",
                                line=rkey.start_mark.line + 1, field=f"{target}.{rkey.value}")
            related.append(Related(rkey.value, str(rval.value), rkey.start_mark.line + 1))
        out[target] = related
    if unknown:
        more = f" and {len(unknown) - 8} more" if len(unknown) > 8 else ""
        raise DataError(path, f"unknown task names: {', '.join(unknown[:8])}{more}",
                        fix="use catalog task names (`loraocean tasks list`)")
    return out


def _category(task: str) -> str | None:
    from loraocean.tasks import CATALOG

    spec = CATALOG.get(task)
    return spec.category if spec else None


@strategy("manual", order=10)
class Manual:
    higher_is_better = True

    def __init__(self, map_file: str | Path | None = None):
        self.map_file = map_file

    def select(self, target_task: str, candidates: list, model: ModelRef, k: int,
               examples: list) -> list[Choice]:
        relevance = read_map(self.map_file)
        if target_task not in relevance:
            raise UnknownNameError("target in the relevance map", target_task, relevance,
                                   hint=f"map {self.map_file or SHIPPED}; add an entry or pass --map FILE")
        by_task = {e.task: e for e in candidates}
        out, seen = [], set()
        related = relevance[target_task]
        for i, rel in enumerate(related):
            if rel.task in by_task and rel.task not in seen:
                # score: relevance by position in the map, 1.0 for the first related task
                out.append(Choice(rel.task, round(1.0 - i / (2 * len(related)), 4),
                                  f"related: {rel.why}", str(by_task[rel.task].path)))
                seen.add(rel.task)
        category = _category(target_task)
        rest = sorted((e for e in candidates if e.task not in seen),
                      key=lambda e: (_category(e.task) != category, e.task))
        for e in rest:
            same = category is not None and _category(e.task) == category
            out.append(Choice(e.task, 0.25 if same else 0.0,
                              f"not in the map; same category ({category})" if same else "not in the map",
                              str(e.path)))
        return out
