"""`rocket`: Rocket's expert selection (Yang et al., arXiv 2408.15915), its three steps in one.

1. K-shot accuracy: every candidate LoRA answers the K target examples (the same examples `ppl`
   sees, from the train split); the `pool` best (default 2k) go on, ties broken by step 2.
2. Reasoning perplexity: exp(mean cross-entropy over the answer tokens, prompt masked) of each
   candidate on the K examples (`ppl`'s computation), lower is better; it orders the shortlist.
3. Group diversity: among the shortlist, the k-subset with the lowest sum of pairwise |cosine|
   between the LoRAs' flattened weights. As in the reference, the weights are the LoRA's own A and
   B tensors (each tensor's dot products summed over tensors, not the B @ A delta `diversity`
   uses); ties go to the subset with the better step-2 ranks.
"""

from __future__ import annotations

from loraocean.errors import ConfigError, LoraOceanError
from loraocean.evaluation.answer_nll import perplexity, score
from loraocean.selection.base import Choice, ModelRef, strategy
from loraocean.selection.diversity import least_overlap, weight_cosine_matrix
from loraocean.selection.ppl import prepare_examples
from loraocean.selection.swap import open_slot


@strategy("rocket", needs=("examples", "library"), order=60)
class Rocket:
    @staticmethod
    def estimate_seconds(scoring: float, shots: int) -> float:
        return 2 * scoring * shots / 1.5  # the K-shot accuracy shortlist, then ppl's scoring

    higher_is_better = True

    def __init__(self, pool: int | None = None, batch_size: int = 8, swap: str = "auto"):
        self.pool = pool  # the shortlist's size
        self.batch_size = batch_size
        self.swap = swap

    def select(self, target_task: str, candidates: list, model: ModelRef, k: int,
               examples: list) -> list[Choice]:
        from loraocean.evaluation import evaluate
        from loraocean.tasks import get_task

        if not examples:
            raise LoraOceanError(f"rocket selection for {target_task!r} needs target examples (--shots >= 1)")
        size = min(len(candidates), self.pool or 2 * k)
        if size < k:
            raise ConfigError(f"rocket's shortlist ({size}) is smaller than k ({k}); raise --pool")
        spec = get_task(target_task)
        base, tokenizer = model.loaded()
        prepared, tokens = prepare_examples(examples, tokenizer, self.batch_size, True)
        slot = open_slot(base, [e.path for e in candidates], self.swap)
        scored = []
        try:
            for entry in candidates:
                slot.load(entry.path)
                acc = float(evaluate(slot.model, tokenizer, spec, examples, convention="lm-eval",
                                     batch_size=self.batch_size).value)
                scored.append((acc, perplexity(score(slot.model, prepared)), entry))
        finally:
            slot.close()
        scored.sort(key=lambda s: (-s[0], s[1], s[2].task))
        top = scored[:size]
        cos = weight_cosine_matrix([e.path for _, _, e in top])
        subset, total = least_overlap(cos, k)
        order = list(subset) + [i for i in range(size) if i not in subset] + list(range(size, len(scored)))
        out = []
        for i in order:
            acc, ppl, entry = scored[i]
            where = ("chosen: least-overlapping subset" if i in subset else "shortlisted, not chosen") \
                if i < size else "outside the shortlist"
            out.append(Choice(entry.task, round(acc, 6),
                              f"{where}; K-shot accuracy {acc:.3f} and answer perplexity {ppl:.3f} on "
                              f"{len(examples)} target examples ({tokens} answer tokens); shortlist of "
                              f"{size}, chosen subset sum |cos| {total:.3f}", str(entry.path)))
        return out
