"""Topic, question-type and sentiment classification: AG News, TREC, IMDB."""

from __future__ import annotations

from loraocean.tasks.converters.base import choice_example, converter, get, label_index

# task -> (instruction, label field, class words in the hub's ClassLabel order)
CLASSES = {
    "ag_news": ("What is the topic of the news article? Answer World, Sports, Business or "
                "Sci/Tech.", "label", ["World", "Sports", "Business", "Sci/Tech"]),
    # coarse classes ABBR, ENTY, DESC, HUM, LOC, NUM
    "trec": ("What kind of answer does the question ask for? Answer abbreviation, entity, "
             "description, human, location or number.", "coarse_label",
             ["abbreviation", "entity", "description", "human", "location", "number"]),
    "imdb": ("What is the sentiment of the movie review? Answer negative or positive.", "label",
             ["negative", "positive"]),
}


@converter(*CLASSES)
def classify(row, id, task):
    # fancyzhx/ag_news: text, label (0-3); CogComp/trec: text, coarse_label (0-5), fine_label
    # (0-49); stanfordnlp/imdb (plain_text): text, label (0/1; -1 on the unsupervised split).
    instruction, field, classes = CLASSES[task]
    label = label_index(field, get(row, field, int), len(classes))
    extra = {"fine_label": get(row, "fine_label", int)} if task == "trec" else {}
    return choice_example(id, task, instruction, get(row, "text").strip(), classes, label, **extra)
