"""Running strategies for one target: candidates from the library, K target examples, the base
model loaded at most once, and a `Selection` per strategy."""

from __future__ import annotations

from pathlib import Path

from loraocean.selection.base import ModelRef, Selection, all_strategies, get_strategy, ordered
from loraocean.selection.candidates import candidates as list_candidates
from loraocean.selection.candidates import check_k, contaminated


def every_strategy() -> list[str]:
    """What `--strategy all` runs: every registered strategy (installed packages' too) in its
    declared order, so that one reusing another's ranking comes after it."""
    return ordered()


def select(target: str, library: str | Path, model: str | ModelRef, k: int = 4, strategy: str = "ppl",
           shots: int = 32, seed: int = 0, include_target: bool = False, decontaminate: bool = True,
           **options) -> Selection:
    """One strategy's ranking of the library LoRAs of `model` for `target`; the first k are chosen.

    options: given to every strategy whose constructor takes them (e.g. map_file, base, pool,
    dev_limit, batch_size; docs/selection.md says which takes which). `decontaminate`: leave out the LoRAs whose training split shares
    13-grams with the target's test split (`candidates.contaminated`; recorded in `Selection.excluded`).
    """
    return select_many(target, library, model, k, [strategy], shots, seed, include_target, decontaminate,
                       **options)[strategy]


def select_many(target: str, library: str | Path, model: str | ModelRef, k: int, strategies: list[str],
                shots: int = 32, seed: int = 0, include_target: bool = False, decontaminate: bool = True,
                **options) -> dict[str, Selection]:
    """Several strategies on the same candidates and target examples (`all` expands to every one)."""
    from loraocean.errors import ConfigError
    from loraocean.tasks import data_hash, get_task, load_split

    if list(strategies) == ["all"]:
        strategies = every_strategy()
    selectors = {name: get_strategy(name, seed=seed, shots=shots, **options) for name in strategies}
    spec = get_task(target)
    if shots < 1:
        raise ConfigError(f"--shots must be at least 1 (got {shots})")
    ref = model if isinstance(model, ModelRef) else ModelRef(model)
    pool = list_candidates(library, ref.name, spec.name, include_target)
    excluded, unchecked = contaminated(pool, target) if decontaminate else ({}, [])
    pool = [e for e in pool if e.task not in excluded]
    check_k(k, pool, spec.name, include_target, excluded)
    known = all_strategies()
    used = set(selectors) | {s.reuses for s in selectors.values() if getattr(s, "reuses", None)}
    wants_examples = any("examples" in getattr(known.get(name), "needs", ()) for name in used)
    examples = load_split(spec, "train", limit=shots, seed=seed) if wants_examples else []
    out: dict[str, Selection] = {}
    for name in ordered(selectors):  # a strategy reusing another's ranking runs after it
        selector = selectors[name]
        reuses = getattr(selector, "reuses", None)
        if reuses in out and getattr(selector, "base_ranking", None) is None:
            selector.base_ranking = out[reuses].ranking
        ranking = selector.select(spec.name, pool, ref, k, examples)
        recorded = {key: str(v) if isinstance(v, Path) else v for key, v in options.items()
                    if v is not None and key in _option_names(selector)}
        out[name] = Selection(
            strategy=name, target=spec.name, model=ref.name, k=k, seed=seed, shots=len(examples),
            data_hash=data_hash(examples) if examples else "", ranking=ranking,
            higher_is_better=selector.higher_is_better, uses_target_labels=selector.uses_target_labels,
            options={**recorded, "include_target": include_target, "decontaminate": decontaminate},
            library=str(library), excluded=excluded, unchecked=unchecked)
    return {name: out[name] for name in selectors}  # in the order asked for


def _option_names(selector) -> set[str]:
    import inspect

    return set(inspect.signature(type(selector).__init__).parameters) - {"self", "base_ranking"}


def overlap(selections: dict[str, Selection]) -> dict[tuple[str, str], int]:
    """For each pair of strategies, how many chosen experts they share."""
    names = list(selections)
    return {(a, b): len(set(selections[a].chosen) & set(selections[b].chosen))
            for i, a in enumerate(names) for b in names[i + 1:]}
