"""The four stages of a study, each a plain call into its room:

- `lora`:   `loraocean.library.train_lora` into the study's library root
- `select`: a `loraocean.selection` strategy over the study's candidate LoRAs
- `fit`:    `loraocean.moe.fit` of one method on the selected experts
- `eval`:   `loraocean.checkpoints.attach` + `evaluate` on the target's evaluation split

A stage gets its job, the run `Context` and a temporary folder `out` (it becomes the job's
folder when the stage returns); it returns the JSON result. Rooms are imported lazily so the
study machinery loads without them. Tests run the graph with stand-in stages of the same shape.
"""

from __future__ import annotations

import contextlib
import json
import os
from datetime import datetime, timezone
from pathlib import Path

from loraocean.errors import LoraOceanError
from loraocean.study.jobs import ROUTING_EXAMPLES, Job

EVAL_SEED = 0  # the evaluation subset is the same for every method, selection and seed (paired tests)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _progress(ctx, what: str):
    return lambda step, total, loss=None: ctx.progress(step, total, f"{what} loss {loss:.3f}"
                                                       if isinstance(loss, float) else what)


def lora(job: Job, ctx, out: Path) -> dict:
    from loraocean.library import Library, get_preset, train_lora
    from loraocean.library.build import pair_lock
    from loraocean.tasks import get_task

    i = job.inputs
    task = ctx.task(i["task"])
    # A capped preset gets its own name: its cards must not read as a stale `lite` adapter; it
    # carries the example cap too (train_limit), so train_lora needs no separate limit.
    preset = get_preset(ctx.cfg.library.preset).capped(i["max_train"], i["max_steps"])
    lib = Library(ctx.library_root(i["model"]))
    dest = lib.path(i["model"], get_task(task).name)
    model, tokenizer = ctx.base(i["model"])  # train_lora gives it back unchanged
    with pair_lock(lib.root, i["model"], get_task(task).name):
        card = train_lora(i["model"], task, preset, out=dest, seed=i["seed"],
                          model=model, tokenizer=tokenizer, on_step=_progress(ctx, "train"), overwrite=True)
        lib.rebuild_manifest()  # so `loraocean library verify` sees the study's library as clean
    # relative to the job folder (same depth as `out`), so a moved run folder still resolves
    return {"adapter": os.path.relpath(dest, out), "data_hash": card["data_hash"], "n_train": card["n_train"],
            "train": {k: v for k, v in card["train"].items() if k != "loss_curve"},
            "weights_sha256": card.get("weights_sha256"), "created": _now()}


def select(job: Job, ctx, out: Path) -> dict:
    """`loraocean.selection.select` over the study's library (which holds exactly its task pool)."""
    from loraocean.selection import ModelRef
    from loraocean.selection import select as run_selection
    from loraocean.tasks import get_task

    i = job.inputs
    model, tokenizer = ctx.fresh(i["model"])
    sel = run_selection(ctx.task(i["target"]), ctx.library_root(i["model"]), ModelRef(i["model"], model, tokenizer),
                        k=i["k"], strategy=i["strategy"], shots=i["shots"], seed=i["seed"],
                        include_target=ctx.cfg.selection.include_target,
                        decontaminate=i.get("decontaminate", True))
    listed = [c.task for c in sel.ranking] + list(sel.excluded)
    if sorted(listed) != sorted(get_task(ctx.task(t)).name for t in i["candidates"]):
        raise LoraOceanError(f"library {ctx.library_root(i['model'])} holds {sorted(listed)} as candidates "
                             f"for {i['target']}, but the study expects {sorted(i['candidates'])}; a shared "
                             "library.root must hold exactly the study's tasks")
    (out / "selection.json").write_text(json.dumps(sel.to_dict(), indent=2, default=str), encoding="utf-8")
    return {"experts": sel.chosen, "data_hash": sel.data_hash,
            "ranking": [{"task": c.task, "score": c.score, "reason": c.reason} for c in sel.ranking],
            "excluded": sel.excluded, "unchecked": sel.unchecked, "created": _now()}


def fit(job: Job, ctx, out: Path) -> dict:
    """`loraocean.moe.fit` on the selected experts; library.preset names the MoE room's preset too,
    capped by the study's max_fit / max_steps (a copy named after the caps, which the card records),
    with the method's training overrides when the study file names any."""
    from loraocean.moe import fit as moe_fit
    from loraocean.moe.presets import get_preset as moe_preset

    i = job.inputs
    experts = ctx.dep_result(job.deps[0])["experts"]
    model, tokenizer = ctx.fresh(i["model"])
    ckpt = out / "checkpoint"
    card = moe_fit(i["method"], i["model"], experts, ctx.task(i["target"]), ckpt, library=ctx.library_root(i["model"]),
                   preset=moe_preset(i["preset"]).capped(i["max_fit"], i["max_steps"]), options=i["config"],
                   seed=i["seed"], model=model, tokenizer=tokenizer, on_step=_progress(ctx, "fit"),
                   train=i.get("train"), lrs=i.get("lrs"))
    card = _jsonable(card)
    if isinstance(card, dict):
        card.pop("losses", None)
    return {"experts": experts, "checkpoint": ckpt.name, "card": card, "created": _now()}


def routing(model, tokenizer, examples) -> dict | None:
    """Mean gate per (layer, expert) of an MoE model over a few evaluation examples."""
    from loraocean.moe import MoEModel, routing_stats

    if not isinstance(model, MoEModel):
        return None
    try:
        return routing_stats(model, tokenizer, examples[:ROUTING_EXAMPLES])
    except (AttributeError, TypeError):  # a method whose layers keep no per-token gates
        return None


def _jsonable(obj):
    try:
        return json.loads(json.dumps(obj, default=str))
    except (TypeError, ValueError):
        return str(obj)


def eval_examples(ctx, job: Job):
    from loraocean.tasks import get_task, load_split

    i = job.inputs
    spec = get_task(ctx.task(i["target"]))
    return spec, load_split(spec, i["split"], limit=i["max_eval"], seed=EVAL_SEED)


def evaluate(job: Job, ctx, out: Path) -> dict:
    from loraocean.checkpoints import attach
    from loraocean.evaluation import evaluate as run_eval

    i = job.inputs
    spec, examples = eval_examples(ctx, job)
    model, tokenizer = ctx.fresh(i["model"])
    adapters = []
    if job.deps:  # what the dependency made: a fit's checkpoint or a LoRA job's adapter
        made = ctx.dep_result(job.deps[0])
        path = ctx.dep_path(job.deps[0], "checkpoint" if "checkpoint" in made else "adapter")
        model, adapters = attach(model, path), [str(path)]
    done = [0]

    def progress(n: int) -> None:
        done[0] += n
        ctx.progress(done[0], len(examples), "eval")

    with measured(model, tokenizer, examples) as cost:
        result = run_eval(model, tokenizer, spec, examples, convention=i["convention"],
                          batch_size=ctx.cfg.evaluation.batch_size, progress=progress)
    scores, preds = score_rows(result)
    if i.get("harness"):  # lm-eval's tasks too: one score row per task, convention "lm-eval:<task>"
        from loraocean.bridges.lm_eval_bridge import harness_scores

        more = harness_scores(model, tokenizer, i["harness"]["tasks"], ctx.cfg.evaluation.batch_size,
                              limit=i["max_eval"], include_path=i["harness"]["include_path"])
        scores, preds = scores + more[0], preds + more[1]
    write_predictions(out, preds)
    gates = routing(model, tokenizer, examples)  # None unless the model is an MoEModel
    return {"scores": scores, "adapters": adapters, "routing": _jsonable(gates), "template": result.template,
            "top_prediction_rate": result.top_prediction_rate, "inference": cost, "created": _now()}


@contextlib.contextmanager
def measured(model, tokenizer, examples):
    """Inference cost of the evaluation inside the block, filled into the yielded dict: wall seconds,
    latency per example, tokens per second (each example's prompt and reference answer, the same
    tokens for every method) and peak memory (CUDA: the peak allocated during the block; CPU: the
    process's peak resident size so far, an upper bound)."""
    import resource
    import time

    import torch

    from loraocean.batching import encode

    cost: dict = {}
    device = next(model.parameters()).device
    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    yield cost
    if cuda:
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - start
    tokens = sum(len(encode(ex, tokenizer).input_ids) for ex in examples)
    peak = (torch.cuda.max_memory_allocated(device) if cuda
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)  # Linux: KiB
    cost.update({"seconds": round(seconds, 3), "examples": len(examples),
                 "latency_ms": round(1000 * seconds / max(len(examples), 1), 2), "tokens": tokens,
                 "tokens_per_s": round(tokens / seconds, 1) if seconds > 0 else None,
                 "peak_mb": round(peak / 2 ** 20, 1), "memory": "cuda peak allocated" if cuda
                 else "process peak RSS"})


# The headline rule of each convention in an EvalResult's metrics table (evaluation room's names).
HEADLINE = {"lm-eval": "lm-eval acc", "opencompass": "opencompass ppl"}


def score_rows(result) -> tuple[list[dict], list[dict]]:
    """One score row per convention (an EvalResult of convention 'both' holds two) and the
    per-example correctness under each."""
    if result.convention == "both":
        rules = [(conv, rule) for conv, rule in HEADLINE.items()]
    else:
        rules = [(result.convention, result.metric)]
    scores, preds = [], []
    for conv, rule in rules:
        m = result.metrics.get(rule, {"value": result.value, "ci_low": result.ci_low,
                                      "ci_high": result.ci_high})
        scores.append({"convention": conv, "metric": rule, "value": float(m["value"]),
                       "ci_low": _f(m.get("ci_low")), "ci_high": _f(m.get("ci_high")), "n": int(result.n),
                       "majority_rate": _f(result.majority_rate)})
        for rec in result.predictions:
            if result.convention == "both":
                pick = rec["predictions"][rule]
                correct = pick == rec["label"]
            else:
                pick, correct = rec.get("prediction"), rec["correct"]
            preds.append({"convention": conv, "id": rec["id"], "correct": bool(correct), "prediction": pick})
    return scores, preds


def _f(x):
    return None if x is None else float(x)


def write_predictions(out: Path, preds: list[dict]) -> None:
    with open(out / "predictions.jsonl", "w", encoding="utf-8") as fh:
        for p in preds:
            fh.write(json.dumps(p, default=str) + "\n")


STAGES = {"lora": lora, "select": select, "fit": fit, "eval": evaluate}
