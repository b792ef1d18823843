"""pass@1 for code tasks: generated programs run against the task's tests in the sandbox."""

from __future__ import annotations

import importlib

import pytest

from loraocean.tasks import get_task, load_split

# The module, not the function of the same name that loraocean.evaluation re-exports.
evaluate_module = importlib.import_module("loraocean.evaluation.evaluate")


def test_pass_at_1_runs_generated_code_in_the_sandbox(monkeypatch, tiny_llama):
    model, tokenizer = tiny_llama
    spec = get_task("humaneval")
    examples = load_split(spec, "test", limit=3)
    # Stand in for the model's generations: two canonical solutions and one wrong body, so the
    # metric is decided by really running the HumanEval tests.
    canned = [examples[0].target, "    return None\n", examples[2].target]
    monkeypatch.setattr(evaluate_module, "generate_texts", lambda *a, **k: list(canned))
    result = evaluate_module.evaluate(model, tokenizer, spec, examples)
    assert result.metric == "pass@1"
    assert result.value == pytest.approx(2 / 3)
    assert [r["correct"] for r in result.predictions] == [True, False, True]
    assert result.predictions[1]["status"] == "failed"
