"""Knowledge: MMLU, TriviaQA, NaturalQuestions-open, TruthfulQA (mc1)."""

from __future__ import annotations

from loraocean.tasks.converters.base import (
    RowError, choice_example, converter, get, label_index, question, text_list, with_options,
)
from loraocean.tasks.example import Example

SHORT = "Answer the question with a short answer."


def _unique(items):
    return list(dict.fromkeys(items))


@converter("mmlu")
def mmlu(row, id, task):
    # cais/mmlu (all): question, subject, choices (4), answer (int 0-3).
    choices = text_list(row, "choices")
    label = label_index("answer", get(row, "answer", int), len(choices))
    subject = get(row, "subject")
    instruction = f"Choose the correct answer ({subject.replace('_', ' ')})."
    return choice_example(id, task, instruction, with_options(get(row, "question").strip(), choices),
                          choices, label, subject=subject)


@converter("triviaqa")
def triviaqa(row, id, task):
    # mandarjoshi/trivia_qa (rc.nocontext): question, question_id, question_source, entity_pages,
    # search_results, answer{aliases, normalized_aliases, value, normalized_value, type, ...}.
    answer = get(row, "answer", dict)
    value = answer.get("value")
    if not isinstance(value, str) or not value:
        raise RowError("answer.value", f"expected the answer text, got {value!r}")
    aliases = [a for a in answer.get("aliases") or [] if isinstance(a, str)]
    return Example(id=id, task=task, instruction=SHORT, input=get(row, "question").strip(),
                   target=value, metadata={"answers": _unique([value] + aliases),
                                           "source_id": get(row, "question_id")})


@converter("nq_open")
def nq_open(row, id, task):
    # google-research-datasets/nq_open: question (lower case, no '?'), answer (list of text).
    answers = text_list(row, "answer")
    return Example(id=id, task=task, instruction=SHORT, input=question(get(row, "question")),
                   target=answers[0], metadata={"answers": _unique(answers)})


@converter("truthfulqa_mc")
def truthfulqa_mc(row, id, task):
    # truthfulqa/truthful_qa (multiple_choice): question, mc1_targets{choices, labels} with
    # exactly one label 1 (the true answer), mc2_targets{choices, labels} (several true).
    mc1 = get(row, "mc1_targets", dict)
    choices = text_list(row, "mc1_targets", mc1.get("choices"))
    labels = mc1.get("labels")
    if (not isinstance(labels, list) or len(labels) != len(choices)
            or sorted(labels) != [0] * (len(labels) - 1) + [1]):
        raise RowError("mc1_targets.labels", "expected one 1 and 0s, one per choice, "
                                             f"got {labels!r:.80}")
    mc2 = row.get("mc2_targets") or {}
    return choice_example(id, task, "Choose the true answer.",
                          with_options(get(row, "question").strip(), choices), choices,
                          labels.index(1), mc2_targets=mc2)
