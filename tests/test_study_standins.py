"""Stand-in stage functions for the study machinery's tests (not shipped as defaults).

They have the real stages' shape (job, ctx, out) -> result dict, run in milliseconds, and make
numbers with known structure: each method has a fixed accuracy level, so the report's tables and
paired tests have something definite to find. Every call is logged to <run>/calls.log so tests
can check what was reused. STANDIN_SLEEP (seconds) slows every stage down for the kill -9 test.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path

LEVEL = {"base": 0.30, "target_lora": 0.85, "loramoe": 0.75, "rocket": 0.55, "xlora": 0.40}
SELECTION_BONUS = {"manual": 0.10, "ppl": 0.0, "random": -0.05, "rocket": 0.05, "none": 0.0}
N_EVAL = 60


def u01(*parts) -> float:
    """A deterministic number in [0, 1) from the parts."""
    digest = hashlib.sha256(json.dumps(parts).encode()).hexdigest()
    return int(digest[:12], 16) / 16 ** 12


def _log(ctx, job) -> None:
    with open(Path(ctx.run_dir) / "calls.log", "a") as fh:
        fh.write(f"{job.kind} {job.key}\n")
    if os.environ.get("STANDIN_FAIL") and os.environ["STANDIN_FAIL"] in json.dumps(job.inputs):
        raise RuntimeError(f"stand-in failure for {job.label}")
    delay = float(os.environ.get("STANDIN_SLEEP", "0"))
    for step in range(3):
        ctx.progress(step + 1, 3, "")
        time.sleep(delay / 3)


def lora(job, ctx, out):
    _log(ctx, job)
    (out / "adapter.txt").write_text(job.inputs["task"])
    return {"adapter": str(out), "n_train": ctx.cfg.caps.max_train}


def select(job, ctx, out):
    _log(ctx, job)
    i = job.inputs
    if i["strategy"] == "manual":
        ranked = sorted(i["candidates"])
    else:
        ranked = sorted(i["candidates"], key=lambda t: u01(i["strategy"], i["seed"], i["target"], t))
    return {"experts": ranked[: i["k"]], "ranking": [{"task": t, "score": None, "reason": ""} for t in ranked]}


def fit(job, ctx, out):
    _log(ctx, job)
    experts = ctx.dep_result(job.deps[0])["experts"]
    return {"experts": experts, "checkpoint": "."}


def routing(job, experts):
    layers = [f"model.layers.{n}.mlp.up_proj" for n in range(4)]
    gates = [[u01(job.key, l, e) for e in experts] for l in layers]
    return {"layers": layers, "experts": experts, "mean_gates": [[g / sum(row) for g in row] for row in gates]}


def evaluate(job, ctx, out):
    _log(ctx, job)
    i = job.inputs
    p = LEVEL[i["method"]] + SELECTION_BONUS[i["selection"] or "none"]
    n = min(N_EVAL, i["max_eval"] or N_EVAL)
    conventions = ["lm-eval", "opencompass"] if i["convention"] == "both" else [i["convention"]]
    scores, preds = [], []
    for conv in conventions:
        correct = [u01(i["target"], i.get("seed"), conv, i["method"], i["selection"], k) < p for k in range(n)]
        acc = sum(correct) / n
        scores.append({"convention": conv, "metric": "acc", "value": acc, "ci_low": max(0, acc - 0.1),
                       "ci_high": min(1, acc + 0.1), "n": n, "majority_rate": 0.10})
        # four labels in turn; a wrong answer is the next label
        preds += [{"convention": conv, "id": f"{i['target']}-{k}", "correct": c, "prediction": (k + (not c)) % 4}
                  for k, c in enumerate(correct)]
    with open(out / "predictions.jsonl", "w") as fh:
        for p_ in preds:
            fh.write(json.dumps(p_) + "\n")
    gates = None
    if i["selection"]:
        gates = routing(job, ctx.dep_result(job.deps[0])["experts"])
    return {"scores": scores, "adapters": [], "routing": gates}


STAGES = {"lora": lora, "select": select, "fit": fit, "eval": evaluate}
