"""The job graph of a study: build LoRAs -> select experts -> fit MoE -> evaluate.

Each job is keyed by the hash of its inputs, and a job's inputs include the keys of the jobs it
depends on (a Merkle chain), so a changed config changes exactly the keys downstream of the change
and everything else is found in the cache. Jobs come out in an order where every job follows its
dependencies.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from loraocean.artifacts import hash_obj
from loraocean.errors import ConfigError
from loraocean.study.config import StudyConfig, candidates_for

KINDS = ("lora", "select", "fit", "eval")
# `loraocean run` (and `run_study`) refuse a study of more jobs unless told a higher limit
# (`--max-jobs`): a typo in a grid (500 seeds) should cost a line, not hours or gigabytes.
MAX_JOBS = 20_000  # loralib.yaml, the largest shipped study, has 17,680
# Part of every key: bump it when what a stage writes changes, so old cached results are not reused.
# 2: library cards and MoE checkpoint cards carry an integrity record (card_version 2)
# 3: the fit seed seeds each method's initialisation; lr sweep on dev; Rocket's dropout 0.05 and
#    per-tensor diversity, reasoning perplexity with EOS; LoRAMoE without balance loss on one task
#    type; contaminated candidates left out of selection; inference cost in eval results
FORMAT = 3


@dataclass
class Job:
    kind: str                    # lora | select | fit | eval
    key: str                     # hash of inputs (incl. dependency keys)
    inputs: dict
    deps: list[str] = field(default_factory=list)
    # Results-table identities this job answers (eval jobs only; a reference shared by seeds
    # answers one row per seed).
    rows: list[dict] = field(default_factory=list)

    @property
    def name(self) -> str:
        return f"{self.kind}-{self.key}"

    @property
    def label(self) -> str:
        i = self.inputs
        if self.kind == "lora":
            return f"lora {i['task']} ({i['model']})"
        if self.kind == "select":
            return f"select {i['strategy']} k={i['k']} for {i['target']} seed {i['seed']}"
        if self.kind == "fit":
            return f"fit {i['method']} on {i['target']} ({i['selection']}, seed {i['seed']})"
        return f"eval {i['method']}/{i.get('selection') or '-'} on {i['target']} ({i['model']})"


def _add(jobs: dict[str, Job], job: Job) -> Job:
    """Add (or merge the rows of) a job; identical inputs give one job."""
    if job.key in jobs:
        jobs[job.key].rows += [r for r in job.rows if r not in jobs[job.key].rows]
        return jobs[job.key]
    jobs[job.key] = job
    return job


def library_id(cfg: StudyConfig, model: str) -> dict:
    """What identifies the LoRAs of one model in this study (preset, caps, seed)."""
    return {"model": model, "preset": cfg.library.preset, "seed": cfg.library.seed,
            "max_train": cfg.caps.max_train, "max_steps": cfg.caps.max_train_steps}


def lr_grid_of(cfg: StudyConfig) -> list[float]:
    """The learning rates every trained method of the study chooses from (its fit preset's)."""
    from loraocean.errors import UnknownNameError
    from loraocean.moe.presets import get_preset

    try:
        return list(get_preset(cfg.library.preset).lr_grid)
    except UnknownNameError:  # validated elsewhere; a stand-in study may name no real preset
        return []


def expand(cfg: StudyConfig) -> list[Job]:
    jobs: dict[str, Job] = {}
    lr_grid = lr_grid_of(cfg)
    for model in cfg.models:
        lib = library_id(cfg, model)
        loras: dict[str, Job] = {}
        for task in cfg.tasks.library:
            inputs = {**lib, "task": task}
            loras[task] = _add(jobs, Job("lora", hash_obj([FORMAT, "lora", inputs]), inputs))
        for target in cfg.tasks.targets:
            eval_common = {"model": model, "target": target, "convention": cfg.evaluation.convention,
                           "split": cfg.evaluation.split, "max_eval": cfg.caps.max_eval}
            if cfg.evaluation.harness:  # only then: keys of studies without a harness stay as they were
                eval_common["harness"] = {"name": cfg.evaluation.harness,
                                          "tasks": cfg.evaluation.harness_tasks,
                                          "include_path": cfg.evaluation.include_path}
            for ref in cfg.references:
                deps = [loras[target].key] if ref.method.target_expert else []
                inputs = {**eval_common, "method": ref.name, "selection": None, "deps": deps}
                rows = [{"model": model, "target": target, "method": ref.name, "selection": "none",
                         "seed": seed} for seed in cfg.seeds]
                _add(jobs, Job("eval", hash_obj([FORMAT, "eval", inputs]), inputs, deps, rows))
            if not cfg.moe_methods:
                continue
            candidates = candidates_for(cfg, target)
            cand_keys = [loras[t].key for t in candidates]
            ranked, fitted = _ranked(cfg)
            for seed in cfg.seeds:
                for strategy in ranked:
                    sel_inputs = {"model": model, "target": target, "strategy": strategy,
                                  "k": cfg.selection.k, "shots": cfg.selection.shots, "seed": seed,
                                  "candidates": candidates, "decontaminate": cfg.selection.decontaminate,
                                  "deps": cand_keys}
                    sel = _add(jobs, Job("select", hash_obj([FORMAT, "select", sel_inputs]), sel_inputs, cand_keys))
                    for method in cfg.moe_methods:
                        if strategy not in fitted[method.name]:
                            continue  # compared in the report only, or not one of this method's
                        fit_inputs = {"model": model, "target": target, "method": method.name,
                                      "config": method.config, "selection": strategy, "seed": seed,
                                      "max_fit": cfg.caps.max_fit, "max_steps": cfg.caps.max_fit_steps,
                                      "preset": cfg.library.preset, "deps": [sel.key] + cand_keys}
                        if method.train:  # only then: keys of fits at the preset's budget stay as they were
                            fit_inputs["train"] = method.train
                        if lr_grid and method.method.trains and "lr" not in method.train:
                            fit_inputs["lrs"] = lr_grid  # equal tuning: the preset's grid, chosen on dev
                        fit = _add(jobs, Job("fit", hash_obj([FORMAT, "fit", fit_inputs]), fit_inputs,
                                             [sel.key] + cand_keys))
                        ev_inputs = {**eval_common, "method": method.name, "selection": strategy,
                                     "seed": seed, "deps": [fit.key]}
                        row = {"model": model, "target": target, "method": method.name,
                               "selection": strategy, "seed": seed}
                        _add(jobs, Job("eval", hash_obj([FORMAT, "eval", ev_inputs]), ev_inputs, [fit.key], [row]))
    order = {kind: i for i, kind in enumerate(KINDS)}
    return sorted(jobs.values(), key=lambda j: order[j.kind])  # stable: kinds in dependency order


def _ranked(cfg: StudyConfig) -> tuple[list[str], dict[str, list[str]]]:
    fitted = {m.name: cfg.strategies_of(m) for m in cfg.moe_methods}
    ranked = list(dict.fromkeys(cfg.selection.strategies + cfg.selection.compare
                                + [s for names in fitted.values() for s in names]))
    return ranked, fitted


def size(cfg: StudyConfig) -> tuple[int, float]:
    """(number of jobs, estimated seconds) of `expand(cfg)`, counted without building a job: the
    same loops as `expand` without the seeds (every seed adds the same jobs), no hashing, no
    inputs kept, so a grid of millions of jobs is measured at once."""
    n, seconds = 0, 0.0
    seeds = len(cfg.seeds)
    ranked, fitted = _ranked(cfg)
    lr_grid = lr_grid_of(cfg)
    for model in cfg.models:
        lib = library_id(cfg, model)
        n += len(cfg.tasks.library)
        seconds += len(cfg.tasks.library) * estimate_seconds(Job("lora", "", {**lib, "task": ""}), cfg)
        for target in cfg.tasks.targets:
            common = {"model": model, "target": target, "max_eval": cfg.caps.max_eval}
            for ref in cfg.references:
                n += 1
                seconds += estimate_seconds(Job("eval", "", {**common, "method": ref.name, "selection": None}), cfg)
            if not cfg.moe_methods:
                continue
            candidates = candidates_for(cfg, target)
            for strategy in ranked:
                sel = {"model": model, "strategy": strategy, "k": cfg.selection.k,
                       "shots": cfg.selection.shots, "candidates": candidates}
                n += seeds
                seconds += seeds * estimate_seconds(Job("select", "", sel), cfg)
                for method in cfg.moe_methods:
                    if strategy not in fitted[method.name]:
                        continue
                    fit = {"model": model, "method": method.name, "max_fit": cfg.caps.max_fit,
                           "max_steps": cfg.caps.max_fit_steps}
                    if lr_grid and method.method.trains and "lr" not in method.train:
                        fit["lrs"] = lr_grid  # as expand: the sweep multiplies the fit's cost
                    ev = {**common, "method": method.name, "selection": strategy}
                    n += 2 * seeds
                    seconds += seeds * (estimate_seconds(Job("fit", "", fit), cfg)
                                        + estimate_seconds(Job("eval", "", ev), cfg))
    return n, seconds


def duration(seconds: float) -> str:
    """`12 s`, `3.5 min` or `109.2 h`."""
    if seconds >= 3600:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 60:.1f} min" if seconds >= 60 else f"{seconds:.0f} s"


def check_size(cfg: StudyConfig, max_jobs: int = MAX_JOBS) -> tuple[int, float]:
    """`size(cfg)`, or a ConfigError when the study has more than `max_jobs` jobs (saying how many
    and the estimate, and how to allow them)."""
    n, seconds = size(cfg)
    if n > max_jobs:
        raise ConfigError(f"study {cfg.name} expands to {n:,} jobs (estimated {duration(seconds)} on 2 CPU "
                          f"cores), more than the limit of {max_jobs:,}; shrink its grid (models, tasks, "
                          f"methods, strategies, seeds) or allow it with --max-jobs {n}")
    return n, seconds


# --- cost estimate (seconds on 2 CPU cores) -----------------------------------------------------------

# From the calibration on 2 CPU cores: SmolLM2-135M trains at about 150 tokens/s; a forward
# pass (scoring) runs about 3x faster. Tiny test models are about 50x faster. Other models scale
# with their size relative to 135M (a rough guide: a 1B model is ~8x slower).
TRAIN_TOKENS_PER_S = 150.0
TOKENS_PER_EXAMPLE = 100       # prompt + answer of a typical BIG-bench choice task, chat template
ROUTING_EXAMPLES = 16          # evaluation examples an eval job computes routing statistics on


def selection_seconds(strategy: str, scoring: float, shots: int) -> float:
    """A selection strategy's own estimate (`selection.base.estimate_seconds`)."""
    from loraocean.selection import base

    return base.estimate_seconds(strategy, scoring, shots)


def _method_cost(name: str, kind: str) -> float:
    """A method's `train_cost` / `eval_cost` (1.0 for a name the registry does not know)."""
    from loraocean.errors import UnknownNameError
    from loraocean.moe.registry import get_method

    try:
        return getattr(get_method(name), kind)
    except UnknownNameError:
        return 1.0


def _speed(model: str) -> float:
    return 50.0 if model.startswith("tiny-") else 1.0


def _train_tokens(examples: int | None, steps: int | None, batch: int) -> float:
    n = examples or 1000
    if steps is not None:
        n = min(n, steps * batch)
    return n * TOKENS_PER_EXAMPLE


def estimate_seconds(job: Job, cfg: StudyConfig) -> float:
    i = job.inputs
    rate = TRAIN_TOKENS_PER_S * _speed(i["model"])
    if job.kind == "lora":
        return _train_tokens(i["max_train"], i["max_steps"], 8) / rate
    if job.kind == "select":
        scoring = len(i["candidates"]) * 1.5 * TOKENS_PER_EXAMPLE / (3 * rate)  # per example, all LoRAs
        return selection_seconds(i["strategy"], scoring, i["shots"])
    if job.kind == "fit":  # each learning rate of the sweep trains once, then scores the dev examples
        runs = len(i.get("lrs") or [0])
        dev = (runs * 100 * 1.5 * TOKENS_PER_EXAMPLE / (3 * rate)) if i.get("lrs") else 0.0
        return runs * _train_tokens(i["max_fit"], i["max_steps"], 8) * _method_cost(i["method"], "train_cost") / rate + dev
    n = (i["max_eval"] or 500) + (ROUTING_EXAMPLES if i["selection"] else 0)
    return n * 1.5 * TOKENS_PER_EXAMPLE * _method_cost(i["method"], "eval_cost") / (3 * rate)
