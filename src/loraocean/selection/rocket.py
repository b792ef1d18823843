"""`rocket`: Rocket's expert selection (Yang et al., arXiv 2408.15915), its three steps in one.

1. K-shot accuracy: every candidate LoRA answers the K target examples (the same examples `ppl`
   sees, from the train split); the `pool` best (default 2k) go on, ties broken by step 2.
2. Reasoning perplexity (`ppl`'s, as the reference computes it): per example exp(mean
   cross-entropy over the output and its end-of-sequence token, prompt masked), averaged over the
   K examples; lower is better; it orders the shortlist.
3. Group diversity: among the shortlist, the k-subset with the lowest sum over pairs of the
   reference's similarity, the sum over weight tensors (each module's A and B) of |cosine| between
   the two LoRAs' flattened tensors (`diversity.tensor_similarity`; not the B @ A delta
   `diversity` uses); ties go to the subset with the better step-2 ranks. `per_tensor=False`: one
   cosine over all A and B weights concatenated (the earlier form).
"""

from __future__ import annotations

from loraocean.errors import ConfigError, LoraOceanError
from loraocean.evaluation.answer_nll import score
from loraocean.selection.base import Choice, ModelRef, strategy
from loraocean.selection.diversity import least_overlap, tensor_similarity_matrix, weight_cosine_matrix
from loraocean.selection.ppl import prepare_examples, reasoning_perplexity
from loraocean.selection.swap import open_slot


@strategy("rocket", needs=("examples", "library"), order=60)
class Rocket:
    @staticmethod
    def estimate_seconds(scoring: float, shots: int) -> float:
        return 2 * scoring * shots / 1.5  # the K-shot accuracy shortlist, then ppl's scoring

    higher_is_better = True

    def __init__(self, pool: int | None = None, batch_size: int = 8, swap: str = "auto", eos: bool = True,
                 pooled: bool = False, per_tensor: bool = True):
        self.pool = pool  # the shortlist's size
        self.batch_size = batch_size
        self.swap = swap
        self.eos, self.pooled = eos, pooled  # reasoning perplexity as `ppl` computes it
        self.per_tensor = per_tensor         # the reference's sum of per-tensor |cos|

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
        prepared, tokens = prepare_examples(examples, tokenizer, self.batch_size, True, self.eos)
        slot = open_slot(base, [e.path for e in candidates], self.swap)
        scored = []
        try:
            for entry in candidates:
                slot.load(entry.path)
                acc = float(evaluate(slot.model, tokenizer, spec, examples, convention="lm-eval",
                                     batch_size=self.batch_size).value)
                scored.append((acc, reasoning_perplexity(score(slot.model, prepared), self.pooled), entry))
        finally:
            slot.close()
        scored.sort(key=lambda s: (-s[0], s[1], s[2].task))
        top = scored[:size]
        similarity = tensor_similarity_matrix if self.per_tensor else weight_cosine_matrix
        cos = similarity([e.path for _, _, e in top])
        subset, total = least_overlap(cos, k)
        order = list(subset) + [i for i in range(size) if i not in subset] + list(range(size, len(scored)))
        out = []
        for i in order:
            acc, ppl, entry = scored[i]
            where = ("chosen: least-overlapping subset" if i in subset else "shortlisted, not chosen") \
                if i < size else "outside the shortlist"
            out.append(Choice(entry.task, round(acc, 6),
                              f"{where}; K-shot accuracy {acc:.3f} and reasoning perplexity {ppl:.3f} on "
                              f"{len(examples)} target examples ({tokens} scored tokens); shortlist of "
                              f"{size}, chosen subset sum |cos| {total:.3f}", str(entry.path)))
        return out
