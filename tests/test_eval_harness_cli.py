"""From the command line: `tasks export --to lm-eval` + `loraocean lm-eval` (lm-eval's own CLI with
our model registered) predict exactly what `loraocean eval` predicts in the lm-eval convention,
for a library LoRA; `tasks export --to opencompass` writes the config; the entry point lm-eval's
plugin discovery reads is declared."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import numpy as np
import pytest

from conftest import ROOT, SMOKE_TASKS
from test_moe_cli import run

TASK = SMOKE_TASKS[0]


def test_lm_eval_cli_predicts_what_eval_predicts(smoke_library, tmp_path, capsys):
    adapter = smoke_library / "tiny-llama" / TASK
    code, out, err = run(["tasks", "export", TASK, str(tmp_path / "tasks"), "--to", "lm-eval",
                          "--model", "tiny-llama", "--limit", "12"], capsys)
    assert code == 0, err
    assert (tmp_path / "tasks" / f"{TASK}.yaml").is_file() and "loraocean lm-eval" in out
    code, _, err = run(["eval", "--model", "tiny-llama", "--task", TASK, "--adapter", str(adapter),
                        "--limit", "12", "--json", str(tmp_path / "ours.json")], capsys)
    assert code == 0, err
    code, _, err = run(["lm-eval", "run", "--model", "loraocean", "--model_args",
                        f"model=tiny-llama,adapter={adapter}", "--tasks", TASK, "--include_path",
                        str(tmp_path / "tasks"), "--batch_size", "4", "--log_samples",
                        "--output_path", str(tmp_path / "lm-eval")], capsys)
    assert code == 0, err
    ours = json.loads((tmp_path / "ours.json").read_text())
    (samples_file,) = Path(tmp_path / "lm-eval").rglob(f"samples_{TASK}_*.jsonl")
    samples = sorted((json.loads(line) for line in samples_file.read_text().splitlines()),
                     key=lambda s: s["doc_id"])
    lls = [[float(r[0]) for r in s["filtered_resps"]] for s in samples]  # the log stores strings
    assert [s["doc"]["id"] for s in samples] == [p["id"] for p in ours["predictions"]]
    assert [int(np.argmax(x)) for x in lls] == [p["prediction"] for p in ours["predictions"]]
    for mine, theirs in zip(ours["predictions"], lls):
        assert mine["logprobs"] == pytest.approx(theirs, abs=1e-4)  # fp32, other batching
    (results_file,) = Path(tmp_path / "lm-eval").rglob("results_*.json")
    acc = json.loads(results_file.read_text())["results"][TASK]["acc,none"]
    assert acc == ours["summary"]["value"]


def test_opencompass_export_from_the_cli(tmp_path, capsys):
    code, out, err = run(["tasks", "export", TASK, str(tmp_path), "--to", "opencompass", "--model",
                          "tiny-llama", "--limit", "5", "--adapter", "some/lora"], capsys)
    assert code == 0, err
    config = (tmp_path / f"{TASK}_opencompass.py").read_text()
    assert "type=LoraOceanModel" in config and "adapter='some/lora'" in config
    assert len((tmp_path / f"{TASK}.jsonl").read_text().splitlines()) == 5
    code, _, err = run(["tasks", "export", TASK, str(tmp_path), "--to", "helm"], capsys)
    assert code == 2 and "use one of lm-eval, opencompass, alpaca" in err


@pytest.mark.min_versions
def test_lm_eval_plugin_entry_point_is_declared():
    """lm-eval releases with plugin discovery read the `lm_eval.models` group (their plugin guide);
    ours names the registered class."""
    import importlib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    target = project["entry-points"]["lm_eval.models"]["loraocean"]
    module, _, name = target.partition(":")
    from lm_eval.api.registry import get_model

    assert getattr(importlib.import_module(module), name) is get_model("loraocean")


STUDY = """name: harness
models: [tiny-llama]
tasks:
  targets: [{task}]
  pool: [bb_snarks]
library: {{preset: smoke, seed: 0}}
methods: [base, target_lora]
seeds: [0]
evaluation: {{convention: lm-eval, batch_size: 8, harness: lm-eval, harness_tasks: [{task}],
             include_path: {include}}}
caps: {{max_train: 16, max_train_steps: 2, max_eval: 10}}
executor: local
"""


def test_a_study_scores_with_lm_eval_tasks_too(tmp_path, capsys):
    """`evaluation.harness: lm-eval` adds one row per lm-eval task to each eval job; on the same
    examples (our task exported for lm-eval) its per-document correctness is ours."""
    from loraocean.study import query
    from loraocean.study.store import predictions

    code, _, err = run(["tasks", "export", TASK, str(tmp_path / "tasks"), "--to", "lm-eval", "--model",
                        "tiny-llama", "--limit", "10"], capsys)
    assert code == 0, err
    (tmp_path / "study.yaml").write_text(STUDY.format(task=TASK, include=tmp_path / "tasks"))
    code, out, err = run(["run", str(tmp_path / "study.yaml"), "--run-dir", str(tmp_path / "run")], capsys)
    assert code == 0, out[-2000:] + err[-2000:]
    df = query(tmp_path / "run")
    assert set(zip(df.method, df.convention)) == {(m, c) for m in ("base", "target_lora")
                                                  for c in ("lm-eval", f"lm-eval:{TASK}")}
    preds = predictions(tmp_path / "run")
    for key in set(df.eval_key):
        ours = preds[(preds.eval_key == key) & (preds.convention == "lm-eval")]
        theirs = preds[(preds.eval_key == key) & (preds.convention == f"lm-eval:{TASK}")]
        assert list(theirs.correct) == list(ours.correct) and len(ours) == 10
    (tmp_path / "bad.yaml").write_text(STUDY.format(task=TASK, include=tmp_path).replace(
        f"harness_tasks: [{TASK}],", "harness_tasks: [],"))
    code, _, err = run(["run", str(tmp_path / "bad.yaml"), "--dry-run"], capsys)
    assert code == 2 and "evaluation.harness" in err and "needs harness_tasks" in err
