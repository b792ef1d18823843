"""The shared-prefix scorer and batched generation on MoE checkpoints: the KV-cached scores equal a
plain full-sequence computation through the same MoE model, and batched left-padded generation
equals unbatched greedy (routing must not see the padding or the cache)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import DEVICE, SMOKE_TASKS
from loraocean.checkpoints import attach
from loraocean.evaluation import generate_texts, score_tokens
from loraocean.models import load
from loraocean.moe.fit import fit

TASKS = SMOKE_TASKS



@pytest.mark.parametrize("method", ["loramoe", "xlora"])
def test_moe_checkpoint_scores_and_generation(method, smoke_library, tmp_path):
    fit(method, "tiny-llama", TASKS, TASKS[0], tmp_path / method, library=smoke_library, preset="smoke")
    model, tok = load("tiny-llama")
    moe = attach(model, tmp_path / method)
    rng = np.random.default_rng(1)
    requests = [(rng.integers(3, 250, size=rng.integers(2, 20)).tolist(),
                 [rng.integers(3, 250, size=rng.integers(1, 5)).tolist() for _ in range(3)]) for _ in range(4)]
    for (ctx, conts), s in zip(requests, score_tokens(moe, requests, pad_id=0, batch_size=4)):
        for cont, lp in zip(conts, s.logprobs):
            with torch.no_grad():
                logp = moe(input_ids=torch.tensor([ctx + cont], device=DEVICE)).logits[0].float().log_softmax(-1)
            assert lp == pytest.approx(sum(logp[len(ctx) - 1 + j, c].item() for j, c in enumerate(cont)), abs=1e-4)
    prompts = ["hello", "a b c d e f g"]
    texts = generate_texts(moe, tok, prompts, 5, batch_size=2)
    assert texts == [generate_texts(moe, tok, [p], 5, batch_size=1)[0] for p in prompts]
    # stop strings reach the MoE model's generate: the same texts, cut at the stop
    stop = texts[0][len(texts[0]) // 2:][:2]
    assert stop.strip()
    assert generate_texts(moe, tok, prompts, 5, stop=[stop]) == [t[:t.index(stop)] if stop in t else t
                                                                 for t in texts]
