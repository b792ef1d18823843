"""Commonsense and reasoning tasks (multiple choice)."""

from __future__ import annotations

import re

from loraocean.tasks.converters.base import (
    RowError, choice_example, converter, get, key_index, label_index, question, text_list,
    with_options,
)

PICK = "Choose the correct answer."


def _keyed_choices(row: dict, field: str = "choices") -> tuple[list[str], list[str]]:
    """`{"text": [...], "label": [...]}` as ARC, OpenBookQA and CommonsenseQA serve it."""
    value = get(row, field, dict)
    texts = text_list(row, field, value.get("text"))
    keys = text_list(row, field, value.get("label"))
    if len(texts) != len(keys):
        raise RowError(field, f"{len(texts)} texts but {len(keys)} labels")
    return texts, keys


@converter("arc_challenge", "arc_easy")
def arc(row, id, task):
    # allenai/ai2_arc: id, question, choices{text, label}, answerKey; keys are letters (A-E) or,
    # for some rows, digits (1-4).
    texts, keys = _keyed_choices(row)
    label = key_index("answerKey", get(row, "answerKey"), keys)
    return choice_example(id, task, PICK, with_options(get(row, "question"), texts), texts, label,
                          source_id=get(row, "id"))


@converter("openbookqa")
def openbookqa(row, id, task):
    # allenai/openbookqa (main): id, question_stem, choices{text, label}, answerKey.
    texts, keys = _keyed_choices(row)
    label = key_index("answerKey", get(row, "answerKey"), keys)
    return choice_example(id, task, PICK, with_options(get(row, "question_stem"), texts), texts,
                          label, source_id=get(row, "id"))


@converter("commonsenseqa")
def commonsenseqa(row, id, task):
    # tau/commonsense_qa: id, question, question_concept, choices{label, text}, answerKey
    # (empty on the unlabeled test split).
    texts, keys = _keyed_choices(row)
    label = key_index("answerKey", get(row, "answerKey"), keys)
    return choice_example(id, task, PICK, with_options(get(row, "question"), texts), texts, label,
                          source_id=get(row, "id"), concept=get(row, "question_concept"))


@converter("boolq")
def boolq(row, id, task):
    # google/boolq: question (lower case, no '?'), answer (bool), passage.
    answer = get(row, "answer", bool)
    text = f"{get(row, 'passage').strip()}\n\nQuestion: {question(get(row, 'question'))}"
    return choice_example(id, task, "Read the passage and answer the question with yes or no.",
                          text, ["no", "yes"], int(answer))


@converter("piqa")
def piqa(row, id, task):
    # baber/piqa (PIQA): goal, sol1, sol2, label (0 or 1).
    choices = [get(row, "sol1"), get(row, "sol2")]
    label = label_index("label", get(row, "label", int), 2)
    return choice_example(id, task, "Choose the better way to reach the goal.",
                          with_options(f"Goal: {get(row, 'goal')}", choices), choices, label)


@converter("siqa")
def siqa(row, id, task):
    # lighteval/siqa (Social IQa): context, question, answerA, answerB, answerC, label ("1".."3").
    choices = [get(row, "answerA"), get(row, "answerB"), get(row, "answerC")]
    label = key_index("label", get(row, "label"), ["1", "2", "3"])
    text = f"{get(row, 'context').strip()}\nQuestion: {get(row, 'question').strip()}"
    return choice_example(id, task, PICK, with_options(text, choices), choices, label)


def _hellaswag_clean(text: str) -> str:
    # WikiHow contexts carry markup such as " [title]" and "[step]"; keep the words only.
    text = text.replace(" [title]", ". ")
    text = re.sub(r"\[[^\]]*\]", "", text)
    return re.sub(r"\s+", " ", text).strip()


@converter("hellaswag")
def hellaswag(row, id, task):
    # Rowan/hellaswag: ind, activity_label, ctx_a, ctx_b, ctx, endings (4), label ("0".."3",
    # empty on test).
    endings = [_hellaswag_clean(e) for e in text_list(row, "endings")]
    label = key_index("label", get(row, "label"), [str(i) for i in range(len(endings))])
    text = f"{get(row, 'activity_label').strip()}: {_hellaswag_clean(get(row, 'ctx'))}"
    return choice_example(id, task, "Choose the most likely continuation.",
                          with_options(text, endings), endings, label,
                          source_id=str(get(row, "ind", int)))


@converter("winogrande")
def winogrande(row, id, task):
    # allenai/winogrande (winogrande_xl): sentence with a '_' blank, option1, option2,
    # answer ("1" or "2"; empty on test).
    choices = [get(row, "option1"), get(row, "option2")]
    label = key_index("answer", get(row, "answer"), ["1", "2"])
    return choice_example(id, task, "Which option fills the blank (_)?",
                          with_options(get(row, "sentence"), choices), choices, label)


@converter("copa")
def copa(row, id, task):
    # aps/super_glue (copa): premise, choice1, choice2, question ("cause" or "effect"), idx, label.
    kind = get(row, "question")
    if kind not in ("cause", "effect"):
        raise RowError("question", f"expected 'cause' or 'effect', got {kind!r}")
    ask = "What was the cause?" if kind == "cause" else "What happened as a result?"
    choices = [get(row, "choice1"), get(row, "choice2")]
    label = label_index("label", get(row, "label", int), 2)
    text = with_options(f"{get(row, 'premise').strip()}\n{ask}", choices)
    return choice_example(id, task, PICK, text, choices, label, question=kind,
                          source_id=str(get(row, "idx", int)))


@converter("strategyqa")
def strategyqa(row, id, task):
    # ChilleD/StrategyQA: qid, term, description, question, answer (bool), facts, decomposition.
    answer = get(row, "answer", bool)
    return choice_example(id, task, "Answer the question with yes or no.", get(row, "question"),
                          ["no", "yes"], int(answer), source_id=get(row, "qid"),
                          facts=row.get("facts"))
