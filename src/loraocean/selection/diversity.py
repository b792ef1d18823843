"""`diversity`: Rocket's group step. Among the top `pool` candidates of a base strategy, choose the
k-subset whose LoRA weight deltas overlap least: the lowest sum of pairwise |cosine| between the
flattened deltas (all adapted modules concatenated, each module's delta = scale * B @ A).

The cosine is computed without forming the d_out x d_in deltas: for two LoRAs on one module,
<B1 A1, B2 A2>_F = sum((B1^T B2) * (A1 A2^T)), which needs only r x r products. Modules one LoRA
lacks count as zero deltas.
"""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import torch

from loraocean.errors import ConfigError
from loraocean.library.adapter import read_lora
from loraocean.selection.base import Choice, ModelRef, get_strategy, strategy

MAX_SUBSETS = 200_000


def lora_factors(folder: str | Path) -> dict[str, tuple[torch.Tensor, torch.Tensor, float]]:
    """module name -> (A, B, scale) of a PEFT LoRA folder (`library.adapter.read_lora`), in float64."""
    lora = read_lora(folder)
    return {m: (a.double(), lora.B[m].double(), lora.scale[m]) for m, a in lora.A.items()}


def inner(x: dict, y: dict) -> float:
    """Frobenius inner product of two LoRAs' full weight deltas, summed over shared modules."""
    total = 0.0
    for module in x.keys() & y.keys():
        a1, b1, s1 = x[module]
        a2, b2, s2 = y[module]
        total += s1 * s2 * float(((b1.T @ b2) * (a1 @ a2.T)).sum())
    return total


def cosine_matrix(folders: list) -> torch.Tensor:
    """Pairwise cosine similarity of the flattened weight deltas of the LoRAs in `folders`."""
    return _cosines(folders, inner)


def weight_inner(x: dict, y: dict) -> float:
    """Dot product of two LoRAs' flattened A and B tensors (Rocket's per-tensor form), summed over
    shared modules; a LoRA of lower rank is zero-padded (rows of A, columns of B)."""
    total = 0.0
    for module in x.keys() & y.keys():
        (a1, b1, _), (a2, b2, _) = x[module], y[module]
        r = min(a1.shape[0], a2.shape[0])
        total += float((a1[:r] * a2[:r]).sum() + (b1[:, :r] * b2[:, :r]).sum())
    return total


def tensor_similarity(x: dict, y: dict) -> float:
    """Rocket's reference similarity of two LoRAs (`Model_Selection/group_diversity.py`): the sum
    over their weight tensors (each module's A and B) of |cosine| between the two flattened
    tensors; a LoRA of lower rank is zero-padded, a module one of them lacks adds nothing."""
    total = 0.0
    for module in x.keys() & y.keys():
        (a1, b1, _), (a2, b2, _) = x[module], y[module]
        r = min(a1.shape[0], a2.shape[0])
        for t1, t2, p1, p2 in ((a1, a2, a1[:r], a2[:r]), (b1, b2, b1[:, :r], b2[:, :r])):
            norms = float(t1.norm() * t2.norm())
            total += abs(float((p1 * p2).sum())) / norms if norms > 0 else 0.0
    return total


def tensor_similarity_matrix(folders: list) -> torch.Tensor:
    """Pairwise `tensor_similarity` of the LoRAs in `folders` (the diagonal: their number of
    tensors)."""
    factors = [lora_factors(f) for f in folders]
    n = len(factors)
    out = torch.zeros(n, n, dtype=torch.float64)
    for i in range(n):
        for j in range(i, n):
            out[i, j] = out[j, i] = tensor_similarity(factors[i], factors[j])
    return out


def _cosines(folders: list, product) -> torch.Tensor:
    factors = [lora_factors(f) for f in folders]
    n = len(factors)
    gram = torch.zeros(n, n, dtype=torch.float64)
    for i in range(n):
        for j in range(i, n):
            gram[i, j] = gram[j, i] = product(factors[i], factors[j])
    norms = gram.diagonal().clamp(min=1e-300).sqrt()
    return gram / norms[:, None] / norms[None, :]


def weight_cosine_matrix(folders: list) -> torch.Tensor:
    """Pairwise cosine similarity of the LoRAs' flattened A and B weights (not their deltas)."""
    return _cosines(folders, weight_inner)


def least_overlap(cos: torch.Tensor, k: int) -> tuple[tuple[int, ...], float]:
    """The k-subset of indices with the lowest sum of pairwise |cos| (ties: the earliest subset in
    lexicographic order, i.e. the one with better base ranks)."""
    abs_cos = cos.abs()
    best, best_score = None, math.inf
    for subset in itertools.combinations(range(cos.shape[0]), k):
        score = float(sum(abs_cos[i, j] for i, j in itertools.combinations(subset, 2)))
        if score < best_score - 1e-12:
            best, best_score = subset, score
    return best, best_score


@strategy("diversity", needs=("library",), order=50)
class Diversity:
    higher_is_better = False

    def __init__(self, base: str = "ppl", pool: int | None = None, base_ranking: list[Choice] | None = None,
                 seed: int = 0, map_file=None, shots: int = 32):
        if base == "diversity":
            raise ConfigError("diversity cannot use itself as its base strategy; use e.g. --base ppl")
        self.base = base
        self.reuses = base  # a run that ranks `base` too hands its ranking over (`base_ranking`)
        self.pool = pool
        self.base_ranking = base_ranking  # reuse a ranking already computed by the base strategy
        self.base_options = dict(seed=seed, map_file=map_file, shots=shots)

    def select(self, target_task: str, candidates: list, model: ModelRef, k: int,
               examples: list) -> list[Choice]:
        ranking = self.base_ranking
        if ranking is None:
            ranking = get_strategy(self.base, **self.base_options).select(target_task, candidates, model, k,
                                                                          examples)
        pool = min(len(ranking), self.pool or 2 * k)
        if pool < k:
            raise ConfigError(f"--pool {pool} is smaller than --k {k}; the pool must hold at least k candidates")
        if math.comb(pool, k) > MAX_SUBSETS:
            raise ConfigError(f"--pool {pool} with --k {k} gives {math.comb(pool, k):,} subsets to compare "
                              f"(limit {MAX_SUBSETS:,}); lower --pool")
        top = ranking[:pool]
        by_task = {e.task: e for e in candidates}
        cos = cosine_matrix([by_task[c.task].path for c in top])
        subset, total = least_overlap(cos, k)
        chosen = list(subset)
        out = []
        for i in chosen + [i for i in range(len(top)) if i not in subset]:
            overlap = float(sum(cos[i, j].abs() for j in chosen if j != i))
            where = "in" if i in subset else "outside"
            out.append(Choice(top[i].task, round(overlap, 6),
                              f"{where} the least-overlapping {k}-subset of the top {pool} by {self.base} "
                              f"(subset sum |cos| {total:.3f}; base rank {i + 1}); sum |cos| to the chosen "
                              f"{overlap:.3f}", top[i].adapter))
        for rank, c in enumerate(ranking[pool:], start=pool + 1):
            out.append(Choice(c.task, None, f"outside the top {pool} by {self.base} (base rank {rank})",
                              c.adapter))
        return out
