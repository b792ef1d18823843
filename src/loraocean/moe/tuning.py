"""Equal tuning: every trained method picks its learning rate from the same small grid on the
target's dev split, under the same budget (each grid value trains for the preset's steps from the
same start; the best one's weights are kept, nothing is retrained).

    lr, scores, log = sweep(moe, [5e-5, 2e-4, 8e-4], train_one, score)

`train_one(lr)` trains the model in place and returns its training log; `score()` returns the
dev score (higher is better). Before each grid value the method's own tensors go back to where
they started (`MoEModel.moe_state_dict`), so every value starts from the same initialisation and
sees the same batches (the training seed is the fit's). Ties go to the earlier grid value.
"""

from __future__ import annotations

from typing import Callable


def _snapshot(moe) -> dict:
    return {k: v.detach().clone() for k, v in moe.moe_state_dict().items()}


def sweep(moe, lrs: list[float], train_one: Callable[[float], object],
          score: Callable[[], float]) -> tuple[float, dict[float, float], object]:
    """(chosen lr, dev score of each lr, the chosen run's training log); `moe` ends holding the
    chosen run's weights."""
    if not lrs:
        raise ValueError("sweep needs at least one learning rate")
    start = _snapshot(moe)
    scores: dict[float, float] = {}
    best = None
    for lr in lrs:
        moe.load_moe_state_dict(start)
        moe.train()
        log = train_one(lr)
        moe.eval()
        scores[lr] = float(score())
        if best is None or scores[lr] > scores[best[0]]:
            best = (lr, _snapshot(moe), log)
    moe.load_moe_state_dict(best[1])
    moe.eval()
    return best[0], scores, best[2]
