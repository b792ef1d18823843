"""No test data in the experts: 13-gram overlap (lm-eval's decontamination rule) between a LoRA's
training split and the target's test split, found on a planted overlap and excluded by selection;
tasks built from the same data (gsm8k and gsm8k_hub) are never candidates of each other."""

from __future__ import annotations

import json
import random

import pytest

from conftest import stand_in_entry
from loraocean.report.findings import contamination_blocks
from loraocean.selection import ModelRef, select
from loraocean.selection.candidates import candidates
from loraocean.study.config import candidates_for, parse
from loraocean.tasks import load_split, same_data
from loraocean.tasks import overlap as ov

WORDS = [f"w{i}" for i in range(5000)]


def write_task(root, name: str, inputs: list[str]) -> str:
    """A BIG-bench choice task folder; returns its `bigbench:` reference."""
    folder = root / name
    folder.mkdir(parents=True)
    rows = [{"input": text, "target_scores": {"yes": 1, "no": 0}} for text in inputs]
    (folder / "task.json").write_text(json.dumps({"name": name, "description": "planted", "examples": rows}))
    return f"bigbench:{folder}"


def sentences(rng, count: int) -> list[str]:
    return [" ".join(rng.choice(WORDS) for _ in range(40)) for _ in range(count)]


@pytest.fixture
def planted(tmp_path, monkeypatch):
    """A target task, a source that holds 12 of the target's test questions among its own 200, and a
    clean source; the planted questions the source's hash split puts in its train split are the
    ones that must be found."""
    monkeypatch.setenv("LORAOCEAN_HOME", str(tmp_path / "home"))
    rng = random.Random(5)
    target = write_task(tmp_path, "plant_target", sentences(rng, 120))
    test = load_split(target, "test")
    # copied with a prefix: an identical example would land in the source's test split too (the
    # split hashes the content), a reworded one anywhere; its 13-grams are the test question's
    planted = {f"Question {i}": ex for i, ex in enumerate(test[:12])}
    dirty = write_task(tmp_path, "plant_dirty", sentences(rng, 200) + [f"{k}: {ex.input}" for k, ex in planted.items()])
    clean = write_task(tmp_path, "plant_clean", sentences(rng, 200))
    expected = sorted(planted[ex.input.split(":")[0]].id for ex in load_split(dirty, "train")
                      if ex.input.startswith("Question "))
    assert 0 < len(expected) < 12  # the hash split put some planted questions in train, some not
    return target, dirty, clean, expected, test


def test_ngrams_are_lm_evals(capsys):
    from lm_eval.decontamination.janitor import Janitor, word_ngrams

    janitor = Janitor()
    for text in ["The quick, brown fox -- jumps over the lazy dog's back; again and AGAIN and again until night falls.",
                 "Short text.", "  spaces\tand\nnewlines  keep   words: a b c d e f g h i j k l m n o p"]:
        assert ov.ngrams(text) == set(word_ngrams(janitor.normalize_string(text), 13))
        assert ov.normalize(text) == janitor.normalize_string(text)


def test_planted_overlap_is_found(planted):
    target, dirty, clean, expected, test = planted
    found = ov.overlap(dirty, target)
    assert found.overlapping == len(expected) and found.test_examples == len(test)
    assert found.example_ids == expected[:5] and found.contaminated
    assert ov.overlap(clean, target).overlapping == 0
    # cached: a second look reads the file (the computation is not run again)
    import loraocean.tasks.overlap as module

    def boom(*args, **kwargs):
        raise AssertionError("recomputed")

    module_overlapping, module.overlapping = module.overlapping, boom
    try:
        assert ov.overlap(dirty, target).overlapping == len(expected)
    finally:
        module.overlapping = module_overlapping


def test_template_ngrams_are_not_overlap(tmp_path, monkeypatch):
    """A preamble every example of both tasks shares is the tasks' template, not test data."""
    monkeypatch.setenv("LORAOCEAN_HOME", str(tmp_path / "home"))
    rng = random.Random(9)
    preamble = "Read the following list of words carefully and then answer whether it is a good list: "
    target = write_task(tmp_path, "tmpl_target", [preamble + s for s in sentences(rng, 100)])
    source = write_task(tmp_path, "tmpl_source", [preamble + s for s in sentences(rng, 100)])
    assert len(ov.ngrams(preamble + "x")) > 0
    assert ov.overlap(source, target).overlapping == 0


def test_selection_excludes_the_contaminated_candidate(planted, tmp_path):
    target, dirty, clean, expected, test = planted
    root = tmp_path / "lib"
    for ref in (dirty, clean):
        name = "bb_" + ref.rsplit("/", 1)[1]
        stand_in_entry(root / "tiny-llama" / name, {"model": "tiny-llama", "task": name, "task_source": ref})
    sel = select(target, root, ModelRef("tiny-llama"), k=1, strategy="random")
    assert [c.task for c in sel.ranking] == ["bb_plant_clean"]
    assert list(sel.excluded) == ["bb_plant_dirty"]
    assert sel.excluded["bb_plant_dirty"]["overlapping"] == len(expected)
    kept = select(target, root, ModelRef("tiny-llama"), k=2, strategy="random", decontaminate=False)
    assert sorted(c.task for c in kept.ranking) == ["bb_plant_clean", "bb_plant_dirty"] and not kept.excluded
    with pytest.raises(Exception, match="bb_plant_dirty left out: their training data overlaps"):
        select(target, root, ModelRef("tiny-llama"), k=2, strategy="random")


def test_gsm8k_is_not_a_candidate_for_gsm8k_hub(tmp_path):
    assert same_data("gsm8k_hub") == {"gsm8k"} and "gsm8k_hub" in same_data("gsm8k")
    assert same_data("aqua_rat") == {"mathqa"} and same_data("qnli") == {"squad"}
    root = tmp_path / "lib"
    for task in ("gsm8k", "gsm8k_hub", "math", "svamp", "mathqa"):
        stand_in_entry(root / "tiny-llama" / task, {"model": "tiny-llama", "task": task})
    assert [e.task for e in candidates(root, "tiny-llama", "gsm8k_hub")] == ["math", "mathqa", "svamp"]
    assert "gsm8k_hub" not in [e.task for e in candidates(root, "tiny-llama", "gsm8k")]
    manual = select("gsm8k_hub", root, ModelRef("tiny-llama"), k=3, strategy="manual", decontaminate=False)
    assert manual.chosen == ["math", "mathqa", "svamp"]
    # a study's candidate list says the same
    cfg = parse({"name": "t", "models": ["tiny-llama"], "tasks": {"targets": ["gsm8k_hub"], "pool": ["gsm8k", "math", "svamp"]},
                 "methods": ["loramoe"], "selection": {"k": 2}})
    assert candidates_for(cfg, "gsm8k_hub") == ["math", "svamp"]


def test_report_lists_the_excluded_candidates(tmp_path):
    from loraocean.study.store import job_dir

    study = {"config": {"selection": {"decontaminate": True}},
             "jobs": [{"kind": "select", "key": "s1", "inputs": {"model": "m", "target": "t"}}]}
    job_dir(tmp_path, "select", "s1").mkdir(parents=True)
    (job_dir(tmp_path, "select", "s1") / "result.json").write_text(json.dumps({
        "excluded": {"bb_x": {"overlapping": 3, "test_examples": 60, "share": 0.05}}, "unchecked": ["siqa"]}))
    blocks = contamination_blocks(tmp_path, study)
    table = next(b[1] for b in blocks if b[0] == "table")
    assert table.rows == [["m", "t", "bb_x", "3 of 60", "5.0"]]
    assert any(b[0] == "p" and "siqa for t" in b[1] for b in blocks)
