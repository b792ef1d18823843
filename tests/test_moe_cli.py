"""`loraocean moe fit|show|routing|methods` end to end on a tiny library, and `loraocean eval`
accepting the checkpoint."""

from __future__ import annotations

import json
import re

import pytest

from conftest import SMOKE_TASKS
from loraocean.cli import main

TASKS = SMOKE_TASKS


def run(args, capsys) -> tuple[int, str, str]:
    try:
        main(args)
        code = 0
    except SystemExit as exit_:
        code = exit_.code or 0
    out = capsys.readouterr()
    return code, out.out, out.err



def test_fit_show_routing_eval(smoke_library, tmp_path, capsys):
    out = tmp_path / "rocket"
    code, stdout, err = run(["moe", "fit", "--method", "rocket", "--model", "tiny-llama", "--experts", ",".join(TASKS),
                             "--task", TASKS[0], "--library", str(smoke_library), "--out", str(out),
                             "--preset", "smoke", "--option", "top_k=1"], capsys)
    assert code == 0, err
    assert "trained 3 steps" in stdout
    config = json.loads((out / "moe_config.json").read_text())
    assert config["method"] == "rocket" and config["config"]["top_k"] == 1
    assert [e["name"] for e in config["experts"]] == TASKS

    code, stdout, _ = run(["moe", "show", str(out)], capsys)
    assert code == 0 and "rocket on tiny-llama" in stdout and "expert bb_implicatures" in stdout

    code, stdout, _ = run(["moe", "routing", str(out), "--task", TASKS[0], "--limit", "4",
                           "--out", str(tmp_path / "routing")], capsys)
    assert code == 0
    stats = json.loads((tmp_path / "routing" / "routing.json").read_text())
    for row in stats["mean_gates"]:  # top-1: each token sends all weight to one expert
        assert sum(row) == pytest.approx(1.0, abs=1e-5)

    code, stdout, err = run(["eval", "--model", "tiny-llama", "--task", TASKS[0], "--adapter", str(out),
                             "--limit", "4", "--split", "dev"], capsys)
    assert code == 0, err
    assert "n=4" in stdout


def test_user_errors_exit_2_on_one_line(smoke_library, tmp_path, capsys):
    code, _, err = run(["moe", "fit", "--method", "loramoee", "--task", TASKS[0], "--out", str(tmp_path / "x")],
                       capsys)
    assert code == 2 and "did you mean 'loramoe'" in err and len(err.strip().splitlines()) == 1
    code, _, err = run(["moe", "fit", "--method", "rocket", "--model", "tiny-llama", "--task", TASKS[0],
                        "--experts", "bb_snarks", "--library", str(smoke_library), "--out", str(tmp_path / "y"),
                        "--preset", "smoke"], capsys)
    assert code == 2 and "no adapter for model 'tiny-llama' and task 'bb_snarks'" in err
    code, _, err = run(["moe", "fit", "--method", "rocket", "--task", TASKS[0], "--out", str(tmp_path / "z"),
                        "--option", "top_kk=2"], capsys)
    assert code == 2 and "unknown rocket option 'top_kk'" in err
    code, _, err = run(["moe", "show", str(tmp_path)], capsys)
    assert code == 2 and "not an MoE checkpoint" in err


def test_fit_takes_training_settings_as_a_study_file_does(smoke_library, tmp_path, capsys):
    """`--train key=value` overrides the preset's training settings (5e-5 read as a number), the
    card records them and `moe show` prints them; bad ones exit 2 on one line naming the flag."""
    out = tmp_path / "loramoe"
    code, stdout, err = run(["moe", "fit", "--method", "loramoe", "--model", "tiny-llama", "--experts", ",".join(TASKS),
                             "--task", TASKS[0], "--library", str(smoke_library), "--out", str(out),
                             "--preset", "smoke", "--train", "max_steps=2", "--train", "lr=5e-5"], capsys)
    assert code == 0, err
    assert "trained 2 steps" in stdout
    card = json.loads((out / "card.json").read_text())
    assert card["train_overrides"] == {"max_steps": 2, "lr": 5e-5}
    assert card["train_config"]["lr"] == 5e-5 and card["train_config"]["max_steps"] == 2
    code, stdout, _ = run(["moe", "show", str(out)], capsys)
    assert code == 0 and "training settings over the preset's: lr=5e-05, max_steps=2" in stdout

    common = ["moe", "fit", "--model", "tiny-llama", "--experts", ",".join(TASKS), "--task", TASKS[0],
              "--library", str(smoke_library), "--out", str(tmp_path / "bad"), "--preset", "smoke"]
    for extra, words in [(["--method", "loramoe", "--train", "lr=-1"], "--train lr: must be a positive number"),
                         (["--method", "loramoe", "--train", "lrr=0.1"], "unknown training setting 'lrr'"),
                         (["--method", "loramoe", "--train", "lr"], "expected key=value, e.g. --train lr=5e-5"),
                         (["--method", "uniform", "--train", "lr=0.1"], "uniform does not train")]:
        code, _, err = run(common + extra, capsys)
        assert code == 2 and words in err and len(err.strip().splitlines()) == 1, (extra, err)
    assert not (tmp_path / "bad").exists()


def test_methods_lists_the_new_methods_with_their_references(capsys):
    code, out, _ = run(["moe", "methods"], capsys)
    assert code == 0
    for name, ref in [("mixlora", "arXiv 2404.15159; TUDB-Labs/MixLoRA"), ("mola", "arXiv 2402.08562; GCYZSL/MoLA"),
                      ("hydralora", "arXiv 2404.19245; Clin0212/HydraLoRA")]:
        assert re.search(rf"^{name} +trains .*\n +reference: .*{re.escape(ref)}", out, re.M), name
    assert re.search(r"^uniform .*\[exports: PEFT LoRA adapter\]", out, re.M)
    assert re.search(r"^xlora .*\[exports: PEFT X-LoRA folder\]", out, re.M)


@pytest.mark.real_model
@pytest.mark.parametrize("method", ["mixlora", "mola", "hydralora"])
def test_new_method_fits_saves_loads_and_evaluates_on_the_embedded_model(method, tmp_path, capsys):
    """From the CLI on SmolLM2-135M: fit (the reference initialisation: no experts given), the
    checkpoint shown, loaded and evaluated."""
    out = tmp_path / method
    code, stdout, err = run(["moe", "fit", "--method", method, "--task", TASKS[0], "--out", str(out),
                             "--preset", "smoke", "--train", "max_steps=2"], capsys)
    assert code == 0, err
    assert "trained 2 steps" in stdout
    card = json.loads((out / "card.json").read_text())
    assert card["model"] == "smollm2-135m" and card["options"]["init"] == "library"  # no LoRAs given: fresh
    assert all(e["source"] in ("fresh",) for e in json.loads((out / "moe_config.json").read_text())["experts"])
    code, stdout, _ = run(["moe", "show", str(out)], capsys)
    assert code == 0 and f"{method} on smollm2-135m" in stdout
    code, stdout, err = run(["eval", "--task", TASKS[0], "--adapter", str(out), "--limit", "2", "--split", "dev"],
                            capsys)
    assert code == 0, err
    assert "n=2" in stdout
