"""`random`: a seeded shuffle of the candidates (the paper's Random baseline). The same seed and
candidates always give the same order; the seed is recorded with the selection."""

from __future__ import annotations

import random

from loraocean.selection.base import Choice, ModelRef, strategy


@strategy("random", order=20)
class RandomPick:
    higher_is_better = True

    def __init__(self, seed: int = 0):
        self.seed = seed

    def select(self, target_task: str, candidates: list, model: ModelRef, k: int,
               examples: list) -> list[Choice]:
        # seeded by (seed, target) so each target of a study gets its own draw
        rng = random.Random(f"{self.seed}:{target_task}")
        draws = {e.task: rng.random() for e in sorted(candidates, key=lambda e: e.task)}
        ranked = sorted(candidates, key=lambda e: -draws[e.task])
        return [Choice(e.task, round(draws[e.task], 6), f"seeded random draw (seed {self.seed})",
                       str(e.path)) for e in ranked]
