"""The transfer atlas: its matrix against per-pair `evaluate` calls, the cell cache, the oracle and
the strategies' scores against it by hand, and the `atlas` command."""

from __future__ import annotations

import csv
import json
import shutil

import pytest
from scipy.stats import kendalltau, spearmanr

from loraocean.selection import ModelRef
from loraocean.selection.atlas import BASE, Atlas, build, compare, oracle
from test_select import make_lora

TARGETS = ["bb_social_iqa", "bb_snarks"]
LORAS = ["bb_emoji_movie", "bb_snarks", "bb_social_iqa", "bb_winowhy", "siqa"]  # siqa shares bb_social_iqa's data


@pytest.fixture(scope="module")
def atlas_library(tmp_path_factory, tiny_llama):
    model, _ = tiny_llama
    root = tmp_path_factory.mktemp("atlas-lib")
    for i, task in enumerate(LORAS):
        make_lora(model, root / "tiny-llama" / task, task, seed=10 + i)
    return root


def test_matrix_equals_per_pair_evaluate_and_a_rerun_evaluates_nothing(atlas_library, tiny_llama, tmp_path):
    from peft import PeftModel

    from loraocean.evaluation import evaluate
    from loraocean.tasks import get_task, load_split

    model, tokenizer = tiny_llama
    targets = ["bb_snarks", "bb_sports_understanding"]  # short two-choice questions: a fast test
    atlas = build(atlas_library, ModelRef("tiny-llama", model, tokenizer), targets, tmp_path / "cells",
                  limit=3, batch_size=4)
    assert atlas.rows == [BASE] + LORAS and atlas.targets == targets
    assert atlas.evaluated == len(atlas.rows) * len(targets)
    for target in targets:
        spec = get_task(target)
        dev = load_split(spec, "dev", limit=3, seed=0)
        assert atlas.n[target] == len(dev) == 3
        assert atlas.value[(BASE, target)] == evaluate(model, tokenizer, spec, dev, batch_size=2).value
        for task in LORAS:  # PEFT's own loader, other batches: an independent path
            peft = PeftModel.from_pretrained(model, str(atlas_library / "tiny-llama" / task))
            want = evaluate(peft, tokenizer, spec, dev, batch_size=2).value
            peft.unload()
            assert atlas.value[(task, target)] == pytest.approx(want, abs=1e-12), (task, target)

    fresh = ModelRef("tiny-llama")  # never loaded: every cell comes from the cache
    again = build(atlas_library, fresh, targets, tmp_path / "cells", limit=3, batch_size=4)
    assert again.evaluated == 0 and again.value == atlas.value and fresh._pair is None
    # another limit is other data: new cells
    other = build(atlas_library, ModelRef("tiny-llama", model, tokenizer), ["bb_snarks"], tmp_path / "cells",
                  limit=2, batch_size=4)
    assert other.evaluated == len(atlas.rows)
    # a new LoRA and a retrained one (other weights, other checksum): only their rows are evaluated
    grown = tmp_path / "grown"
    shutil.copytree(atlas_library, grown)
    make_lora(model, grown / "tiny-llama" / "bb_implicatures", "bb_implicatures", seed=99)
    make_lora(model, grown / "tiny-llama" / "bb_winowhy", "bb_winowhy", seed=98)
    third = build(grown, ModelRef("tiny-llama", model, tokenizer), targets, tmp_path / "cells", limit=3,
                  batch_size=4)
    assert third.evaluated == 2 * len(targets)
    assert all(third.value[(row, t)] == atlas.value[(row, t)] for row in atlas.rows if row != "bb_winowhy"
               for t in targets)


def hand_atlas(library) -> Atlas:
    scores = {"bb_social_iqa": {BASE: 0.3, "bb_emoji_movie": 0.6, "bb_snarks": 0.5, "bb_social_iqa": 1.0,
                                "bb_winowhy": 0.8, "siqa": 0.9},
              "bb_snarks": {BASE: 0.4, "bb_emoji_movie": 0.2, "bb_snarks": 0.9, "bb_social_iqa": 0.7,
                            "bb_winowhy": 0.2, "siqa": 0.1}}
    return Atlas("tiny-llama", str(library), "dev", 6, 0, "lm-eval", TARGETS, [BASE] + LORAS,
                 {(row, t): v for t, col in scores.items() for row, v in col.items()},
                 {t: "acc" for t in TARGETS}, {t: 6 for t in TARGETS})


def test_oracle_and_regret_match_a_hand_computation(atlas_library):
    atlas = hand_atlas(atlas_library)
    # bb_social_iqa's own LoRA (1.0) and siqa's (0.9, same data) are no candidates
    best = oracle(atlas, "bb_social_iqa", k=2)
    assert best.chosen == ["bb_winowhy", "bb_emoji_movie"] and best.uses_target_labels
    assert [c.task for c in best.ranking] == ["bb_winowhy", "bb_emoji_movie", "bb_snarks"]
    # ties (0.2) by task name; bb_snarks' own LoRA left out
    assert oracle(atlas, "bb_snarks", k=2).chosen == ["bb_social_iqa", "bb_emoji_movie"]

    scored = compare(atlas, ModelRef("tiny-llama"), 2, ["manual", "random", "oracle"], shots=2)
    assert set(scored) == set(TARGETS)
    top = {"bb_social_iqa": {"bb_winowhy", "bb_emoji_movie"}, "bb_snarks": {"bb_social_iqa", "bb_emoji_movie"}}
    best_mean = {"bb_social_iqa": (0.8 + 0.6) / 2, "bb_snarks": (0.7 + 0.2) / 2}
    for target, rows in scored.items():
        assert [r["strategy"] for r in rows] == ["manual", "random"]
        for r in rows:
            col = atlas.column(target)
            assert r["regret"] == pytest.approx(best_mean[target] - sum(col[t] for t in r["chosen"]) / 2)
            assert r["precision_at_k"] == len(set(r["chosen"]) & top[target]) / 2
    # the rank correlations: the strategy's full ranking against the atlas scores, by scipy directly
    from loraocean.selection import select

    sel = select("bb_social_iqa", atlas_library, "tiny-llama", k=2, strategy="random", shots=2)
    row = next(r for r in scored["bb_social_iqa"] if r["strategy"] == "random")
    order = [c.task for c in sel.ranking]
    dev = [atlas.value[(t, "bb_social_iqa")] for t in order]
    assert row["chosen"] == sel.chosen
    assert row["spearman"] == pytest.approx(spearmanr(range(len(order), 0, -1), dev).statistic)
    assert row["kendall"] == pytest.approx(kendalltau(range(len(order), 0, -1), dev).statistic)


def test_cli_writes_csv_png_json(atlas_library, tmp_path, capsys):
    from loraocean.cli import main

    out = tmp_path / "atlas"
    with pytest.raises(SystemExit) as exit_info:
        main(["atlas", "--library", str(atlas_library), "--model", "tiny-llama", "--targets", ",".join(TARGETS),
              "--out", str(out), "--limit", "4", "--k", "2", "--strategies", "random,manual", "--shots", "2",
              "--batch-size", "4"])
    assert exit_info.value.code == 0, capsys.readouterr().err
    assert "transfer atlas" in capsys.readouterr().out
    doc = json.loads((out / "atlas.json").read_text())
    with open(out / "atlas.csv", newline="") as fh:
        table = list(csv.reader(fh))
    assert table[0] == ["lora", *TARGETS]
    assert [r[0] for r in table[1:]] == [BASE, *LORAS, "n"]
    for r in table[1:-1]:
        assert [float(x) for x in r[1:]] == [doc["matrix"][r[0]][t] for t in TARGETS]
    assert table[-1][1:] == ["4", "4"] and doc["n"] == {t: 4 for t in TARGETS}
    assert (out / "atlas.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert set(doc["against_oracle"]) == set(TARGETS) and doc["k"] == 2
    assert "siqa" not in doc["oracle"]["bb_social_iqa"] and "bb_social_iqa" not in doc["oracle"]["bb_social_iqa"]
    assert len(list((out / "cells").glob("*.json"))) == len(doc["rows"]) * len(TARGETS)


def test_cli_bad_input_exits_2(atlas_library, tmp_path, capsys):
    from loraocean.cli import main

    empty = tmp_path / "empty"
    empty.mkdir()
    cases = [
        (["--targets", "no_such_task"], "no_such_task"),
        (["--model", "tiny-gpt2"], "no adapters for model"),
        (["--library", str(tmp_path / "missing")], "does not exist"),
        (["--library", str(empty)], "no adapters for model"),
        (["--strategies", "nope"], "unknown selection strategy"),
        (["--targets", ","], "--targets is empty"),
    ]
    for extra, message in cases:
        argv = ["atlas", "--library", str(atlas_library), "--model", "tiny-llama", "--targets", "bb_snarks",
                "--out", str(tmp_path / "out"), "--limit", "2", "--strategies", "none", *extra]
        with pytest.raises(SystemExit) as exit_info:
            main(argv)
        err = capsys.readouterr().err
        assert exit_info.value.code == 2, err
        assert message in err and err.count("\n") == 1 and "Traceback" not in err
