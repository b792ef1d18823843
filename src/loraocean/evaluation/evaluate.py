"""`evaluate`: one model on one task split, with per-example predictions and bootstrap CIs."""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field

from loraocean.errors import ConfigError, LoraOceanError
from loraocean.evaluation import metrics
from loraocean.evaluation.answer_nll import answer_nll
from loraocean.evaluation.choice import predict, score_choices
from loraocean.evaluation.generate import generate_texts
from loraocean.tasks.example import Example, TaskSpec
from loraocean.tasks.extract import extract, normalize_number
from loraocean.tasks.prompts import render, template_name

CONVENTIONS = ("lm-eval", "opencompass", "both")
# Choice rules of each convention (see choice.predict); the first is the convention's default.
CHOICE_RULES = {"lm-eval": ("lm-eval acc", "lm-eval acc_norm"),
                "opencompass": ("opencompass ppl", "opencompass ppl_masked")}
SHORT = {"acc": "lm-eval acc", "acc_norm": "lm-eval acc_norm", "ppl": "opencompass ppl",
         "ppl_masked": "opencompass ppl_masked"}


@dataclass
class EvalResult:
    """Headline `metric` = `value` [ci_low, ci_high] over `n` examples, plus every computed metric
    (`metrics`: name -> {value, ci_low, ci_high}) and one record per example (`predictions`)."""

    task: str
    metric: str
    value: float
    ci_low: float
    ci_high: float
    n: int
    convention: str
    majority_rate: float            # share of the most frequent gold answer in the split
    top_prediction_rate: float      # share of the most frequent prediction (a collapsed model shows)
    template: str
    metrics: dict = field(default_factory=dict)
    predictions: list = field(default_factory=list)

    def summary(self) -> dict:
        out = asdict(self)
        out.pop("predictions")
        return out

    def line(self) -> str:
        return (f"{self.task}: {self.metric} = {self.value:.4f} "
                f"(95% CI {self.ci_low:.4f}-{self.ci_high:.4f}, n={self.n}); "
                f"majority-label rate {self.majority_rate:.4f}")


def _with_ci(values, seed: int) -> dict:
    low, high = metrics.bootstrap_ci(values, seed=seed)
    return {"value": sum(values) / len(values), "ci_low": low, "ci_high": high}


def headline_name(mode: str, convention: str, metric: str | None, spec: TaskSpec) -> str:
    if mode == "generate":
        return metric or spec.metric
    if metric is None:
        return CHOICE_RULES["opencompass" if convention == "opencompass" else "lm-eval"][0]
    name = SHORT.get(metric, metric)
    allowed = [r for c, rules in CHOICE_RULES.items() if convention in (c, "both") for r in rules]
    if name not in allowed:
        raise ConfigError(f"metric {metric!r} is not computed under convention {convention!r}; "
                          f"use one of {', '.join(allowed)}")
    return name


def evaluate(model, tokenizer, spec: TaskSpec, examples: list[Example], convention: str = "lm-eval",
             batch_size: int = 16, metric: str | None = None, template: str = "auto", seed: int = 0,
             progress=None) -> EvalResult:
    """Score `examples` of task `spec`.

    Choice tasks: one likelihood pass, decided by the rules of `convention` (lm-eval, opencompass or
    both); the headline `metric` defaults to lm-eval acc (opencompass ppl under that convention).
    Generate tasks: greedy generation, the task's extraction, then its metric (exact_match / acc,
    f1). Bootstrap 95% CIs are seeded by `seed`.
    """
    if convention not in CONVENTIONS:
        raise ConfigError(f"unknown convention {convention!r}; use one of {', '.join(CONVENTIONS)}")
    if not examples:
        raise LoraOceanError(f"no examples to evaluate for task {spec.name!r}")
    headline = headline_name(spec.mode, convention, metric, spec)
    if spec.mode == "choice":
        per_metric, records = _choice(model, tokenizer, examples, convention, batch_size, template,
                                      progress)
        conv = convention
    else:
        per_metric, records = _generate(model, tokenizer, spec, examples, headline, batch_size,
                                        template, progress)
        conv = "generate"
    table = {name: _with_ci(vals, seed) for name, vals in per_metric.items()}
    top = Counter(str(r["prediction"]) for r in records).most_common(1)[0][1] / len(records)
    return EvalResult(task=spec.name, metric=headline, value=table[headline]["value"],
                      ci_low=table[headline]["ci_low"], ci_high=table[headline]["ci_high"],
                      n=len(examples), convention=conv,
                      majority_rate=metrics.majority_rate(ex.target for ex in examples),
                      top_prediction_rate=top, template=template_name(tokenizer, template),
                      metrics=table, predictions=records)


def _choice(model, tokenizer, examples, convention, batch_size, template, progress):
    for ex in examples:
        if not ex.choices or ex.label is None:
            raise LoraOceanError(f"example {ex.id!r} of task {ex.task!r} has no choices/label; "
                                 "it cannot be scored in choice mode")
    rules = [r for c, rs in CHOICE_RULES.items() if convention in (c, "both") for r in rs]
    scores = score_choices(model, tokenizer, examples, batch_size, template, progress,
                           context_nll=convention != "lm-eval")
    per_metric = {r: [] for r in rules}
    records = []
    for ex, sc in zip(examples, scores):
        picks = predict(sc, ex.choices)
        for r in rules:
            per_metric[r].append(float(picks[r] == ex.label))
        main = picks[rules[0]]
        records.append({
            "id": ex.id, "label": ex.label, "prediction": main, "correct": main == ex.label,
            "predictions": {r: picks[r] for r in rules},
            "logprobs": sc.logprobs, "n_tokens": sc.n_tokens,
            "context_tokens": sc.n_context,
        })
        if convention != "lm-eval":
            records[-1]["whole_ce"] = [sc.whole_ce(i) for i in range(len(ex.choices))]
    return per_metric, records


def gold_answers(ex: Example, extraction: str) -> list[str]:
    """Reference answers: the target (and `metadata['answers']` when a source lists several);
    for numeric tasks the normalized number (`metadata['answer']` when the source gives it)."""
    if extraction == "number":
        if ex.metadata.get("answer") is not None:
            return [normalize_number(str(ex.metadata["answer"])) or str(ex.metadata["answer"])]
        return [extract(ex.target, "number")]
    return [ex.target] + [a for a in ex.metadata.get("answers", []) if isinstance(a, str)]


def _generate(model, tokenizer, spec, examples, headline, batch_size, template, progress):
    if headline not in ("exact_match", "acc", "f1", "pass@1"):
        raise ConfigError(f"unknown metric {headline!r} for a generate task; use exact_match, acc, "
                          "f1 or pass@1")
    prompts = [render(ex, tokenizer, template).prompt for ex in examples]
    outputs = generate_texts(model, tokenizer, prompts, spec.max_new_tokens, spec.stop, batch_size,
                             progress)
    if headline == "pass@1":
        return _pass_at_1(examples, outputs)
    per_metric = {"exact_match": [], "f1": []}
    records = []
    for ex, text in zip(examples, outputs):
        answer = extract(text, spec.extraction)
        golds = gold_answers(ex, spec.extraction)
        em, f1 = metrics.exact_match(answer, golds), metrics.token_f1(answer, golds)
        per_metric["exact_match"].append(em)
        per_metric["f1"].append(f1)
        records.append({"id": ex.id, "output": text, "prediction": answer, "gold": golds,
                        "correct": bool(em), "f1": f1})
    per_metric["acc"] = per_metric["exact_match"]
    return per_metric, records


def _pass_at_1(examples, outputs):
    """Run each generated program against its task's tests in the sandbox (`evaluation.code`)
    (subprocess with time, memory and process limits, no network, temp dir)."""
    from loraocean.evaluation import code

    jobs = [(code.program_for(ex, text), ex.metadata["tests"], ex.metadata.get("entry_point"))
            for ex, text in zip(examples, outputs)]
    results = code.run_many(jobs)
    records = [{"id": ex.id, "output": text, "prediction": code.code_block(text),
                "correct": r.passed, "status": r.status, "detail": r.detail}
               for ex, text, r in zip(examples, outputs, results)]
    return {"pass@1": [float(r.passed) for r in results]}, records


def target_logprobs(model, tokenizer, examples: list[Example], batch_size: int = 16,
                    template: str = "auto") -> list[tuple[float, int]]:
    """Per example (sum log p(target tokens | prompt), number of target tokens): answer-only
    perplexity is exp(-sum / n). The prompt is masked; no end-of-sequence token is added."""
    return [(-nll, n) for nll, n in answer_nll(model, tokenizer, examples, batch_size, template)]
