"""The transfer atlas: every library LoRA of one base model, and the base model alone as a
reference row, evaluated on every target's dev split; the oracle read off that matrix; and each
selection strategy scored against it (`oracle.against_oracle`).

Each cell is cached as a small JSON artifact named by the hash of what decides its value (the
adapter's weights checksum, model, target, split, limit, seed, the examples' hash and the
convention), so a rerun with the same cache evaluates nothing. The base model is loaded once (only
when some cell is missing) and the LoRAs are swapped onto it in place (`selection.swap`).
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass, field
from pathlib import Path

from loraocean.artifacts import hash_obj, sha256_file, write_json_atomic, write_text_atomic
from loraocean.errors import ConfigError
from loraocean.selection.base import ModelRef, Selection
from loraocean.selection.candidates import candidates as list_candidates

FORMAT = 1
BASE = "(base)"  # the row of the base model without any LoRA


@dataclass
class Atlas:
    """rows x targets dev scores (rows: BASE, then the library tasks of `model`, sorted)."""

    model: str
    library: str
    split: str
    limit: int | None
    seed: int
    convention: str
    targets: list[str]
    rows: list[str]
    value: dict[tuple[str, str], float]                   # (row, target) -> dev score
    metric: dict[str, str] = field(default_factory=dict)  # target -> headline metric
    n: dict[str, int] = field(default_factory=dict)       # target -> dev examples
    evaluated: int = 0                                    # cells evaluated by this build (not cached)

    def column(self, target: str) -> dict[str, float]:
        return {row: self.value[(row, target)] for row in self.rows}


def build(library: str | Path, model: str | ModelRef, targets: list[str], cache: str | Path,
          split: str = "dev", limit: int | None = None, seed: int = 0, convention: str = "lm-eval",
          batch_size: int = 8) -> Atlas:
    """Evaluate (or read from `cache`) every cell of the atlas."""
    from loraocean.evaluation import evaluate
    from loraocean.library.train import WEIGHTS
    from loraocean.selection.swap import open_slot
    from loraocean.tasks import data_hash, get_task, load_split

    if not targets:
        raise ConfigError("--targets is empty; name at least one catalog task, e.g. --targets bb_snarks")
    ref = model if isinstance(model, ModelRef) else ModelRef(model)
    entries = list_candidates(library, ref.name, "", include_target=True)  # every LoRA of the model
    specs = [get_task(t) for t in targets]
    dev = {s.name: load_split(s, split, limit=limit, seed=seed) for s in specs}
    atlas = Atlas(ref.name, str(library), split, limit, seed, convention, [s.name for s in specs],
                  [BASE] + [e.task for e in entries], {})
    checksums = {BASE: f"base:{ref.name}", **{e.task: sha256_file(e.path / WEIGHTS) for e in entries}}
    cells = {(row, s.name): Path(cache) / (hash_obj([FORMAT, "atlas-cell", {
        "adapter": checksums[row], "model": ref.name, "target": s.name, "split": split, "limit": limit,
        "seed": seed, "data_hash": data_hash(dev[s.name]), "convention": convention}]) + ".json")
        for row in atlas.rows for s in specs}

    def run(row: str, run_model, tokenizer) -> None:
        for spec in specs:
            path = cells[(row, spec.name)]
            if not path.is_file():
                r = evaluate(run_model, tokenizer, spec, dev[spec.name], convention=convention,
                             batch_size=batch_size, seed=seed)
                write_json_atomic(path, {"row": row, "target": spec.name, "metric": r.metric,
                                         "value": float(r.value), "n": r.n})
                atlas.evaluated += 1

    todo = {row for (row, _), path in cells.items() if not path.is_file()}
    if todo:  # the model is loaded only when some cell is missing
        base, tokenizer = ref.loaded()
        if BASE in todo:
            run(BASE, base, tokenizer)
        slot = open_slot(base, [e.path for e in entries])
        try:
            for entry in entries:
                if entry.task in todo:
                    slot.load(entry.path)
                    run(entry.task, slot.model, tokenizer)
        finally:
            slot.close()
    for (row, target), path in cells.items():
        cell = json.loads(path.read_text(encoding="utf-8"))
        atlas.value[(row, target)] = cell["value"]
        atlas.metric[target], atlas.n[target] = cell["metric"], cell["n"]
    return atlas


def oracle(atlas: Atlas, target: str, k: int) -> Selection:
    """The oracle's ranking for `target` read off the atlas: the same candidates as every strategy
    (the target's own LoRA, those sharing its data and the contaminated ones left out), best dev
    score first."""
    from loraocean.selection.candidates import check_k, contaminated
    from loraocean.selection.oracle import rank

    pool = list_candidates(atlas.library, atlas.model, target)
    excluded, _ = contaminated(pool, target)
    pool = [e for e in pool if e.task not in excluded]
    check_k(k, pool, target, include_target=False, excluded=excluded)
    scored = [(atlas.value[(e.task, target)], atlas.metric[target], atlas.n[target], e) for e in pool]
    return Selection(strategy="oracle", target=target, model=atlas.model, k=k, seed=atlas.seed,
                     shots=0, data_hash="", ranking=rank(scored, target, atlas.split),
                     higher_is_better=True, uses_target_labels=True,
                     options={"split": atlas.split, "limit": atlas.limit, "from": "atlas"},
                     library=atlas.library)


def compare(atlas: Atlas, model: ModelRef, k: int, strategies: list[str], shots: int = 32,
            seed: int = 0, **options) -> dict[str, list[dict]]:
    """target -> one `against_oracle` row per strategy (the oracle from the atlas)."""
    from loraocean.selection.oracle import against_oracle
    from loraocean.selection.run import select_many

    names = [s for s in strategies if s != "oracle"]
    out = {}
    for target in atlas.targets:
        best = oracle(atlas, target, k)
        chosen = select_many(target, atlas.library, model, k, names, shots=shots, seed=seed, **options) \
            if names else {}
        out[target] = [against_oracle(sel, best) for sel in chosen.values()]
    return out


def to_csv(atlas: Atlas) -> str:
    """One row per LoRA (BASE first), one column per target, then the row `n` (dev examples)."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["lora", *atlas.targets])
    for row in atlas.rows:
        w.writerow([row, *(repr(atlas.value[(row, t)]) for t in atlas.targets)])
    w.writerow(["n", *(atlas.n[t] for t in atlas.targets)])
    return buf.getvalue()


def write(atlas: Atlas, out: str | Path, k: int | None = None, scored: dict | None = None) -> dict[str, Path]:
    """atlas.csv and atlas.json (matrix, metric and n per target, the oracle's top k and every
    strategy's scores against it) under `out`, written atomically."""
    out = Path(out)
    doc = {"model": atlas.model, "library": atlas.library, "split": atlas.split, "limit": atlas.limit,
           "seed": atlas.seed, "convention": atlas.convention, "targets": atlas.targets,
           "rows": atlas.rows, "matrix": {r: {t: atlas.value[(r, t)] for t in atlas.targets} for r in atlas.rows},
           "metric": atlas.metric, "n": atlas.n}
    if k is not None:
        doc["k"] = k
        doc["oracle"] = {t: oracle(atlas, t, k).chosen for t in atlas.targets}
    if scored is not None:
        doc["against_oracle"] = scored
    return {"csv": write_text_atomic(out / "atlas.csv", to_csv(atlas)),
            "json": write_json_atomic(out / "atlas.json", doc)}
