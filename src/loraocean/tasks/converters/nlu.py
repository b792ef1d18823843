"""Natural-language understanding: GLUE (nyu-mll/glue) and SuperGLUE (aps/super_glue) tasks.

Labels are the integer class ids the hub serves (ClassLabel); the choices are short answer words
in the class order, and the data set's own class name is kept in metadata.
"""

from __future__ import annotations

from loraocean.tasks.converters.base import choice_example, converter, get, label_index

# task -> (instruction, input template, choice words, class names as the hub names them)
GLUE = {
    "sst2": ("What is the sentiment of the sentence? Answer negative or positive.",
             "{sentence}", ["negative", "positive"], ["negative", "positive"]),
    "cola": ("Is the sentence grammatically acceptable? Answer no or yes.",
             "{sentence}", ["no", "yes"], ["unacceptable", "acceptable"]),
    "mrpc": ("Do the two sentences mean the same thing? Answer no or yes.",
             "Sentence 1: {sentence1}\nSentence 2: {sentence2}", ["no", "yes"],
             ["not_equivalent", "equivalent"]),
    "qqp": ("Do the two questions ask the same thing? Answer no or yes.",
            "Question 1: {question1}\nQuestion 2: {question2}", ["no", "yes"],
            ["not_duplicate", "duplicate"]),
    "mnli": ("Does the premise entail the hypothesis? Answer yes, maybe or no.",
             "Premise: {premise}\nHypothesis: {hypothesis}", ["yes", "maybe", "no"],
             ["entailment", "neutral", "contradiction"]),
    "qnli": ("Does the sentence answer the question? Answer yes or no.",
             "Question: {question}\nSentence: {sentence}", ["yes", "no"],
             ["entailment", "not_entailment"]),
    "rte": ("Does the first sentence entail the second? Answer yes or no.",
            "Sentence 1: {sentence1}\nSentence 2: {sentence2}", ["yes", "no"],
            ["entailment", "not_entailment"]),
    "cb": ("Does the premise entail the hypothesis? Answer yes, no or maybe.",
           "Premise: {premise}\nHypothesis: {hypothesis}", ["yes", "no", "maybe"],
           ["entailment", "contradiction", "neutral"]),
    "wic": ("Is the word used with the same meaning in both sentences? Answer no or yes.",
            "Word: {word}\nSentence 1: {sentence1}\nSentence 2: {sentence2}", ["no", "yes"],
            ["False", "True"]),
}

# Text fields of each task (all served as str), read through `get` so their types are checked.
FIELDS = {"sst2": ["sentence"], "cola": ["sentence"], "mrpc": ["sentence1", "sentence2"],
          "qqp": ["question1", "question2"], "mnli": ["premise", "hypothesis"],
          "qnli": ["question", "sentence"], "rte": ["sentence1", "sentence2"],
          "cb": ["premise", "hypothesis"], "wic": ["word", "sentence1", "sentence2"]}


@converter(*GLUE)
def glue(row, id, task):
    instruction, template, choices, names = GLUE[task]
    values = {key: get(row, key).strip() for key in FIELDS[task]}
    label = label_index("label", get(row, "label", int), len(choices))
    extra = {}
    if task == "wic":  # character offsets of the word in each sentence
        extra = {k: get(row, k, int) for k in ("start1", "end1", "start2", "end2")}
    return choice_example(id, task, instruction, template.format(**values), choices, label,
                          label_name=names[label], source_id=str(get(row, "idx", int)), **extra)
