"""Reading comprehension: RACE, SQuAD, DROP, MultiRC, CosmosQA."""

from __future__ import annotations

from loraocean.tasks.converters.base import (
    RowError, choice_example, converter, get, key_index, label_index, text_list, with_options,
)
from loraocean.tasks.example import Example

READ = "Read the text and answer the question."
PICK_READ = "Read the article and choose the correct answer."


def _unique(items: list[str]) -> list[str]:
    seen: list[str] = []
    for item in items:
        if item not in seen:
            seen.append(item)
    return seen


@converter("race_middle", "race_high")
def race(row, id, task):
    # ehovy/race (middle | high): example_id, article, answer ("A".."D"), question, options (4).
    options = text_list(row, "options")
    label = key_index("answer", get(row, "answer"), "ABCDEFGH"[:len(options)])
    text = f"Article: {get(row, 'article').strip()}\n\nQuestion: {get(row, 'question').strip()}"
    return choice_example(id, task, PICK_READ, with_options(text, options), options, label,
                          source_id=get(row, "example_id"))


@converter("squad")
def squad(row, id, task):
    # rajpurkar/squad (plain_text): id, title, context, question, answers{text, answer_start}.
    answers = get(row, "answers", dict)
    texts = text_list(row, "answers", answers.get("text"))
    text = f"{get(row, 'context').strip()}\n\nQuestion: {get(row, 'question').strip()}"
    return Example(id=id, task=task, instruction=READ + " Answer with a short span of the text.",
                   input=text, target=texts[0],
                   metadata={"answers": _unique(texts), "source_id": get(row, "id"),
                             "title": get(row, "title")})


def _drop_answer(answer: dict, field: str) -> str:
    """One DROP answer (number | date | spans, as in the original release) as text."""
    if not isinstance(answer, dict):
        raise RowError(field, f"expected an answer object, got {answer!r:.60}")
    number = answer.get("number") or ""
    if number:
        return str(number)
    spans = answer.get("spans") or []
    if spans:
        return ", ".join(spans)
    date = answer.get("date") or {}
    text = " ".join(str(date.get(k) or "") for k in ("day", "month", "year")).split()
    if not text:
        raise RowError(field, "answer has no number, spans or date")
    return " ".join(text)


@converter("drop")
def drop(row, id, task):
    """DROP. Source ucinlp/drop: section_id, query_id, passage, question,
    answers_spans{spans, types} where types say number/date/span; a multi-span answer is all its
    spans. Rows in the original release layout (answer{number, date{day, month, year}, spans},
    validated_answers) are read too; then every validated answer is kept."""
    if "answers_spans" in row:
        value = get(row, "answers_spans", dict)
        spans = text_list(row, "answers_spans", value.get("spans"))
        answers = [", ".join(spans)]
        types = list(value.get("types") or [])
    else:
        answers = [_drop_answer(get(row, "answer", dict), "answer")]
        validated = row.get("validated_answers") or {}
        numbers = validated.get("number") or []
        for i in range(len(numbers)):
            answers.append(_drop_answer({"number": numbers[i],
                                         "date": (validated.get("date") or [{}] * len(numbers))[i],
                                         "spans": (validated.get("spans") or [[]] * len(numbers))[i]},
                                        "validated_answers"))
        types = []
    text = f"{get(row, 'passage').strip()}\n\nQuestion: {get(row, 'question').strip()}"
    return Example(id=id, task=task, instruction=READ + " Answer with a number, a date or a span.",
                   input=text, target=answers[0],
                   metadata={"answers": _unique(answers), "answer_types": types,
                             "source_id": get(row, "query_id")})


@converter("multirc")
def multirc(row, id, task):
    """aps/super_glue (multirc): paragraph, question, answer, idx{paragraph, question, answer},
    label (0/1). One row per candidate answer; a question has several, and any number of them
    can be correct. Each row becomes a yes/no example; `group` (paragraph-question) keeps a
    question's candidates together when dev is carved out, and lets a metric score whole
    questions (exact match over all its candidates)."""
    idx = get(row, "idx", dict)
    for key in ("paragraph", "question", "answer"):
        if isinstance(idx.get(key), bool) or not isinstance(idx.get(key), int):
            raise RowError(f"idx.{key}", f"expected an integer, got {idx.get(key)!r}")
    label = label_index("label", get(row, "label", int), 2)
    text = (f"{get(row, 'paragraph').strip()}\n\nQuestion: {get(row, 'question').strip()}\n"
            f"Candidate answer: {get(row, 'answer').strip()}")
    return choice_example(id, task, "Read the paragraph. Is the candidate answer correct? "
                          "Answer yes or no.", text, ["no", "yes"], label,
                          group=f"{idx['paragraph']}-{idx['question']}",
                          source_id=f"{idx['paragraph']}-{idx['question']}-{idx['answer']}")


@converter("cosmosqa")
def cosmosqa(row, id, task):
    # allenai/cosmos_qa: id, context, question, answer0..answer3, label (int; -1 on test).
    choices = [get(row, f"answer{i}") for i in range(4)]
    label = label_index("label", get(row, "label", int), 4)
    text = f"{get(row, 'context').strip()}\n\nQuestion: {get(row, 'question').strip()}"
    return choice_example(id, task, READ, with_options(text, choices), choices, label,
                          source_id=get(row, "id"))
