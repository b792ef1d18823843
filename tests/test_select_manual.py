"""The manual strategy's relevance map: the shipped one covers every catalog task and names only
known tasks; user maps with unknown names are refused with the names and lines."""

from __future__ import annotations


import pytest

from loraocean.errors import DataError, UnknownNameError
from loraocean.selection import ModelRef, select
from loraocean.selection.manual import SHIPPED, read_map
from loraocean.tasks import CATALOG
from loraocean.tasks.catalog import CATALOG_40
from conftest import stand_in_entry




def test_shipped_map_covers_the_catalog_and_names_only_known_tasks():
    relevance = read_map()  # raises on any name outside the catalog
    assert len(CATALOG_40) == 40
    missing = (set(CATALOG) | set(CATALOG_40)) - set(relevance)
    assert not missing, f"targets without related tasks: {sorted(missing)}"
    assert {t for t in CATALOG if t.startswith("bb_")} <= set(relevance)
    for target, related in relevance.items():
        names = [r.task for r in related]
        assert len(names) >= 4, target
        assert target not in names and len(set(names)) == len(names), target
        assert all(r.why.strip() and "\n" not in r.why for r in related), target
    # the paper's stated example, in its order: GSM8K -> MATH, MathQA, MMLU, DROP
    assert [r.task for r in relevance["gsm8k"]][:4] == ["math", "mathqa", "mmlu", "drop"]


def test_user_map_with_unknown_names_is_refused(tmp_path):
    path = tmp_path / "map.yaml"
    path.write_text("gsm8k:\n  math: fine\n  algebra_101: invented\nnot_a_target:\n  gsm8k: x\n")
    with pytest.raises(DataError) as err:
        read_map(path)
    text = str(err.value)
    assert str(path) in text
    assert "'algebra_101' (line 3, under gsm8k)" in text and "'not_a_target' (line 4, target)" in text

    path.write_text("gsm8k:\n  - math\n")
    with pytest.raises(DataError, match="line 2"):
        read_map(path)
    path.write_text("gsm8k: [unclosed\n")
    with pytest.raises(DataError, match="not valid YAML"):
        read_map(path)


def test_manual_ranks_mapped_tasks_then_category(tmp_path):
    root = tmp_path / "lib"
    tasks = ["bb_logical_deduction_five_objects", "bb_temporal_sequences", "bb_snarks", "bb_analogical_similarity",
             "bb_causal_judgment", "bb_emoji_movie"]
    for task in tasks:  # manual ranking reads only the cards
        stand_in_entry(root / "tiny-llama" / task, {"model": "tiny-llama", "task": task})
    user_map = tmp_path / "mine.yaml"
    user_map.write_text("bb_logical_deduction_three_objects:\n  bb_snarks: my own reason\n"
                        "  bb_temporal_sequences: orderings\n")
    ref = ModelRef("tiny-llama")
    # the ranking alone (the n-gram check is tested in test_tasks_overlap)
    shipped = select("bb_logical_deduction_three_objects", root, ref, k=3, strategy="manual", decontaminate=False)
    assert shipped.chosen == ["bb_logical_deduction_five_objects", "bb_temporal_sequences",
                              "bb_analogical_similarity"]
    # by default: the five-object puzzles come from the same generator and share 13-grams with 14%
    # of the three-object test puzzles ("the black book is to the left of the purple book the"):
    # left out, and the next related task takes its place
    clean = select("bb_logical_deduction_three_objects", root, ref, k=3, strategy="manual")
    assert list(clean.excluded) == ["bb_logical_deduction_five_objects"]
    assert clean.chosen == ["bb_temporal_sequences", "bb_analogical_similarity", "bb_causal_judgment"]
    mine = select("bb_logical_deduction_three_objects", root, ref, k=3, strategy="manual", map_file=user_map,
                  decontaminate=False)
    # mapped first (map order), then the target's category (reasoning), then the rest by name
    assert [c.task for c in mine.ranking] == ["bb_snarks", "bb_temporal_sequences", "bb_analogical_similarity",
                                              "bb_causal_judgment", "bb_logical_deduction_five_objects",
                                              "bb_emoji_movie"]
    assert mine.ranking[0].reason == "related: my own reason"
    assert "same category" in mine.ranking[2].reason and mine.options["map_file"] == str(user_map)
    with pytest.raises(UnknownNameError, match="bb_snarks"):
        select("bb_snarks", root, ref, k=1, strategy="manual", map_file=user_map)
    assert SHIPPED.is_file()
