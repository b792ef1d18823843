"""The OpenCompass bridge class, checked without OpenCompass installed: get_ppl against
OpenCompass's formula computed by hand from logits, and against our scorer's convention."""

from __future__ import annotations

import pytest
import torch

from conftest import DEVICE
from loraocean.evaluation import generate_texts, score_choices
from loraocean.bridges.opencompass_bridge import LoraOceanModel
from loraocean.tasks import Example, render


def _oc_ppl(model, ids, mask_length=None):
    """OpenCompass's HuggingFace get_ppl for one unpadded sequence: per-token CE of the shifted
    sequence, positions before mask_length - 1 zeroed, summed, divided by len - mask_length."""
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([ids], device=DEVICE)).logits[0].float()
    loss = torch.nn.functional.cross_entropy(logits[:-1], torch.tensor(ids[1:], device=DEVICE), reduction="none")
    if mask_length is not None:
        loss[:mask_length - 1] = 0
    return loss.sum().item() / (len(ids) - (mask_length or 0))


def test_get_ppl_equals_opencompass_formula_and_our_scorer(tiny_llama):
    model, tok = tiny_llama
    oc = LoraOceanModel(path="tiny-llama", model=model, tokenizer=tok, batch_size=3)
    ex = Example(id="q", task="t", instruction="Which is a fruit?", input="", target="apple",
                 choices=["apple", "a stone", "blue sky at night"], label=0)
    r = render(ex, tok)
    filled = [r.prompt + c for c in r.choices]
    ctx_len = oc.get_token_len(r.prompt)
    ours = score_choices(model, tok, [ex])[0]

    ppl = oc.get_ppl(filled)
    masked = oc.get_ppl(filled, mask_length=[ctx_len] * 3)
    for i, text in enumerate(filled):
        ids = tok(text, add_special_tokens=False).input_ids
        assert ppl[i] == pytest.approx(_oc_ppl(model, ids), abs=1e-5)
        assert masked[i] == pytest.approx(_oc_ppl(model, ids, ctx_len), abs=1e-4)
        assert ppl[i] == pytest.approx(ours.whole_ce(i), abs=1e-5)
        assert masked[i] == pytest.approx(ours.choice_ce(i), abs=1e-4)
    assert oc.get_token_len("abc") == len(tok("abc", add_special_tokens=False).input_ids)


def test_generate_is_our_greedy_generation(tiny_llama):
    model, tok = tiny_llama
    oc = LoraOceanModel(model=model, tokenizer=tok, batch_size=2)
    prompts = ["Question: 1+1?\nAnswer:", "Say hi:"]
    assert oc.generate(prompts, max_out_len=6) == generate_texts(model, tok, prompts, 6, (), 1)
