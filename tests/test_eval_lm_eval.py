"""Agreement with lm-evaluation-harness: lm-eval's `simple_evaluate` through our bridge and through
lm-eval's own HFLM give the same per-example predictions and accuracy as our scorer (lm-eval
convention), on BIG-bench choice tasks, for a base model with a LoRA trained in the test."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import DEVICE, bigbench_task
from loraocean.batching import encode
from loraocean.evaluation import evaluate
from loraocean.bridges.lm_eval_bridge import LoraOceanLM, write_lm_eval_task
from loraocean.models import load
from loraocean.tasks import get_task, load_split
from loraocean.trainer import TrainConfig, train

# `make test-min` runs this file at the lowest declared versions:
# the lm-eval bridge against lm-eval's HFLM.
pytestmark = pytest.mark.min_versions

TASKS = ("intent_recognition", "logical_deduction/three_objects")


def _lora(model, tokenizer, task):
    """A quickly trained LoRA, so that predictions differ between examples."""
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(0)
    peft = get_peft_model(model, LoraConfig(r=4, lora_alpha=16, target_modules=["q_proj", "v_proj", "down_proj"]))
    data = [encode(ex, tokenizer, max_length=256) for ex in load_split(task, "train", limit=48)]
    train(peft, data, TrainConfig(lr=1e-2, max_steps=12, batch_size=8, seed=0), tokenizer.pad_token_id)
    peft.eval()
    return peft


def _harness_predictions(lm, name, include_path):
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    manager = TaskManager(include_path=str(include_path), include_defaults=False)
    out = simple_evaluate(model=lm, tasks=[name], task_manager=manager, bootstrap_iters=0, log_samples=True)
    samples = sorted(out["samples"][name], key=lambda s: s["doc_id"])
    lls = [[r[0] for r in s["filtered_resps"]] for s in samples]
    return [int(np.argmax(x)) for x in lls], lls, out["results"][name]


def _check(model, tokenizer, tmp_path, limit, batch_size=8, tasks=TASKS):
    from lm_eval.models.huggingface import HFLM

    for ref in tasks:
        spec = get_task(bigbench_task(ref))
        examples = load_split(spec, "test", limit=limit)
        ours = evaluate(model, tokenizer, spec, examples, convention="lm-eval", batch_size=batch_size)
        our_preds = [p["prediction"] for p in ours.predictions]
        write_lm_eval_task(spec, examples, tokenizer, tmp_path)
        for lm in (LoraOceanLM(model, tokenizer=tokenizer, batch_size=batch_size),
                   HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size)):
            preds, lls, summary = _harness_predictions(lm, spec.name, tmp_path)
            assert preds == our_preds, (ref, type(lm).__name__)
            for mine, theirs in zip(ours.predictions, lls):
                assert mine["logprobs"] == pytest.approx(theirs, abs=1e-3)
            assert summary["acc,none"] == pytest.approx(ours.value)
            assert summary["acc_norm,none"] == pytest.approx(ours.metrics["lm-eval acc_norm"]["value"])
    return our_preds


def test_bridge_and_hflm_agree_with_our_scorer_tiny_lora(tmp_path):
    model, tokenizer = load("tiny-llama")
    spec = get_task(bigbench_task(TASKS[0]))
    preds = _check(_lora(model, tokenizer, spec), tokenizer, tmp_path, limit=16)
    assert len(set(preds)) > 1  # the LoRA makes the check meaningful: not one constant answer


@pytest.mark.real_model
def test_bridge_and_hflm_agree_with_our_scorer_smollm2(tmp_path):
    model, tokenizer = load("smollm2-135m")
    _check(model, tokenizer, tmp_path, limit=4, batch_size=4, tasks=TASKS[1:])


def test_loglikelihood_rolling_matches_hflm_and_full_sequence(tiny_llama):
    from lm_eval.api.instance import Instance
    from lm_eval.models.huggingface import HFLM

    model, tokenizer = tiny_llama
    text = "The quick brown fox jumps over the lazy dog, twice."
    req = Instance(request_type="loglikelihood_rolling", doc={}, arguments=(text,), idx=0)
    ids = [tokenizer.bos_token_id] + tokenizer(text, add_special_tokens=False).input_ids
    assert len(ids) > 40
    # One window: the sum of log p of every token given all before it (after the BOS prefix,
    # as HFLM uses when the tokenizer has one).
    with torch.no_grad():
        logp = model(input_ids=torch.tensor([ids], device=DEVICE)).logits[0].float().log_softmax(-1)
    full = sum(logp[j - 1, ids[j]].item() for j in range(1, len(ids)))
    assert LoraOceanLM(model, tokenizer=tokenizer).loglikelihood_rolling([req])[0] == pytest.approx(full, abs=1e-3)
    # Several windows (max_length 16): the same windows as lm-eval's HFLM.
    ours = LoraOceanLM(model, tokenizer=tokenizer, max_length=16).loglikelihood_rolling([req])[0]
    hf = HFLM(pretrained=model, tokenizer=tokenizer, max_length=16, batch_size=4)
    assert ours == pytest.approx(hf.loglikelihood_rolling([req])[0], abs=1e-3)
