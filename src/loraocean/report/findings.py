"""The study's claims, tested where the paper makes them: did LoRAMoE beat Rocket and X-LoRA, did
Manual selection beat PPL and Random (and, beyond the paper, did each trained method beat the
training-free average of the same experts).

A claim compares two arms (two methods on the same selections, or two selections under the same
methods) over the study's cells: one cell per (model, target, matched level), the matched level
being the selection strategy (a method claim) or the trained method (a selection claim). Every
(model, target) weighs the same, whatever its number of test examples, and the levels share their
(model, target)'s weight equally. In each cell each arm has its fits with different seeds, scored
on the same test examples: `report.stats.claim_test` treats seeds and examples as units, so two
arms that differ only by seed come out "no clear difference" at the stated rate.

The paper's claims (its method comparisons are each method's `compared_with`, plus Manual vs PPL
and Manual vs Random), on every convention of the run, are ONE Holm family; the comparisons with
the training-free baseline are a second family. A claim is a win only when its Holm-adjusted
p < 0.05 with the seed variance known (at least two seeds on one side); a claim with a flagged
cell (`report.flags`: near the base model, at the majority-label rate, one answer) on either side
reads "cannot tell", whatever its p-value. Per-target differences are description, not tests.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from loraocean.report.flags import flags as find_flags
from loraocean.report.stats import SEED_SD, DISCORDANCE, Cell, ClaimTest, Design, claim_test, holm, holm_level
from loraocean.report.tables import Table

ALPHA = 0.05
POWER = 0.8
SELECTION_QUESTIONS = [("selection", "manual", "ppl"), ("selection", "manual", "random")]
# The paper's reported effect (points, low-high) of each claim; LoRAMoE's margin over X-LoRA is
# said to be larger than over Rocket, so the same range is its smallest.
PAPER = {("method", "loramoe", "rocket"): (2.0, 5.9), ("method", "loramoe", "xlora"): (2.0, 5.9),
         ("selection", "manual", "ppl"): (0.8, 1.4), ("selection", "manual", "random"): (1.0, 2.2)}
PAPER_NOTE = {("method", "loramoe", "xlora"): " at least (X-LoRA last, below Rocket)"}


def questions(methods, order: list[str] | None = None) -> list[tuple[str, str, str]]:
    """The paper's four questions (its method comparisons are each method's `compared_with`), plus
    each trained method in `methods` vs the training-free baseline (`Method.baseline`: the same
    experts averaged, what a trained method must beat to be worth its training) when the run
    evaluated it; trained methods in `order` (the study's), then as given."""
    return paper_questions() + baseline_questions(methods, order)


def paper_questions() -> list[tuple[str, str, str]]:
    from loraocean.moe.registry import all_methods

    paper = [("method", m.name, other) for m in all_methods().values() for other in m.compared_with]
    return paper + SELECTION_QUESTIONS


def baseline_questions(methods, order: list[str] | None = None) -> list[tuple[str, str, str]]:
    from loraocean.moe.registry import all_methods

    registered = all_methods()
    present = [m for m in dict.fromkeys(list(order or []) + list(methods)) if m in set(methods)]
    baselines = [m for m in present if m in registered and registered[m].baseline]
    trained = [m for m in present if m in registered and registered[m].trains]
    return [("method", m, b) for b in baselines for m in trained]


def trained_methods(methods) -> list[str]:
    """The methods a selection claim averages over: those that train (the paper's LoRA-MoEs)."""
    from loraocean.moe.registry import all_methods

    registered = all_methods()
    return [m for m in methods if m in registered and registered[m].trains]


@dataclass
class TargetRow:
    """One (model, target) of a claim, as description: its difference and seed spreads."""
    model: str
    target: str
    diff: float
    ci_low: float
    ci_high: float
    seeds_a: int
    seeds_b: int
    sd_a: float | None   # sd over seeds of A's accuracy (mean over the matched levels)
    sd_b: float | None


@dataclass
class Claim:
    a: str
    b: str
    factor: str          # "method" or "selection"
    convention: str
    test: ClaimTest | None
    acc_a: float = float("nan")
    acc_b: float = float("nan")
    cells: int = 0       # matched (model, target, level) cells
    targets: int = 0     # (model, target) pairs
    levels: list[str] = field(default_factory=list)   # the matched levels (selections or methods)
    seeds: tuple[int, int] = (0, 0)                    # fewest / most seeds of an arm in a cell
    examples: int = 0    # test examples per target (harmonic mean)
    flagged: list[str] = field(default_factory=list)   # flagged evaluations on either side
    per_target: list[TargetRow] = field(default_factory=list)
    family: int = 0      # claims Holm-adjusted together with this one (0: not in a family)
    family_name: str = "claims"
    mdd: float | None = None   # detectable at 80% power at the family's first Holm level

    @property
    def paper(self) -> tuple[float, float] | None:
        return PAPER.get((self.factor, self.a, self.b))

    def verdict(self) -> str:
        """'win', 'loss', 'no clear difference' or 'cannot tell'."""
        t = self.test
        if t is None or not t.seeds_known or self.flagged:
            return "cannot tell"
        if t.significant:
            return "win" if t.diff > 0 else "loss"
        return "no clear difference"

    def record(self) -> dict:
        """The claim as plain data (results.json)."""
        t = self.test
        numbers = {} if t is None else {
            "acc_a": self.acc_a, "acc_b": self.acc_b, "diff": t.diff, "ci_low": t.ci_low,
            "ci_high": t.ci_high, "se": t.se, "df": t.df, "p_value": t.p_value, "p_holm": t.p_adjusted,
            "seed_var": t.seed_var, "example_var": t.example_var, "seeds_known": t.seeds_known,
            "mdd_80": self.mdd}
        return {"a": self.a, "b": self.b, "factor": self.factor, "convention": self.convention,
                "verdict": self.verdict(), "cells": self.cells, "targets": self.targets,
                "levels": self.levels, "seeds": list(self.seeds), "examples_per_target": self.examples,
                "holm_family": self.family, "family": self.family_name, "flagged": self.flagged,
                "paper_points": list(self.paper) if self.paper else None,
                "per_target": [vars(r) for r in self.per_target], **numbers}

    def sentence(self) -> str:
        head = f"**{self.a} vs {self.b}** ({self.factor}s, {self.convention})"
        if self.test is None:
            return f"{head}: not measured on this run (no cell holds both on the same examples)."
        t = self.test
        kind = "selection" if self.factor == "method" else "method"
        over = (f"{self.targets} (model, target) pair{'s' if self.targets != 1 else ''} x {len(self.levels)} "
                f"{kind}{'s' if len(self.levels) != 1 else ''} ({', '.join(self.levels)}), "
                f"{self.seeds[0]}{'-' + str(self.seeds[1]) if self.seeds[1] != self.seeds[0] else ''} "
                f"seed{'s' if self.seeds[1] != 1 else ''} per fit, {self.examples} test examples per target")
        adjusted = "" if t.p_adjusted is None else f", Holm over the {self.family} {self.family_name} p = {t.p_adjusted:.3g}"
        df = "inf" if not np.isfinite(t.df) else f"{t.df:.1f}"
        nums = (f"{self.a} {100 * self.acc_a:.1f}% vs {self.b} {100 * self.acc_b:.1f}% ({over}): "
                f"{_pp(t.diff)} points (95% CI {_pp(t.ci_low)} to {_pp(t.ci_high)}; t test over seeds "
                f"and examples, df {df}, p = {t.p_value:.3g}{adjusted})")
        paper = "" if self.paper is None else (
            f" The paper: {self.a} {self.paper[0]:.1f}-{self.paper[1]:.1f} points above {self.b}"
            f"{PAPER_NOTE.get((self.factor, self.a, self.b), '')}.")
        size = " The arms never disagree: nothing to size a detectable difference with." if t.se == 0 else \
            "" if self.mdd is None else (
            f" At 80% power this design detects {100 * self.mdd:.1f} points at the level its first "
            f"Holm step is judged at ({holm_level(ALPHA, self.family):.3g})." if np.isfinite(self.mdd)
            else " With its seeds it cannot detect any difference.")
        verdict = self.verdict()
        if verdict == "cannot tell":
            why = ("one seed per fit: nothing measures how much a second seed would change it"
                   if not t.seeds_known else
                   f"{len(self.flagged)} of its evaluations show no learning ({'; '.join(self.flagged[:4])}"
                   f"{'; ...' if len(self.flagged) > 4 else ''})")
            return f"{head}: **cannot tell** ({why}): {nums}.{paper}{size}"
        if verdict in ("win", "loss"):
            return f"{head}: **{self.a} {'beat' if verdict == 'win' else 'lost to'} {self.b}**: {nums}.{paper}{size}"
        return f"{head}: **no clear difference**: {nums}.{paper}{size}"


def _pp(x: float) -> str:
    return f"{100 * x:+.1f}"


def _answers(preds) -> dict[tuple[str, str], object]:
    """(eval_key, convention) -> per-example correctness (a Series indexed by example id)."""
    if preds.empty:
        return {}
    return {k: g.drop_duplicates("example_id").set_index("example_id")["correct"]
            for k, g in preds.groupby(["eval_key", "convention"])}


def matched(df, factor: str, a: str, b: str) -> dict[tuple[str, str, str], tuple[list[str], list[str]]]:
    """(model, target, level) -> (eval keys of a, eval keys of b): the cells where both arms ran.
    The level is the selection (a method claim) or the trained method (a selection claim)."""
    level = "selection" if factor == "method" else "method"
    sub = df if factor == "method" else df[df["method"].isin(trained_methods(df["method"].unique()))]
    out = {}
    for (model, target, lev), g in sub.groupby(["model", "target", level], sort=False):
        ka = list(dict.fromkeys(g[g[factor] == a]["eval_key"]))
        kb = list(dict.fromkeys(g[g[factor] == b]["eval_key"]))
        if ka and kb:
            out[(model, target, lev)] = (ka, kb)
    return out


def _label(row) -> str:
    sel = "" if row["selection"] == "none" else f"/{row['selection']}"
    return f"{row['method']}{sel} on {row['target']} seed {row['seed']}"


def build_claim(df, answers: dict, flagged: dict, factor: str, a: str, b: str, convention: str) -> Claim:
    """One claim on one convention (see the module docstring)."""
    df = df[df["convention"] == convention]
    cells = {}
    for key, (ka, kb) in matched(df, factor, a, b).items():
        ka = [k for k in ka if (k, convention) in answers]
        kb = [k for k in kb if (k, convention) in answers]
        if ka and kb:
            cells[key] = (ka, kb)
    if not cells:
        return Claim(a, b, factor, convention, None)
    common: dict[str, object] = {}  # target -> the examples every evaluation of it in this claim has
    for (_, target, _), (ka, kb) in cells.items():
        for k in ka + kb:
            idx = answers[(k, convention)].index
            common[target] = idx if target not in common else common[target].intersection(idx)
    cells = {key: keys for key, keys in cells.items() if len(common[key[1]])}  # no shared example: nothing to pair
    if not cells:
        return Claim(a, b, factor, convention, None)
    pairs: dict[tuple[str, str], list] = {}
    for (model, target, level), keys in cells.items():
        pairs.setdefault((model, target), []).append((level, keys))

    def matrix(keys, target):
        return np.array([answers[(k, convention)][common[target]].to_numpy(dtype=float) for k in keys])

    made, per_target = [], []
    for (model, target), levels in pairs.items():
        mine = [Cell(target, 1 / len(levels), matrix(ka, target), matrix(kb, target)) for _, (ka, kb) in levels]
        made += [Cell(c.group, c.weight / len(pairs), c.a, c.b) for c in mine]
        if len(common[target]) > 1:
            t = claim_test(mine)
            sd = [np.mean([np.std(c.a.mean(-1), ddof=1) for c in mine]) if mine[0].a.shape[0] > 1 else None,
                  np.mean([np.std(c.b.mean(-1), ddof=1) for c in mine]) if mine[0].b.shape[0] > 1 else None]
            per_target.append(TargetRow(model, target, t.diff, t.ci_low, t.ci_high, mine[0].a.shape[0],
                                        mine[0].b.shape[0], *[None if s is None else float(s) for s in sd]))
    test = claim_test(made)
    rows = df.set_index("eval_key")
    keys = [k for ka, kb in cells.values() for k in ka + kb]
    marked = [f"{_label(rows.loc[[k]].iloc[0])}: {flagged[(k, convention)]}" for k in dict.fromkeys(keys)
              if (k, convention) in flagged]
    seeds = [c.a.shape[0] for c in made] + [c.b.shape[0] for c in made]
    ns = [len(common[t]) for _, t in pairs]
    return Claim(a, b, factor, convention, test,
                 acc_a=float(sum(c.weight * c.a.mean() for c in made)),
                 acc_b=float(sum(c.weight * c.b.mean() for c in made)),
                 cells=len(made), targets=len(pairs),
                 levels=list(dict.fromkeys(level for level_keys in pairs.values() for level, _ in level_keys)),
                 seeds=(min(seeds), max(seeds)), examples=int(round(len(ns) / sum(1 / n for n in ns))),
                 flagged=marked, per_target=per_target)


def mdd_at(test: ClaimTest, alpha: float, power: float = POWER) -> float:
    """The true difference the claim's measured spread detects with `power` at level `alpha`."""
    from scipy import stats as sps

    return float((sps.t.ppf(1 - alpha / 2, test.df) + sps.t.ppf(power, test.df)) * test.se)


def claims(df, preds, order: list[str] | None = None) -> list[Claim]:
    """Every claim on every convention of the run (harness conventions `lm-eval:<task>` are other
    tasks, not the study's targets); the paper's claims are one Holm family, the baseline
    comparisons another."""
    conventions = [c for c in dict.fromkeys(df["convention"]) if ":" not in c]
    answers = _answers(preds)
    flagged = find_flags(df, preds)
    out = []
    for name, qs in (("claims", paper_questions()),
                     ("baseline comparisons", baseline_questions(df["method"].unique(), order))):
        family = [build_claim(df, answers, flagged, f, a, b, conv) for conv in conventions for f, a, b in qs]
        judged = [c for c in family if c.test is not None and c.test.seeds_known]
        for c, p in zip(judged, holm([c.test.p_value for c in judged])):
            c.test.p_adjusted, c.family, c.family_name = p, len(judged), name
            c.mdd = mdd_at(c.test, holm_level(ALPHA, len(judged))) if c.test.se > 0 else None
        out += family
    return out


def claim_blocks(df, preds, order: list[str] | None = None, record: dict | None = None) -> list[tuple]:
    """The report's claims section: one line per claim, how they are tested, and the per-target
    differences as description. `record` (when given) receives the claims as data."""
    found = claims(df, preds, order)
    if record is not None:
        record["claims"] = [c.record() for c in found]
    paper = [c for c in found if c.family_name == "claims" or c.test is None and c.paper]
    rest = [c for c in found if c not in paper]
    families = sorted({c.family for c in paper if c.family})
    blocks: list[tuple] = [("h2", "Claims")]
    blocks += [("li", c.sentence()) for c in paper]
    blocks.append(("p", "Each claim compares two arms over the study's cells (model x target x the "
                        "matched selection or method), every model x target weighing the same. The unit "
                        "is both the training seed and the test example: a t test on the weighted "
                        "difference whose variance adds the seed-to-seed variance of each arm (pooled over "
                        "the arms, seeds - 1 degrees of freedom each) and the per-example variance of the "
                        "method x example differences (report.stats.claim_test; simulated: two arms that "
                        "differ only by seed come out different at most 6% of the time). The claims are "
                        + (f"one Holm family ({families[0]} tests)" if families else "one Holm family")
                        + "; a win needs Holm-adjusted p < 0.05. A claim with an evaluation that shows no "
                        "learning (near the base model's answers, at the majority-label rate, or one "
                        "answer) reads 'cannot tell'. Its detectable difference is at the level its first "
                        "Holm step is judged at: a 'no clear difference' smaller than that says nothing "
                        "about the paper's claim."))
    if rest:
        blocks.append(("h2", "Trained methods vs the training-free baseline"))
        blocks += [("li", c.sentence()) for c in rest]
    rows = [[f"{c.a} vs {c.b}", c.convention, r.model, r.target, _pp(r.diff), f"{_pp(r.ci_low)} to {_pp(r.ci_high)}",
             f"{r.seeds_a} / {r.seeds_b}", f"{_sd(r.sd_a)} / {_sd(r.sd_b)}"]
            for c in found for r in c.per_target]
    if rows:
        blocks.append(("table", Table(
            "Per-target differences (description, not tests)",
            ["claim", "convention", "model", "target", "difference (points)", "95% CI", "seeds a / b",
             "seed sd a / b (points)"], rows,
            note="Each target's own difference with its seeds-and-examples CI; the seed sd is the standard "
                 "deviation of an arm's accuracy over its seeds (mean over the matched levels).")))
    return blocks


def _sd(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.1f}"


def contamination_blocks(run_dir, study: dict) -> list[tuple]:
    """The candidates the run's selections left out because their training split shares 13-grams
    with the target's test split, and those whose data could not be checked."""
    from loraocean.study import store

    rows, unchecked = {}, set()
    for job in study["jobs"]:
        res = store.job_result(run_dir, job) if job["kind"] == "select" else None
        if not res:
            continue
        i = job["inputs"]
        for task, o in (res.get("excluded") or {}).items():
            rows[(i["model"], i["target"], task)] = [i["model"], i["target"], task,
                                                     f"{o['overlapping']} of {o['test_examples']}",
                                                     f"{100 * o['share']:.1f}"]
        unchecked |= {(i["target"], t) for t in res.get("unchecked") or []}
    decontaminated = study["config"]["selection"].get("decontaminate", True)
    if not rows and not unchecked:
        return [("p", "No test data in the experts: no candidate LoRA's training split shares a 13-gram "
                      "with its target's test split (lm-eval's decontamination rule, tasks.overlap)."
                      if decontaminated else "Candidates were not checked for test data in their training "
                      "split (selection.decontaminate: false).")]
    out = [("h2", "Candidates left out: test data in their training split")]
    if rows:
        out.append(("table", Table("Contaminated candidates (excluded from every selection of their target)",
                                   ["model", "target", "candidate", "test examples overlapping", "%"],
                                   list(rows.values()),
                                   note="A test example overlaps when one of its 13-grams (lowercased, "
                                        "punctuation removed, template n-grams ignored) occurs in the "
                                        "candidate's training split; tasks.overlap.")))
    if unchecked:
        out.append(("p", "Not checked (data not readable where the selection ran): "
                         + ", ".join(f"{t} for {target}" for target, t in sorted(unchecked)) + "."))
    return out


# --- power before compute ---------------------------------------------------------------------------

@dataclass
class Planned:
    """A claim of a study before it runs: its design, or None when the study cannot measure it."""
    question: tuple[str, str, str]
    design: Design | None
    levels: list[str]
    family: int = 1

    @property
    def level(self) -> float:
        return holm_level(ALPHA, self.family)

    @property
    def paper(self) -> tuple[float, float] | None:
        return PAPER.get(self.question)


def target_examples(cfg) -> dict[str, tuple[int, int, bool]]:
    """target -> (test examples it is scored on, examples its split holds, counted from the data
    (True) or assumed: max_eval, else 500). Only data readable here without the hub is counted: a
    dry-run downloads nothing."""
    from loraocean.errors import LoraOceanError
    from loraocean.tasks import get_task, load_split
    from loraocean.tasks.load import availability

    out = {}
    for target in cfg.tasks.targets:
        cap = cfg.caps.max_eval
        try:
            spec = get_task(target)
            if not availability(spec).startswith("yes"):
                raise LoraOceanError(f"{target}: not on disk")
            n, known = len(load_split(spec, cfg.evaluation.split)), True
        except LoraOceanError:
            n, known = cap or 500, False
        out[target] = (min(n, cap) if cap else n, n, known)
    return out


def harmonic(ns) -> int:
    """The harmonic mean of per-target example counts (what the example part of V averages)."""
    ns = list(ns)
    return max(2, round(len(ns) / sum(1 / max(n, 1) for n in ns)))


def plan_claims(cfg, examples: dict[str, int], seed_sd: float = SEED_SD,
                discordance: float = DISCORDANCE) -> list[Planned]:
    """The paper's claims as this study would test them: cells = models x targets x matched levels
    (the strategies both methods are fitted on, or the trained methods fitted on both strategies),
    test examples shared by a target's cells; the family is every measurable claim on every
    convention the study scores."""
    from loraocean.moe.registry import get_method

    fitted = {m.name: cfg.strategies_of(m) for m in cfg.moe_methods}
    trained = [m for m in fitted if get_method(m).trains]
    out = []
    for factor, a, b in paper_questions():
        if factor == "method":
            levels = [s for s in fitted.get(a, []) if s in fitted.get(b, [])]
        else:
            levels = [m for m in trained if a in fitted[m] and b in fitted[m]]
        design = Design(cells=len(cfg.models) * len(cfg.tasks.targets) * len(levels), groups=len(cfg.tasks.targets),
                        seeds=len(cfg.seeds), examples=harmonic(examples[t] for t in cfg.tasks.targets),
                        seed_sd=seed_sd, discordance=discordance) if levels else None
        out.append(Planned((factor, a, b), design, levels))
    conventions = 2 if cfg.evaluation.convention == "both" else 1
    family = conventions * sum(p.design is not None for p in out)
    for p in out:
        p.family = family
    return out


def _clearing_base(df) -> list:
    """Rows whose 95% CI lies wholly above the base model's on the same target, seed and
    convention (non-overlapping CIs: an effect the run shows without any test)."""
    from loraocean.moe.registry import base_model_name

    keys = ["model", "target", "seed", "convention"]
    name = base_model_name()
    base = df[df["method"] == name].set_index(keys)["ci_high"].to_dict()
    out = []
    for _, row in df[df["method"] != name].iterrows():
        top = base.get(tuple(row[k] for k in keys))
        if top is not None and row["ci_low"] is not None and row["ci_low"] > top:
            out.append(row)
    return out


def _cells(rows) -> list[str]:
    """Rows of `_clearing_base` as `method (selection) on target`, each once."""
    out = []
    for row in rows:
        sel = "" if row["selection"] == "none" else f" ({row['selection']})"
        out.append(f"{row['method']}{sel} on {row['target']}")
    return list(dict.fromkeys(out))


def above_base(df) -> list[str]:
    """The cells whose 95% CI lies wholly above the base model's (`_clearing_base`)."""
    return _cells(_clearing_base(df))


def can_show(df) -> str:
    """One plain line: which cells beat the base model with non-overlapping CIs and which methods
    did so nowhere, or that none did."""
    from loraocean.moe.registry import base_model_name

    rows = _clearing_base(df)
    if rows:
        cleared = {row["method"] for row in rows}
        base = base_model_name()
        missed = [m for m in dict.fromkeys(df["method"]) if m != base and m not in cleared]
        rest = (f" It shows no such effect for {', '.join(missed)}: their 95% CIs do not lie above the "
                "base model's on any target." if missed else "")
        return (f"This run shows a real effect: {', '.join(_cells(rows))} scored above the base model with "
                f"non-overlapping 95% CIs.{rest}")
    return ("This run shows no effect: no method's 95% CI lies above the base model's on any target, "
            "so its tables and findings exercise the pipeline and cannot support any claim about "
            "the methods.")
