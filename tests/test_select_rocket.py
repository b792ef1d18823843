"""Rocket's selection (accuracy shortlist, perplexity order, weight diversity) against independent
computations with PEFT's own loader, and the against-oracle scores against hand values."""

from __future__ import annotations

import itertools

import pytest
import torch

from loraocean.selection import Choice, ModelRef, Selection, select
from loraocean.selection.diversity import tensor_similarity_matrix
from loraocean.selection.oracle import against_oracle
from test_select import OTHERS, TARGET, hand_ppl, library  # noqa: F401  (library is a fixture)


def tensors(folder):
    """Every lora_A and lora_B tensor of the saved adapter, by its safetensors key."""
    from safetensors.torch import load_file

    weights = load_file(str(folder / "adapter_model.safetensors"))
    return {k: v.double() for k, v in weights.items() if "lora_" in k}


def reference_similarity(x, y):
    """Rocket's group_diversity: sum over the shared keys of |cos| of the flattened tensors."""
    return sum(abs(float(torch.nn.functional.cosine_similarity(x[k].reshape(1, -1), y[k].reshape(1, -1))))
               for k in x.keys() & y.keys())


def peft_accuracy(model, tokenizer, folder, examples):
    from peft import PeftModel

    from loraocean.evaluation import evaluate
    from loraocean.tasks import get_task

    peft = PeftModel.from_pretrained(model, str(folder))
    try:
        return float(evaluate(peft, tokenizer, get_task(TARGET), examples, convention="lm-eval").value)
    finally:
        peft.unload()


def test_rocket_selection_matches_an_independent_computation(library, tiny_llama):  # noqa: F811
    from loraocean.tasks import load_split

    model, tokenizer = tiny_llama
    sel = select(TARGET, library, ModelRef.of(model, tokenizer), k=2, strategy="rocket", shots=6, seed=1, pool=3)
    examples = load_split(TARGET, "train", limit=6, seed=1)
    folders = {t: library / "tiny-llama" / t for t in OTHERS}
    acc = {t: peft_accuracy(model, tokenizer, f, examples) for t, f in folders.items()}
    ppl = {t: hand_ppl(model, tokenizer, f, examples) for t, f in folders.items()}
    # shortlist: the 3 best by K-shot accuracy, ties by perplexity
    shortlist = sorted(OTHERS, key=lambda t: (-acc[t], ppl[t], t))[:3]
    # the equal-rank LoRAs: the reference's per-tensor |cos| summed over tensors, from the saved
    # tensors with torch's cosine_similarity (bb_winowhy has rank 2 and is compared on its 2 rows
    # only, as the zero-padding rule says; keep it out of this dense check)
    weights = {t: tensors(folders[t]) for t in shortlist if t != "bb_winowhy"}
    cos = tensor_similarity_matrix([folders[t] for t in shortlist])
    for (i, a), (j, b) in itertools.product(enumerate(shortlist), repeat=2):
        if a in weights and b in weights:
            assert float(cos[i, j]) == pytest.approx(reference_similarity(weights[a], weights[b]), abs=1e-9)
    pair = min(itertools.combinations(range(3), 2), key=lambda s: abs(float(cos[s[0], s[1]])))
    assert sel.chosen == [shortlist[i] for i in pair]
    for c in sel.ranking:
        assert c.score == pytest.approx(acc[c.task])
    assert [c.task for c in sel.ranking[2:3]] == [t for t in shortlist if t not in sel.chosen]
    assert sorted(c.task for c in sel.ranking[3:]) == sorted(set(OTHERS) - set(shortlist))


def _selection(strategy, tasks, k, scores=None):
    ranking = [Choice(t, None if scores is None else scores[t], "") for t in tasks]
    return Selection(strategy, "t", "m", k, 0, 0, "", ranking, True)


def test_against_oracle_by_hand():
    dev = {"a": 0.60, "b": 0.50, "c": 0.40, "d": 0.30, "e": 0.20}
    oracle = _selection("oracle", ["a", "b", "c", "d", "e"], 2, dev)
    # the strategy ranks c, a, e, b, d: chosen {c, a}; oracle's top 2 {a, b}
    got = against_oracle(_selection("ppl", ["c", "a", "e", "b", "d"], 2), oracle)
    assert got["regret"] == pytest.approx((0.60 + 0.50) / 2 - (0.40 + 0.60) / 2)
    assert got["precision_at_k"] == pytest.approx(0.5)
    # ranks by the strategy 1..5 for c, a, e, b, d; by dev score 3, 1, 5, 2, 4:
    # d = (1-3, 2-1, 3-5, 4-2, 5-4) -> sum d^2 = 4 + 1 + 4 + 4 + 1 = 14; rho = 1 - 6 * 14 / (5 * 24)
    assert got["spearman"] == pytest.approx(1 - 6 * 14 / 120)
    # Kendall: (concordant - discordant) / 10 pairs; a pair is concordant when the strategy's
    # earlier task has the higher dev score (c>e, c>d, a>e, a>b, a>d, b>d: 6 of 10)
    order = ["c", "a", "e", "b", "d"]
    concordant = sum(1 for i, j in itertools.combinations(range(5), 2) if dev[order[i]] > dev[order[j]])
    assert concordant == 6 and got["kendall"] == pytest.approx((6 - 4) / 10)
    perfect = against_oracle(_selection("manual", list(dev), 2), oracle)
    assert (perfect["regret"], perfect["precision_at_k"], perfect["spearman"]) == (0, 1.0, pytest.approx(1.0))
