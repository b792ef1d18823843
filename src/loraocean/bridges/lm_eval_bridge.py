"""Bridge to lm-evaluation-harness (optional extra `lmeval`).

- `LoraOceanLM`: an `lm_eval.api.model.LM` over any loraocean model (base, base + LoRA, MoE
  checkpoint), registered as model type `loraocean`. Its log-likelihoods come from our shared-prefix
  scorer (`choice.score_tokens`), so lm-eval's multiple-choice tasks run with one context pass per
  question.
- `write_lm_eval_task`: writes our unified examples as JSONL plus an lm-eval task YAML over it, so
  lm-eval runs our tasks offline with exactly our prompts (`loraocean tasks export --to lm-eval`).
- `run_cli(args)`: lm-eval's own command line with `loraocean` registered (`loraocean lm-eval ...`).
  lm-eval releases with plugin discovery (the `lm_eval.models` entry-point group, lm-eval PR #4013;
  not 0.4.13) find the model through our entry point, so there `lm-eval --model loraocean` works too.

    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager
    yaml_path = write_lm_eval_task(spec, examples, tokenizer, "lm_eval_tasks/")
    lm = LoraOceanLM(model="smollm2-135m", adapter="library/smollm2-135m/bb_intent_recognition")
    simple_evaluate(model=lm, tasks=[spec.name],
                    task_manager=TaskManager(include_path="lm_eval_tasks/", include_defaults=False))
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

from loraocean.artifacts import write_text_atomic
from loraocean.batching import split_encode
from loraocean.errors import MissingPackageError
from loraocean.evaluation.choice import model_max_length, pad_id_of, score_tokens
from loraocean.evaluation.generate import generate_texts
from loraocean.tasks.example import Example, TaskSpec
from loraocean.tasks.prompts import render

try:
    from lm_eval.api.model import LM
    from lm_eval.api.registry import register_model
    from lm_eval.utils import get_rolling_token_windows, make_disjoint_window
except ImportError as err:  # pragma: no cover - the extra is installed in the project's venv
    raise MissingPackageError("lm-evaluation-harness", "pip install 'loraocean[lmeval]'") from err


@register_model("loraocean")
class LoraOceanLM(LM):
    """lm-eval model over a loraocean model.

    `model` is a model object (then `tokenizer` is required) or a name for `loraocean.models.load`;
    `adapter` is a LoRA folder or MoE checkpoint put on it with `loraocean.checkpoints.attach`.
    From the command line: `loraocean lm-eval --model loraocean --model_args
    model=smollm2-135m,adapter=DIR ...`. `batch_size` "auto" (lm-eval's option) means 16;
    `max_batch_size` is accepted and unused; a cuda `device` on a machine without one means the
    default device.
    """

    def __init__(self, model="smollm2-135m", adapter=None, tokenizer=None, batch_size=16,
                 max_length=None, device=None, max_batch_size=None):
        super().__init__()
        from loraocean.checkpoints import attach  # the harness names the adapter (see bridges/__init__)

        if isinstance(model, str):
            import torch

            from loraocean.models import load

            if device and str(device).startswith("cuda") and not torch.cuda.is_available():
                device = None  # lm-eval's CLI asks for cuda:0 by default; as its HFLM, use what there is
            model, tokenizer = load(model, device=device)
        if tokenizer is None:
            raise ValueError("LoraOceanLM needs the tokenizer when given a model object")
        if adapter:
            model = attach(model, adapter)
        self.model, self.tokenizer = model, tokenizer
        self.batch_size = 16 if str(batch_size).startswith("auto") else int(batch_size)
        self.max_length = int(max_length or model_max_length(model))

    @property
    def prefix_token_id(self) -> int:
        """Conditioning token for an empty context (as lm-eval's HFLM: BOS, else EOS)."""
        tok = self.tokenizer
        return tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id

    def _encode(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False).input_ids

    def _score_pairs(self, pairs: list[tuple[list[int], list[int]]]) -> list[tuple[float, bool]]:
        """(sum log-prob, is greedy) of each (context ids, continuation ids); pairs sharing a
        context are scored from one context pass."""
        groups: dict[tuple[int, ...], list[int]] = {}
        for i, (ctx, _) in enumerate(pairs):
            groups.setdefault(tuple(ctx), []).append(i)
        requests = []
        for ctx, members in groups.items():
            conts = [pairs[i][1] for i in members]
            keep = max(1, self.max_length + 1 - max(len(c) for c in conts))  # lm-eval's left cut
            requests.append((list(ctx)[-keep:], conts))
        scores = score_tokens(self.model, requests, pad_id_of(self.tokenizer), self.batch_size,
                              context_nll=False)
        out: list[tuple[float, bool] | None] = [None] * len(pairs)
        for members, s in zip(groups.values(), scores):
            for j, i in enumerate(members):
                out[i] = (s.logprobs[j], bool(s.greedy[j]))
        return out

    def loglikelihood(self, requests, disable_tqdm: bool = False):
        pairs = []
        for req in requests:
            context, continuation = req.args
            if context == "":
                pairs.append(([self.prefix_token_id], self._encode(continuation)))
            else:
                pairs.append(split_encode(self.tokenizer, context, continuation))
        return self._score_pairs(pairs)

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False):
        windows, owner = [], []
        for i, req in enumerate(requests):
            (text,) = req.args[:1]
            for w in get_rolling_token_windows(self._encode(text), self.prefix_token_id,
                                               self.max_length, context_len=1):
                windows.append(make_disjoint_window(w))
                owner.append(i)
        totals = [0.0] * len(requests)
        for i, (lp, _) in zip(owner, self._score_pairs(windows)):
            totals[i] += lp
        return totals

    def generate_until(self, requests, disable_tqdm: bool = False):
        groups: dict[str, list[int]] = {}
        for i, req in enumerate(requests):
            groups.setdefault(json.dumps(req.args[1], sort_keys=True, default=str), []).append(i)
        out: list[str | None] = [None] * len(requests)
        for key, members in groups.items():
            kwargs = json.loads(key)
            until = kwargs.get("until") or []
            until = [until] if isinstance(until, str) else list(until)
            texts = generate_texts(self.model, self.tokenizer, [requests[i].args[0] for i in members],
                                   int(kwargs.get("max_gen_toks", 256)), until, self.batch_size)
            for i, text in zip(members, texts):
                out[i] = text
        return out


def run_cli(args: list[str]) -> None:
    """Run lm-eval's command line (`lm-eval run ...`, `lm-eval ls tasks`, ...) on `args`, in this
    process, where importing this module has registered the `loraocean` model."""
    import sys

    from lm_eval.__main__ import cli_evaluate

    saved = sys.argv
    sys.argv = ["lm-eval", *args]
    try:
        cli_evaluate()
    finally:
        sys.argv = saved


@lru_cache(maxsize=4)
def task_manager(tasks: tuple[str, ...], include_path: str | None = None):
    """An lm-eval TaskManager that knows `tasks`: over `include_path` alone when they are all
    there, else with lm-eval's own tasks too (indexing those takes most of a minute on 2 cores,
    so it is done once per process)."""
    from lm_eval.tasks import TaskManager

    if include_path:
        manager = TaskManager(include_path=include_path, include_defaults=False)
        if set(tasks) <= set(manager.all_tasks):
            return manager
    return TaskManager(include_path=include_path)


def harness_scores(model, tokenizer, tasks: list[str], batch_size: int = 16, limit: int | None = None,
                   include_path: str | None = None) -> tuple[list[dict], list[dict]]:
    """Score `model` on lm-eval tasks with lm-eval itself. Returns (one row per task: convention
    `lm-eval:<task>`, its headline metric (acc, else exact_match, else the first one lm-eval
    reports), value, n; per-document correctness rows {convention, id: doc_id, correct,
    prediction: None}), the shapes a study's eval job records."""
    from lm_eval import simple_evaluate

    lm = LoraOceanLM(model, tokenizer=tokenizer, batch_size=batch_size)
    out = simple_evaluate(model=lm, tasks=list(tasks), limit=limit, log_samples=True, bootstrap_iters=0,
                          task_manager=task_manager(tuple(tasks), include_path))
    scores, preds = [], []
    for task in tasks:
        results = {k.split(",")[0]: v for k, v in out["results"][task].items()
                   if "," in k and "_stderr" not in k and isinstance(v, (int, float))}
        metric = next((m for m in ("acc", "exact_match") if m in results), next(iter(results)))
        samples = out["samples"][task]
        scores.append({"convention": f"lm-eval:{task}", "metric": metric, "value": float(results[metric]),
                       "ci_low": None, "ci_high": None, "n": len(samples), "majority_rate": None})
        preds += [{"convention": f"lm-eval:{task}", "id": str(s["doc_id"]), "correct": bool(s[metric]),
                   "prediction": None} for s in samples]
    return scores, preds


def write_lm_eval_task(spec: TaskSpec, examples: list[Example], tokenizer, out_dir: str | Path,
                       template: str = "auto", name: str | None = None) -> Path:
    """Write `<name>.jsonl` (our rendered prompts) and `<name>.yaml` (an lm-eval task over it) into
    `out_dir`; returns the YAML path. Point lm-eval at the folder with
    `TaskManager(include_path=out_dir)` (or `--include_path`).

    Choice tasks become `multiple_choice` tasks whose context is our rendered prompt and whose
    choices are the task's choice texts, joined with the template's separator (lm-eval's
    `target_delimiter`), so lm-eval's acc and acc_norm see exactly what our scorer sees. Generate
    tasks become `generate_until` tasks with the TaskSpec's stop strings and max_new_tokens.
    """
    import yaml

    name = name or spec.name
    out_dir = Path(out_dir)
    rows, delimiter = [], " "
    for ex in examples:
        r = render(ex, tokenizer, template)
        row = {"id": ex.id, "prompt": r.prompt, "target": ex.target}
        if spec.mode == "choice":
            delimiter = r.choices[0][:len(r.choices[0]) - len(ex.choices[0])]
            row |= {"choices": list(ex.choices), "label": ex.label}
        rows.append(row)
    data = out_dir / f"{name}.jsonl"
    write_text_atomic(data, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    task = {"task": name, "dataset_path": "json",
            "dataset_kwargs": {"data_files": {"test": str(data.resolve())}},
            "test_split": "test", "doc_to_text": "prompt"}
    if spec.mode == "choice":
        task |= {"output_type": "multiple_choice", "doc_to_choice": "choices", "doc_to_target": "label",
                 "target_delimiter": delimiter,
                 "metric_list": [{"metric": "acc", "aggregation": "mean", "higher_is_better": True},
                                 {"metric": "acc_norm", "aggregation": "mean", "higher_is_better": True}]}
    else:
        task |= {"output_type": "generate_until", "doc_to_target": "target", "target_delimiter": "",
                 "generation_kwargs": {"until": list(spec.stop), "max_gen_toks": spec.max_new_tokens,
                                       "do_sample": False},
                 "metric_list": [{"metric": "exact_match", "aggregation": "mean", "higher_is_better": True,
                                  "ignore_case": True, "ignore_punctuation": True}]}
    path = out_dir / f"{name}.yaml"
    write_text_atomic(path, yaml.safe_dump(task, sort_keys=False, allow_unicode=True))
    return path
