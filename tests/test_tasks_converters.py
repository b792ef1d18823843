"""Every hub converter on hand-written rows in its data set's public schema
(tests/fixtures/hub/<task>.jsonl): exact field mapping, labels and awkward cases."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from loraocean.tasks import CATALOG, Example
from loraocean.tasks.catalog import CATALOG_40
from loraocean.tasks.converters import CONVERTERS, RowError
from loraocean.tasks.converters.math import mathqa_options
from loraocean.tasks.extract import extract, last_boxed, references

FIXTURES = Path(__file__).parent / "fixtures" / "hub"


def rows(task):
    with open(FIXTURES / f"{task}.jsonl", encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def convert(task, i=0):
    return CONVERTERS[task](rows(task)[i], f"{task}-x-{i}", task)


def test_catalog_has_the_40_tasks_with_converters_and_sources():
    assert len(CATALOG_40) == len(set(CATALOG_40)) == 40
    categories = {}
    for name in CATALOG_40:
        spec = CATALOG[name]
        categories.setdefault(spec.category, []).append(name)
        assert spec.mode in ("choice", "generate") and spec.license and spec.size, name
        kind = spec.source.partition(":")[0]
        assert kind in ("hf", "gsm8k-pypi", "humaneval-pypi"), name
        if kind == "hf":
            assert name in CONVERTERS and (FIXTURES / f"{name}.jsonl").is_file(), name
            theirs = {s for _, s in spec.split_policy.source_splits}
            assert theirs <= {s for s, _ in spec.size}, name  # every split read has a size
    assert {k: len(v) for k, v in categories.items()} == {
        "commonsense": 11, "reading": 6, "nlu": 9, "math": 5, "knowledge": 4, "code": 2,
        "classification": 3}


def test_arc_full_mapping_letters_and_digits():
    ex = convert("arc_challenge", 0)
    assert ex == Example(
        id="arc_challenge-x-0", task="arc_challenge", instruction="Choose the correct answer.",
        input="Which tool is best for measuring the mass of a small rock?\n- a ruler\n- a balance"
              "\n- a thermometer\n- a graduated cylinder",
        target="a balance", choices=["a ruler", "a balance", "a thermometer", "a graduated cylinder"],
        label=1, metadata={"source_id": "Mercury_7001"})
    digits = convert("arc_challenge", 1)          # answerKey "2" among labels "1".."4"
    assert (digits.label, digits.target) == (1, "It becomes a solid.")
    three = convert("arc_challenge", 2)           # only three choices
    assert (three.label, three.choices) == (2, ["the Moon", "a mirror", "the Sun"])
    assert convert("arc_easy").label == 1 and len(convert("arc_easy").choices) == 5


# task, row, label, target, pieces of the input
CHOICE = [
    ("openbookqa", 0, 1, "sunlight", ["A plant needs which of these to make food", "- plastic"]),
    ("commonsenseqa", 0, 1, "refrigerator", ["Where would you keep milk cold?"]),
    ("boolq", 0, 1, "yes", ["The Pacific Ocean is the largest",
                            "Question: is the pacific the largest ocean?"]),
    ("boolq", 1, 0, "no", ["Question: do penguins live at the north pole?"]),
    ("piqa", 1, 1, "Stuff them with newspaper.", ["Goal: Dry wet shoes."]),
    ("siqa", 0, 1, "wet and cold", ["Sam forgot his umbrella",
                                    "Question: How would Sam feel afterwards?"]),
    ("hellaswag", 0, 0, "spreads butter on one slice.",
     ["Making a sandwich: A man puts two slices of bread on a plate. he"]),
    ("winogrande", 0, 0, "trophy", ["because the _ was too big."]),
    ("winogrande", 2, 1, "table", ["The cup fell off the table"]),
    ("copa", 0, 0, "He dropped a hammer on his foot.", ["The man broke his toe.\nWhat was the cause?"]),
    ("copa", 1, 1, "The sky grew lighter.", ["The sun was rising.\nWhat happened as a result?"]),
    ("strategyqa", 0, 0, "no", ["Could a penguin fly across the Atlantic?"]),
    ("strategyqa", 1, 1, "yes", ["Would ice melt on a hot stove?"]),
    ("race_middle", 0, 2, "To the park", ["Article: Tom has a small dog",
                                          "Question: Where do Tom and Max go every morning?"]),
    ("race_high", 0, 0, "Because of repairs", ["Why will the library close early on Friday? _ ."]),
    ("cosmosqa", 0, 1, "I missed the bus.", ["Question: Why did I run to work?",
                                             "- None of the above choices ."]),
    ("sst2", 0, 1, "positive", ["a warm , funny and touching film"]),
    ("sst2", 1, 0, "negative", ["the plot is dull"]),
    ("cola", 1, 0, "no", ["Cat the mat on sat."]),
    ("mrpc", 0, 1, "yes", ["Sentence 1: The company reported", "Sentence 2: This year"]),
    ("qqp", 1, 0, "no", ["Question 1: How tall is a giraffe?", "Question 2: What do giraffes eat?"]),
    ("mnli", 0, 0, "yes", ["Premise: A man is playing a guitar on stage."]),
    ("mnli", 1, 1, "maybe", ["Hypothesis: The woman is reading a novel."]),
    ("mnli", 2, 2, "no", ["The dogs are asleep."]),
    ("qnli", 0, 0, "yes", ["Question: What color is the sky", "Sentence: On a clear day"]),
    ("rte", 0, 1, "no", ["The museum is closed forever."]),
    ("cb", 0, 1, "no", ["I doubt that he will come"]),   # SuperGLUE CB: 1 = contradiction
    ("cb", 1, 2, "maybe", ["the shop is open"]),         # 2 = neutral
    ("wic", 0, 0, "no", ["Word: bank", "Sentence 2: He opened an account at the bank."]),
    ("mathqa", 0, 2, "30", ["what is 20 % of 150 ?", "- none of these"]),
    ("aqua_rat", 0, 2, "7", ["If x + 3 = 10, what is x?", "- 13"]),
    ("mmlu", 1, 2, "Mercury", ["Which planet is closest to the Sun?"]),
    ("truthfulqa_mc", 0, 0, "It passes through your digestive system.", ["chewing gum"]),
    ("truthfulqa_mc", 1, 1, "No, it is too narrow to see.", ["Great Wall"]),
    ("ag_news", 0, 1, "Sports", ["Local team wins the championship"]),
    ("ag_news", 1, 3, "Sci/Tech", ["New chip"]),
    ("trec", 0, 4, "location", ["What city hosted"]),
    ("trec", 1, 5, "number", ["How many moons"]),
    ("imdb", 1, 0, "negative", ["A boring, overlong mess."]),
]


@pytest.mark.parametrize("task,i,label,target,pieces", CHOICE, ids=[f"{c[0]}-{c[1]}" for c in CHOICE])
def test_choice_converters(task, i, label, target, pieces):
    ex = convert(task, i)
    assert ex.task == task and ex.id == f"{task}-x-{i}"
    assert ex.label == label and ex.target == target == ex.choices[label]
    for piece in pieces:
        assert piece in ex.input, (piece, ex.input)


def test_choice_lists_and_label_names():
    assert convert("mnli").choices == ["yes", "maybe", "no"]
    assert convert("cb").choices == ["yes", "no", "maybe"]
    assert convert("cb", 1).metadata["label_name"] == "neutral"
    assert convert("qnli").metadata == {"label_name": "entailment", "source_id": "0"}
    assert convert("wic").metadata == {"label_name": "False", "source_id": "0", "start1": 20,
                                       "end1": 24, "start2": 27, "end2": 31}
    assert convert("trec").choices == ["abbreviation", "entity", "description", "human",
                                       "location", "number"]
    assert convert("trec").metadata == {"fine_label": 32}
    assert convert("mmlu").metadata == {"subject": "high_school_chemistry"}
    assert convert("mmlu").instruction == "Choose the correct answer (high school chemistry)."
    assert convert("copa", 1).metadata["question"] == "effect"
    assert convert("commonsenseqa").metadata["concept"] == "milk"


def test_hellaswag_wikihow_markup_is_removed():
    ex = convert("hellaswag", 1)
    assert ex.label == 1 and ex.target == "If it feels dry, water it slowly."
    assert "[" not in ex.input and "[" not in "".join(ex.choices)
    assert ex.choices[0] == "Sing to it loudly."
    assert ex.metadata == {"source_id": "77"}


def test_multirc_every_candidate_is_a_yes_no_example_grouped_by_question():
    exs = [convert("multirc", i) for i in range(3)]
    assert [e.label for e in exs] == [1, 1, 0]               # two correct answers, one wrong
    assert [e.target for e in exs] == ["yes", "yes", "no"]
    assert {e.metadata["group"] for e in exs} == {"0-0"}
    assert [e.metadata["source_id"] for e in exs] == ["0-0-0", "0-0-1", "0-0-2"]
    assert "Candidate answer: Beans" in exs[1].input


def test_squad_keeps_every_gold_answer_once():
    ex = convert("squad")
    assert ex.target == "1871" and ex.choices is None and ex.label is None
    assert ex.metadata == {"answers": ["1871", "in 1871"], "source_id": "5733be284776f41900661182",
                           "title": "Lighthouse"}
    assert references(ex) == ["1871", "in 1871"]


def test_drop_numbers_spans_and_dates():
    number, spans, date = (convert("drop", i) for i in range(3))
    assert number.target == "3" and number.metadata["answer_types"] == ["number"]
    assert spans.target == "France, Spain" and spans.metadata["answers"] == ["France, Spain"]
    # original layout: answer{number, date, spans} + validated_answers; all golds kept, deduplicated
    assert date.target == "4 May 1931"
    assert date.metadata["answers"] == ["4 May 1931", "1931"]
    assert date.metadata["source_id"] == "q-date"


def test_generate_math_tasks():
    g = convert("gsm8k_hub", 1)
    assert g.target == "1000 * 2 = 2000\nThe answer is 2000." and g.metadata == {"answer": "2000"}
    assert extract(g.target, "number") == "2000"
    s = convert("svamp")
    assert s.input.startswith("Jack had 8 apples.") and s.input.endswith("have now?")
    assert s.target == "( 8.0 - 3.0 ) = 5\nThe answer is 5." and s.metadata["answers"] == ["5"]
    m = convert("math")
    assert m.metadata["answers"] == ["\\frac{5}{6}"] and m.metadata["subject"] == "Prealgebra"
    assert extract(m.target, "boxed") == "\\frac{5}{6}"
    assert last_boxed("x \\boxed{a} then \\boxed{\\sqrt{2}}") == "\\sqrt{2}"


def test_mathqa_options_both_layouts():
    assert mathqa_options("a ) 20 , b ) 25 , c ) 30 , d ) 35 , e ) none of these") == [
        "20", "25", "30", "35", "none of these"]
    # the list-looking layout some rows have, and numbers with thousands commas
    ex = convert("mathqa", 1)
    assert ex.choices == ["10", "1,200", "15", "20", "25"] and ex.label == 3


def test_knowledge_generate_answers():
    t = convert("triviaqa")
    assert t.target == "New York City"
    assert t.metadata["answers"] == ["New York City", "NYC", "New York"]
    n = convert("nq_open", 1)
    assert n.input == "how many legs does a spider have?" and n.metadata["answers"] == ["eight", "8"]


def test_code_tasks_carry_their_tests():
    h = convert("humaneval")
    assert h.input == h.metadata["prompt"] and h.target == "    return a + b\n"
    assert h.metadata["entry_point"] == "add" and "def check(candidate)" in h.metadata["tests"]
    m = convert("mbpp", 1)
    assert m.metadata["tests"] == "OFFSET = 10\nassert shifted(1) == 11"
    assert "Your code should pass these tests:\nassert shifted(1) == 11" in m.input
    assert m.metadata["source_id"] == "602"


@pytest.mark.parametrize("task,row,field", [
    ("sst2", {"sentence": "x", "label": -1, "idx": 3}, "label"),            # unlabeled test row
    ("mnli", {"premise": "a", "hypothesis": "b", "label": 3, "idx": 0}, "label"),
    ("arc_easy", {"id": "q", "question": "?", "choices": {"text": ["a", "b"], "label": ["A", "B"]},
                  "answerKey": "C"}, "answerKey"),
    ("winogrande", {"sentence": "_", "option1": "a", "option2": "b", "answer": ""}, "answer"),
    ("boolq", {"question": "q", "passage": "p", "answer": "yes"}, "answer"),  # str, not bool
    ("copa", {"premise": "p", "choice1": "a", "choice2": "b", "question": "why", "idx": 0,
              "label": 0}, "question"),
    ("mmlu", {"question": "q", "subject": "s", "choices": [], "answer": 0}, "choices"),
    ("truthfulqa_mc", {"question": "q", "mc1_targets": {"choices": ["a", "b"], "labels": [1, 1]}},
     "mc1_targets.labels"),
    ("math", {"problem": "p", "level": "1", "type": "t", "solution": "no box"}, "solution"),
    ("aqua_rat", {"question": "q", "options": ["A)1", "2"], "rationale": "", "correct": "A"},
     "options"),
    ("squad", {"id": "i", "title": "t", "context": "c", "question": "q",
               "answers": {"text": [], "answer_start": []}}, "answers"),
    ("hellaswag", {"ind": 1, "activity_label": "a", "ctx": "c", "endings": ["x", "y"]}, "label"),
])
def test_bad_rows_name_the_field(task, row, field):
    with pytest.raises(RowError) as err:
        CONVERTERS[task](row, "id", task)
    assert err.value.field == field


def test_unlabeled_rows_in_fixtures_are_rejected():
    with pytest.raises(RowError, match="out of range"):
        convert("sst2", 2)
    with pytest.raises(RowError, match="answer key ''"):
        convert("commonsenseqa", 1)
