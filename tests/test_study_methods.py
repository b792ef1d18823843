"""The new methods in a study: named in the methods list (with options), validated, fitted on each
selection's experts (their library initialisation), evaluated and reported by study/ and report/,
which know no method by name."""

from __future__ import annotations

import json

import pytest

from loraocean.study import load_config, query, run_study

STUDY = """\
name: newmethods
models: [tiny-llama]
tasks:
  targets: [bb_sports_understanding]
  pool: [bb_anachronisms, bb_strategyqa]
library: {preset: smoke}
methods:
  - base
  - mixlora
  - {name: mola, config: {layer_experts: [1, 2]}}
  - {name: hydralora, config: {balance_coef: 0.1}}
selection: {strategies: [random], k: 2, shots: 4}
evaluation: {convention: lm-eval, batch_size: 8}
caps: {max_train: 8, max_train_steps: 1, max_fit: 8, max_fit_steps: 2, max_eval: 8}
"""


@pytest.mark.slow
def test_new_methods_run_through_a_study(tmp_path):
    from loraocean.report import write_report

    (tmp_path / "s.yaml").write_text(STUDY)
    summary = run_study(load_config(tmp_path / "s.yaml"), tmp_path / "run", fetch=False)
    assert not summary.failed and summary.ran == 3 + 1 + 3 + 4  # LoRAs, selection, fits, evals
    df = query(tmp_path / "run")
    assert sorted(df.method) == ["base", "hydralora", "mixlora", "mola"]
    cards = {}
    for fit_dir in (tmp_path / "run" / "jobs").glob("fit-*"):
        card = json.loads((fit_dir / "result.json").read_text())["card"]
        cards[card["method"]] = card
    assert cards["mola"]["options"]["layer_experts"] == [1, 2] and cards["hydralora"]["options"]["balance_coef"] == 0.1
    assert all(c["train_log"]["steps"] == 2 and c["options"]["init"] == "library" for c in cards.values())
    md, _ = write_report(tmp_path / "run")
    assert all(f"| {m} |" in md.read_text() for m in ("mixlora", "mola", "hydralora"))


def test_a_study_names_their_options_and_refuses_bad_ones(tmp_path):
    from loraocean.errors import ConfigError

    (tmp_path / "s.yaml").write_text(STUDY.replace("layer_experts: [1, 2]", "layer_experts: [0, 2]"))
    with pytest.raises(ConfigError, match=r"methods\[2\]\.config\.layer_experts"):
        load_config(tmp_path / "s.yaml")
    (tmp_path / "t.yaml").write_text(STUDY.replace("  - mixlora\n", "  - {name: mixlora, config: {top_k: 3}}\n"))
    with pytest.raises(ConfigError, match=r"methods\[1\]\.config\.top_k.*at most the number of experts \(2\)"):
        load_config(tmp_path / "t.yaml")
