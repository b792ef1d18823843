"""The alpaca layout: `tasks export --to alpaca` then `tasks prepare --from` gives back the same
examples; plain alpaca files (as the Rocket / LoRAMoE repositories ship them) become choice
examples over the data's label set, or generation examples; bad records are named."""

from __future__ import annotations

import json

import pytest

from conftest import bigbench_task
from loraocean.errors import LoraOceanError
from loraocean.tasks import SPLITS, get_task, load_split
from loraocean.tasks.store import read_store
from test_moe_cli import run

RECORDS = [{"instruction": "Is the review positive or negative?", "input": f"review {i}",
            "output": ["positive", "negative"][i % 2]} for i in range(30)]


def test_export_then_prepare_gives_the_same_examples(tmp_path, capsys):
    task = bigbench_task("implicatures")
    code, out, err = run(["tasks", "export", task, str(tmp_path / "alpaca"), "--to", "alpaca"], capsys)
    assert code == 0, err
    rows = json.loads((tmp_path / "alpaca" / "train.json").read_text())
    assert set(rows[0]) == {"instruction", "input", "output", "id", "choices", "label"}
    code, _, err = run(["tasks", "prepare", task, "--from", str(tmp_path / "alpaca"),
                        "--out", str(tmp_path / "store")], capsys)
    assert code == 0, err
    _, splits = read_store(tmp_path / "store")
    for split in SPLITS:
        assert [e.to_dict() for e in splits[split]] == [e.to_dict() for e in load_split(task, split)]


def test_plain_alpaca_file_for_a_choice_task_uses_the_label_set(tmp_path, capsys):
    (tmp_path / "data.json").write_text(json.dumps(RECORDS))
    code, _, err = run(["tasks", "prepare", "sst2", "--from", str(tmp_path / "data.json"),
                        "--out", str(tmp_path / "store")], capsys)
    assert code == 0, err
    meta, splits = read_store(tmp_path / "store")
    assert sum(meta["counts"].values()) == 30  # one pool, split by the task's hash policy
    for ex in (e for s in SPLITS for e in splits[s]):
        n = int(ex.input.split()[1])
        assert ex.choices == ["negative", "positive"] and ex.choices[ex.label] == RECORDS[n]["output"]
        assert ex.instruction == RECORDS[n]["instruction"] and ex.target == RECORDS[n]["output"]


def test_split_files_for_a_generation_task(tmp_path):
    from loraocean.tasks.store import prepare

    for split, part in (("train", RECORDS[:20]), ("validation", RECORDS[20:25]), ("test", RECORDS[25:])):
        (tmp_path / "d").mkdir(exist_ok=True)
        (tmp_path / "d" / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in part))
    prepare(get_task("squad"), out=tmp_path / "store", from_path=tmp_path / "d")
    meta, splits = read_store(tmp_path / "store")
    assert meta["counts"] == {"train": 20, "dev": 5, "test": 5}
    assert splits["dev"][0].choices is None and splits["dev"][0].target == RECORDS[20]["output"]
    assert splits["test"][0].id == "squad-test-1"


def test_bad_records_name_file_line_and_field(tmp_path, capsys):
    bad = RECORDS[:3] + [{"instruction": "x", "input": 3, "output": "positive"}]
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in bad))
    code, _, err = run(["tasks", "prepare", "sst2", "--from", str(tmp_path)], capsys)
    assert code == 2 and "train.jsonl, line 4, field 'input'" in err
    many = [dict(r, output=f"label {i}") for i, r in enumerate(RECORDS * 2)]
    (tmp_path / "many.json").write_text(json.dumps(many))
    with pytest.raises(LoraOceanError, match="60 distinct outputs"):
        from loraocean.tasks.store import prepare

        prepare(get_task("sst2"), out=tmp_path / "o", from_path=tmp_path / "many.json")
