"""Evaluation: likelihood scoring of choices (lm-eval and OpenCompass conventions from one pass),
greedy generation scoring, metrics with bootstrap CIs, and bridges to both harnesses. It scores
whatever model it is given; `loraocean.checkpoints.attach` puts a LoRA or MoE checkpoint on one.

    from loraocean.checkpoints import attach
    from loraocean.evaluation import evaluate
    model = attach(model, "library/smollm2-135m/bb_intent_recognition")
    result = evaluate(model, tokenizer, spec, examples, convention="both")
"""

from loraocean.evaluation.choice import ChoiceScores, score_choices, score_tokens
from loraocean.evaluation.evaluate import CONVENTIONS, EvalResult, evaluate, target_logprobs
from loraocean.evaluation.generate import generate_texts

__all__ = ["CONVENTIONS", "ChoiceScores", "EvalResult", "evaluate", "generate_texts",
           "score_choices", "score_tokens", "target_logprobs"]
