"""Math: GSM8K, MATH, SVAMP (generate) and MathQA, AQuA-RAT (choice)."""

from __future__ import annotations

import ast
import re

from loraocean.tasks.converters.base import (
    RowError, choice_example, converter, get, key_index, text_list, with_options,
)
from loraocean.tasks.example import Example
from loraocean.tasks.extract import last_boxed, normalize_number

SOLVE = "Solve the math word problem. End with 'The answer is N.'"


@converter("gsm8k", "gsm8k_hub")
def gsm8k(row, id, task):
    # openai/gsm8k (main) and the PyPI copy: question, answer ("reasoning ... #### 42").
    question, answer = get(row, "question"), get(row, "answer")
    reasoning, sep, final = answer.rpartition("####")
    if not sep:
        raise RowError("answer", "answer has no '#### <number>' final line")
    final = final.strip().replace(",", "")
    # Calculator annotations <<a*b=c>> are GSM8K tooling, not language: drop them.
    reasoning = re.sub(r"<<[^>]*>>", "", reasoning).strip()
    return Example(id=id, task=task, instruction=SOLVE, input=question.strip(),
                   target=f"{reasoning}\nThe answer is {final}.", metadata={"answer": final})


@converter("math")
def math(row, id, task):
    # EleutherAI/hendrycks_math (one config per subject): problem, level, type, solution; the
    # final answer is the last \boxed{...} of the solution.
    solution = get(row, "solution")
    answer = last_boxed(solution)
    if answer is None:
        raise RowError("solution", "solution has no \\boxed{...} answer")
    return Example(id=id, task=task,
                   instruction="Solve the problem. Put the final answer in \\boxed{}.",
                   input=get(row, "problem").strip(), target=solution.strip(),
                   metadata={"answers": [answer], "level": get(row, "level"),
                             "subject": get(row, "type")})


@converter("svamp")
def svamp(row, id, task):
    # ChilleD/SVAMP: ID, Body, Question, Equation, Answer (float), Type, question_concat.
    value = get(row, "Answer", (float, int))
    answer = normalize_number(str(value))
    body, ask = get(row, "Body").strip(), get(row, "Question").strip()
    equation = get(row, "Equation").strip()
    return Example(id=id, task=task, instruction=SOLVE, input=f"{body} {ask}",
                   target=f"{equation} = {answer}\nThe answer is {answer}.",
                   metadata={"answers": [answer], "answer": answer, "equation": equation,
                             "type": get(row, "Type"), "source_id": get(row, "ID")})


def mathqa_options(text: str) -> list[str]:
    """MathQA's options string, 'a ) 38 , b ) 27.675 , c ) 30 , d ) data inadequate , e ) 28';
    a few rows serve a Python-list-looking string "['a ) 38', 'b ) 27.675', ...]" instead."""
    text = text.strip()
    if text.startswith("["):
        try:
            items = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            raise RowError("options", f"unreadable options list {text!r:.80}") from None
        text = " , ".join(str(i) for i in items)
    found = re.findall(r"(?:^|,)\s*([a-e])\s*\)\s*(.*?)\s*(?=,\s*[a-e]\s*\)|$)", text)
    if [k for k, _ in found] != list("abcde")[:len(found)] or len(found) < 2:
        raise RowError("options", f"expected 'a ) ... , b ) ...', got {text!r:.80}")
    return [v for _, v in found]


@converter("mathqa")
def mathqa(row, id, task):
    # regisss/math_qa (= allenai/math_qa): Problem, Rationale, options (one string), correct
    # ("a".."e"), annotated_formula, linear_formula, category.
    options = mathqa_options(get(row, "options"))
    label = key_index("correct", get(row, "correct"), list("abcde")[:len(options)])
    return choice_example(id, task, "Solve the problem and choose the correct option.",
                          with_options(get(row, "Problem").strip(), options), options, label,
                          category=get(row, "category"))


@converter("aqua_rat")
def aqua_rat(row, id, task):
    # deepmind/aqua_rat (raw): question, options (["A)21", "B)21.5", ...]), rationale, correct.
    raw = text_list(row, "options")
    keys, options = [], []
    for item in raw:
        match = re.match(r"\s*([A-E])\s*\)\s*(.*)", item, flags=re.DOTALL)
        if not match:
            raise RowError("options", f"option {item!r} does not start with 'A)'..'E)'")
        keys.append(match.group(1))
        options.append(match.group(2).strip())
    label = key_index("correct", get(row, "correct"), keys)
    return choice_example(id, task, "Solve the problem and choose the correct option.",
                          with_options(get(row, "question").strip(), options), options, label,
                          rationale=get(row, "rationale"))
