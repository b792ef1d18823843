"""`oracle`: the k LoRAs that score best ALONE on the target's dev split.

It uses the target's labels (dev split), so it is an upper bound for analyses, never a fair
selection method; selections made with it are marked `uses_target_labels`.
"""

from __future__ import annotations

from loraocean.selection.base import Choice, ModelRef, strategy
from loraocean.selection.swap import open_slot


@strategy("oracle", needs=("oracle", "library"), order=70)
class Oracle:
    DEV_LIMIT = 100  # dev examples per candidate by default

    @staticmethod
    def estimate_seconds(scoring: float, shots: int) -> float:
        return scoring * Oracle.DEV_LIMIT  # every candidate alone on the dev examples

    higher_is_better = True

    def __init__(self, dev_limit: int = DEV_LIMIT, seed: int = 0, batch_size: int = 8):
        self.dev_limit = dev_limit
        self.seed = seed
        self.batch_size = batch_size

    def select(self, target_task: str, candidates: list, model: ModelRef, k: int,
               examples: list) -> list[Choice]:
        from loraocean.evaluation import evaluate
        from loraocean.tasks import get_task, load_split

        spec = get_task(target_task)
        dev = load_split(spec, "dev", limit=self.dev_limit, seed=self.seed)
        base, tokenizer = model.loaded()
        slot = open_slot(base, [e.path for e in candidates])
        scored = []
        try:
            for entry in candidates:
                slot.load(entry.path)
                result = evaluate(slot.model, tokenizer, spec, dev, convention="lm-eval",
                                  batch_size=self.batch_size)
                scored.append((float(result.value), result.metric, result.n, entry))
        finally:
            slot.close()
        return rank(scored, target_task)


def rank(scored: list[tuple], target_task: str, split: str = "dev") -> list[Choice]:
    """`(score, metric, n, entry)` per candidate -> Choices, best score first (ties by task name)."""
    scored = sorted(scored, key=lambda s: (-s[0], s[3].task))
    return [Choice(e.task, round(v, 6),
                   f"USES TARGET LABELS: {split} {metric} {v:.3f} alone on {n} {target_task} {split} examples",
                   str(e.path)) for v, metric, n, e in scored]


def against_oracle(sel, oracle) -> dict:
    """How a strategy's `Selection` compares with the oracle's for the same target and candidates.

    regret: mean dev score of the oracle's top k minus that of the strategy's chosen k (each LoRA's
    dev score alone, as the oracle measured it; a set is scored by its members' mean);
    precision_at_k: share of the strategy's chosen k that are among the oracle's top k;
    spearman, kendall: rank correlation between the strategy's ranking and the dev scores over all
    candidates (scipy.stats; None when either side is constant)."""
    from scipy.stats import kendalltau, spearmanr

    dev = {c.task: c.score for c in oracle.ranking}
    k = sel.k
    best = sorted(dev.values(), reverse=True)[:k]
    chosen = sel.chosen
    regret = sum(best) / k - sum(dev[t] for t in chosen) / k
    tasks = [c.task for c in sel.ranking]
    position = [-i for i in range(len(tasks))]  # best first -> highest value
    scores = [dev[t] for t in tasks]
    constant = len(set(scores)) < 2
    rho = None if constant else float(spearmanr(position, scores).statistic)
    tau = None if constant else float(kendalltau(position, scores).statistic)
    return {"strategy": sel.strategy, "chosen": chosen, "regret": regret,
            "precision_at_k": len(set(chosen) & set(oracle.chosen)) / k, "spearman": rho, "kendall": tau}
