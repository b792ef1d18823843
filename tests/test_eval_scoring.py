"""Scoring numbers checked against independent computations on a tiny model."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from conftest import DEVICE
from loraocean.evaluation import evaluate, generate_texts, score_tokens, target_logprobs
from loraocean.evaluation.choice import ChoiceScores, predict
from loraocean.evaluation.metrics import bootstrap_ci, exact_match, majority_rate, token_f1
from loraocean.tasks import Example, TaskSpec, extract, render

SPEC = TaskSpec(name="hand", category="test", source="hand", mode="choice")


def _examples():
    return [
        Example(id="a", task="hand", instruction="Pick the colour of the sky.", input="Sky?",
                target="blue", choices=["green", "blue", "a very long red answer"], label=1),
        Example(id="b", task="hand", instruction="", input="2 + 2 =", target="4",
                choices=["4", "five", "22"], label=0),
        Example(id="c", task="hand", instruction="Say yes.", input="", target="yes",
                choices=["yes", "no"], label=0),
    ]


def _full_logits(model, ids):
    with torch.no_grad():
        return model(input_ids=torch.tensor([ids], device=DEVICE)).logits[0].float()


@pytest.mark.min_versions
def test_choice_scores_equal_hand_computation_in_both_conventions(tiny_llama):
    model, tok = tiny_llama
    examples = _examples()
    result = evaluate(model, tok, SPEC, examples, convention="both", batch_size=2)
    for ex, rec in zip(examples, result.predictions):
        r = render(ex, tok)
        assert r.prompt.endswith("Answer:")  # the tiny tokenizer has no chat template
        ctx = tok(r.prompt, add_special_tokens=False).input_ids
        lls, ces = [], []
        for choice in r.choices:
            whole = tok(r.prompt + choice, add_special_tokens=False).input_ids
            assert whole[:len(ctx)] == ctx
            logp = _full_logits(model, whole).log_softmax(-1)
            lls.append(sum(logp[j - 1, whole[j]].item() for j in range(len(ctx), len(whole))))
            # OpenCompass: HF's own mean shifted cross-entropy of the whole filled prompt (over its
            # n - 1 predicted tokens), rescaled to OpenCompass's divisor n (every token counted).
            with torch.no_grad():
                loss = model(input_ids=torch.tensor([whole], device=DEVICE),
                             labels=torch.tensor([whole], device=DEVICE)).loss.item()
            ces.append(loss * (len(whole) - 1) / len(whole))
        assert rec["logprobs"] == pytest.approx(lls, abs=2e-4)
        assert rec["whole_ce"] == pytest.approx(ces, abs=2e-5)
        norm = [ll / len(c) for ll, c in zip(lls, ex.choices)]
        assert rec["predictions"]["lm-eval acc"] == int(np.argmax(lls))
        assert rec["predictions"]["lm-eval acc_norm"] == int(np.argmax(norm))
        assert rec["predictions"]["opencompass ppl"] == int(np.argmin(ces))
    accs = [float(r["predictions"]["lm-eval acc"] == ex.label) for r, ex in zip(result.predictions, examples)]
    assert result.metric == "lm-eval acc" and result.value == pytest.approx(np.mean(accs))
    assert result.n == 3 and result.majority_rate == pytest.approx(1 / 3)


@pytest.mark.min_versions
def test_shared_prefix_cache_equals_full_sequences_across_batches(tiny_llama):
    model, _ = tiny_llama
    rng = np.random.default_rng(0)
    requests = []
    for _ in range(9):
        ctx = rng.integers(3, 250, size=rng.integers(1, 30)).tolist()
        conts = [rng.integers(3, 250, size=rng.integers(1, 7)).tolist() for _ in range(rng.integers(1, 5))]
        requests.append((ctx, conts))
    refs = []  # plain full-sequence computation, one sequence per (context, choice)
    for ctx, conts in requests:
        logp = [_full_logits(model, ctx + cont).log_softmax(-1) for cont in conts]
        rows = [lp[len(ctx) - 1:len(ctx) + len(c) - 1] for lp, c in zip(logp, conts)]
        refs.append(([r[range(len(c)), c].sum().item() for r, c in zip(rows, conts)],
                     [bool((r.argmax(-1) == torch.tensor(c, device=DEVICE)).all()) for r, c in zip(rows, conts)],
                     -sum(logp[0][j - 1, ctx[j]].item() for j in range(1, len(ctx)))))
    for batch_size in (1, 4, 16):
        for (lps, greedy, nll), s in zip(refs, score_tokens(model, requests, pad_id=0, batch_size=batch_size)):
            assert s.logprobs == pytest.approx(lps, abs=1e-4)
            assert s.greedy == greedy
            assert s.context_nll == pytest.approx(nll, abs=1e-4)


def test_acc_norm_divides_by_choice_characters_like_lm_eval():
    # lm-eval: pred_norm = argmax(lls / len(choice)) with the choice text as the task lists it.
    s = ChoiceScores(logprobs=[-4.0, -6.0, -9.0], n_tokens=[1, 3, 1], greedy=[False] * 3,
                     context_nll=10.0, n_context=5)
    picks = predict(s, ["ab", "abcdef", "x"])
    assert picks["lm-eval acc"] == 0                      # -4 is the highest sum
    assert picks["lm-eval acc_norm"] == 1                 # -4/2=-2, -6/6=-1, -9/1=-9
    # OpenCompass whole CE (divided by all n tokens): (10+4)/6, (10+6)/8, (10+9)/6 -> 1;
    # masked (choice tokens only): 4/1, 6/3, 9/1 -> 1
    assert s.whole_ce(0) == pytest.approx(14 / 6) and s.whole_ce(1) == pytest.approx(16 / 8)
    assert picks["opencompass ppl"] == 1 and picks["opencompass ppl_masked"] == 1
    tie = ChoiceScores(logprobs=[-2.0, -2.0], n_tokens=[1, 1], greedy=[True, False], context_nll=0, n_context=1)
    assert predict(tie, ["a", "b"])["lm-eval acc"] == 0  # ties go to the first, as np.argmax


def test_bootstrap_ci_hand_cases():
    # Two values 1, 0: a resample mean is 0 (p=1/4), 0.5 (1/2) or 1 (1/4): the 95% interval is [0, 1].
    assert bootstrap_ci([1, 0], n_resamples=4000) == (0.0, 1.0)
    assert bootstrap_ci([1, 1, 1, 1]) == (1.0, 1.0)
    values = [1] * 300 + [0] * 700
    low, high = bootstrap_ci(values, n_resamples=4000, seed=3)
    half = 1.96 * np.sqrt(0.3 * 0.7 / 1000)              # normal approximation, about 0.028
    assert low == pytest.approx(0.3 - half, abs=0.005) and high == pytest.approx(0.3 + half, abs=0.005)
    assert bootstrap_ci(values, seed=3) == bootstrap_ci(values, seed=3)
    assert majority_rate(["a", "b", "a", "c"]) == 0.5


def test_extraction_and_answer_metrics_hand_cases():
    assert extract("So 3 + 4 = 7 apples.\nThe answer is 1,234.", "number") == "1234"
    assert extract("first 2, then 3.50", "number") == "3.5"
    assert extract("  Paris\nmore text", "first_line") == "Paris"
    assert exact_match("The Cat!", ["cat"]) == 1.0
    assert exact_match("a dog", ["cat", "Dog."]) == 1.0
    assert exact_match("cats", ["cat"]) == 0.0
    # pred tokens {cat, sat}; gold {cat, sat, down}: P = 1, R = 2/3, F1 = 0.8
    assert token_f1("The cat sat", ["cat sat down"]) == pytest.approx(0.8)
    assert token_f1("blue", ["red", "blue sky"]) == pytest.approx(2 / 3)


@pytest.mark.min_versions
def test_batched_left_padded_generation_equals_unbatched_greedy(tiny_llama):
    model, tok = tiny_llama
    prompts = ["hello there", "a", "The quick brown fox jumps over", "xyz 123 !"]
    batched = generate_texts(model, tok, prompts, max_new_tokens=10, batch_size=4)
    for prompt, text in zip(prompts, batched):
        ids = torch.tensor([tok(prompt, add_special_tokens=False).input_ids], device=DEVICE)
        with torch.no_grad():  # plain HF greedy on one unpadded prompt
            ref = model.generate(input_ids=ids, max_new_tokens=10, do_sample=False,
                                 pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
        new = ref[0, ids.shape[1]:].tolist()
        if tok.eos_token_id in new:
            new = new[:new.index(tok.eos_token_id)]
        assert text == tok.decode(new, skip_special_tokens=True)


@pytest.mark.min_versions
def test_generate_task_scoring_with_stop_strings(tiny_llama):
    model, tok = tiny_llama
    spec = TaskSpec(name="gen", category="test", source="hand", mode="generate", metric="exact_match",
                    extraction="first_line", max_new_tokens=8, stop=("\n",))
    examples = [Example(id=str(i), task="gen", instruction="Repeat.", input=s, target=s)
                for i, s in enumerate(["abc", "hello", "x"])]
    result = evaluate(model, tok, spec, examples, batch_size=2)
    outputs = generate_texts(model, tok, [render(e, tok).prompt for e in examples], 8, ("\n",), 1)
    assert [r["output"] for r in result.predictions] == outputs
    assert all("\n" not in o for o in outputs)
    expected = [exact_match(extract(o, "first_line"), [e.target]) for o, e in zip(outputs, examples)]
    assert result.value == pytest.approx(np.mean(expected)) and result.metric == "exact_match"


def test_target_logprobs_is_answer_only(tiny_llama):
    model, tok = tiny_llama
    examples = _examples()
    for ex, (lp, n) in zip(examples, target_logprobs(model, tok, examples, batch_size=2)):
        r = render(ex, tok)
        ctx = tok(r.prompt, add_special_tokens=False).input_ids
        whole = tok(r.prompt + r.target, add_special_tokens=False).input_ids
        logp = _full_logits(model, whole).log_softmax(-1)
        assert n == len(whole) - len(ctx)
        assert lp == pytest.approx(sum(logp[j - 1, whole[j]].item() for j in range(len(ctx), len(whole))), abs=1e-4)
