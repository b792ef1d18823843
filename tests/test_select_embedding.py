"""Embedding selection: a near-copy of the target task's data ranks first; embeddings are cached."""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import BIGBENCH, bigbench_task
from loraocean.selection import ModelRef, select
from conftest import stand_in_entry

TARGET = "bb_intent_recognition"


def near_copy(folder):
    """intent_recognition's task.json with every utterance reworded a little (written to tmp)."""
    data = json.loads((BIGBENCH / "intent_recognition" / "task.json").read_text())
    for ex in data["examples"]:
        ex["input"] = ex["input"].replace("Utterance:", "User said:").replace("Find", "Look up")
    folder.mkdir(parents=True)
    (folder / "task.json").write_text(json.dumps(data))
    return f"bigbench:{folder}"


def card(root, task, source=None):
    row = {"model": "tiny-llama", "task": task}
    if source:
        row["task_source"] = source
    stand_in_entry(root / "tiny-llama" / task, row)


@pytest.mark.min_versions  # the sentence-transformers model, loaded through the transformers floor
def test_embedding_ranks_near_copy_first(tmp_path, monkeypatch):
    monkeypatch.setenv("LORAOCEAN_HOME", str(tmp_path / "home"))
    bigbench_task("intent_recognition")  # fails clearly when ../shared is missing
    root = tmp_path / "lib"
    card(root, "near_copy_intents", near_copy(tmp_path / "data" / "near_copy_intents"))
    for task in ("bb_snarks", "bb_emoji_movie", "bb_social_iqa", "bb_logical_deduction_three_objects",
                 "bb_sports_understanding"):
        card(root, task)
    card(root, "bb_gone", "bigbench:/nonexistent/task")  # no data: ranked last, not fatal

    # the near copy holds the target's own test questions: the n-gram check leaves it out by default
    default = select(TARGET, root, ModelRef("tiny-llama"), k=2, strategy="random", seed=0)
    assert "near_copy_intents" in default.excluded
    # kept here, to check the embedding ranks it first
    sel = select(TARGET, root, ModelRef("tiny-llama"), k=2, strategy="embedding", shots=16, seed=0,
                 decontaminate=False)
    tasks = [c.task for c in sel.ranking]
    assert tasks[0] == "near_copy_intents"
    assert tasks[-1] == "bb_gone" and sel.ranking[-1].score is None
    scores = [c.score for c in sel.ranking[:-1]]
    assert scores == sorted(scores, reverse=True) and scores[0] > 0.9 > scores[1]
    cached = list((tmp_path / "home" / "selection" / "embeddings").glob("*.json"))
    assert len(cached) == 6

    # an independent computation of the top score with sentence-transformers directly
    from loraocean.selection.embedding import candidate_examples, embedder, example_text
    from loraocean.tasks import load_split

    def mean_vec(examples):
        v = embedder().encode([example_text(e) for e in examples], normalize_embeddings=True)
        return v.mean(0)

    target = mean_vec(load_split(TARGET, "train", limit=16, seed=0))
    class E:  # a library entry as the strategy sees it
        task, card = "near_copy_intents", {"task_source": f"bigbench:{tmp_path / 'data' / 'near_copy_intents'}"}
    other = mean_vec(candidate_examples(E, 16, 0))
    expected = float(target @ other / np.linalg.norm(target) / np.linalg.norm(other))
    assert sel.ranking[0].score == pytest.approx(expected, abs=1e-5)

    again = select(TARGET, root, ModelRef("tiny-llama"), k=2, strategy="embedding", shots=16, seed=0,
                   decontaminate=False)
    assert [c.score for c in again.ranking] == [c.score for c in sel.ranking]
