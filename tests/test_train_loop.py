"""The shared trainer's answer-only head gives exactly transformers' loss and gradients."""

from __future__ import annotations

import pytest
import torch

from conftest import bigbench_task, on_device
from loraocean.batching import encode, pad_batch
from loraocean.models import load
from loraocean.tasks import load_split
from loraocean.models.calling import takes_logits_to_keep
from loraocean.trainer import TrainConfig, answer_loss, train

# `make test-min` runs this file at the lowest declared versions:
# the answer-only loss through transformers' logits_to_keep, and its fallback.
pytestmark = pytest.mark.min_versions


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_answer_loss_equals_transformers_loss_and_grads(family):
    model, tok = load(f"tiny-{family}")
    examples = load_split(bigbench_task("intent_recognition"), "train", limit=6)
    batch = on_device(pad_batch([encode(ex, tok, max_length=80) for ex in examples], tok.pad_token_id))
    assert takes_logits_to_keep(model)
    full = model(**batch).loss
    full.backward()
    want = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    fast = answer_loss(model, batch)
    fast.backward()
    torch.testing.assert_close(fast, full, rtol=1e-5, atol=1e-6)
    for n, p in model.named_parameters():
        torch.testing.assert_close(p.grad, want[n], rtol=1e-4, atol=1e-6)
    # by hand: mean cross-entropy over the answer tokens of full-sequence logits
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        labels = batch["labels"][:, 1:]
        mask = labels != -100
        logp = torch.log_softmax(logits[:, :-1].float(), -1)
        nll = -logp.gather(-1, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1)[mask].mean()
    torch.testing.assert_close(fast.detach(), nll, rtol=1e-5, atol=1e-6)


def test_both_loss_paths_train_to_the_same_weights():
    examples = load_split(bigbench_task("intent_recognition"), "train", limit=8)
    runs = []
    for fast in (True, False):
        model, tok = load("tiny-llama")
        data = [encode(ex, tok, max_length=64) for ex in examples]
        log = train(model, data, TrainConfig(lr=1e-3, max_steps=3, batch_size=4, answer_logits_only=fast),
                    tok.pad_token_id)
        runs.append((log.losses, model.lm_head.weight.detach().clone()))
    assert runs[0][0] == pytest.approx(runs[1][0], rel=1e-5)
    torch.testing.assert_close(runs[0][1], runs[1][1], rtol=1e-4, atol=1e-6)


def test_answer_loss_falls_back_to_full_logits_without_mask_support(monkeypatch):
    """transformers releases whose `logits_to_keep` takes no boolean mask (5.17 among them) get
    every position's logits and the answer positions picked from them: the same loss."""
    from loraocean.models import calling

    model, tok = load("tiny-llama")
    examples = load_split(bigbench_task("intent_recognition"), "train", limit=4)
    batch = on_device(pad_batch([encode(ex, tok, max_length=80) for ex in examples], tok.pad_token_id))
    with torch.no_grad():
        want = model(**batch).loss
        monkeypatch.setattr(calling, "_transformers_slices_masks", lambda: False)
        assert calling.takes_logits_to_keep(model) and not calling.takes_logits_mask(model)
        got = answer_loss(model, batch)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
