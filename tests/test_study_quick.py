"""CI's end-to-end check: `loraocean run ci --quick` with the real stages on a tiny random llama
(LoRA library -> selection -> LoRAMoE / Rocket / X-LoRA fits -> evaluation -> report), then the
results table's contents and the report files."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from loraocean.study import expand, load_config, query
from loraocean.study.store import predictions

ROOT = Path(__file__).resolve().parents[1]
EXE = str(Path(sys.executable).parent / "loraocean")


@pytest.fixture(scope="module")
def ci_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("ci") / "run"
    proc = subprocess.run([EXE, "run", "ci", "--quick", "--run-dir", str(run_dir)], capture_output=True,
                          text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return run_dir, proc.stdout


def test_quick_ci_study_results_table(ci_run):
    run_dir, out = ci_run
    cfg = load_config(ROOT / "studies" / "ci.yaml", quick=True)
    n_jobs = len(expand(cfg))
    assert f"{n_jobs} ran, 0 cached, 0 failed" in out.replace("\n", " ")
    df = query(run_dir)
    # one row per (target, method, selection, seed) and convention: references once per seed (one
    # evaluation each), methods per strategy and seed: every fitted method is fitted with 2 seeds
    assert cfg.seeds == [0, 1]
    identities = {(r.method, r.selection, r.seed, r.convention) for r in df.itertuples()}
    expected = {(m, "none", seed, c) for m in ("base", "target_lora") for seed in (0, 1)
                for c in ("lm-eval", "opencompass")}
    expected |= {(m, s, seed, c) for m in ("loramoe", "rocket", "xlora") for s in ("ppl", "manual")
                 for seed in (0, 1) for c in ("lm-eval", "opencompass")}
    # rocket is also fitted on its own default selection, the real `rocket` strategy
    expected |= {("rocket", "rocket", seed, c) for seed in (0, 1) for c in ("lm-eval", "opencompass")}
    assert identities == expected and len(df) == len(expected)
    fits = [j for j in expand(cfg) if j.kind == "fit"]
    assert len(fits) == 2 * (3 * 2 + 1) and len({j.key for j in fits}) == len(fits)
    assert {j.inputs["seed"] for j in fits} == {0, 1}
    # the two seeds' fits differ (init and data order), each chose its lr on dev
    cards = [json.loads((run_dir / "jobs" / f"fit-{j.key}" / "result.json").read_text())["card"] for j in fits]
    assert all(c["lr_sweep"]["chosen"] in (3e-4, 1e-3) and c["options"]["seed"] == c["seed"] for c in cards)
    # the evaluation set: the target's test split capped to max_eval, the same for every row
    from loraocean.tasks import load_split

    examples = load_split("bb_sports_understanding", "test", limit=cfg.caps.max_eval, seed=0)
    majority = Counter(ex.target for ex in examples).most_common(1)[0][1] / len(examples)
    assert set(df["n"]) == {len(examples)}
    assert df["majority_rate"].tolist() == pytest.approx([majority] * len(df))
    # each value is the mean of its stored per-example correctness, over exactly those examples
    preds = predictions(run_dir)
    ids = {ex.id for ex in examples}
    for r in df.itertuples():
        p = preds[(preds.eval_key == r.eval_key) & (preds.convention == r.convention)]
        assert set(p.example_id) == ids
        assert r.value == pytest.approx(p.correct.mean())
        assert r.ci_low <= r.value <= r.ci_high
    # inference cost of every evaluation: its latency and the tokens of its examples (prompt and
    # reference answer, counted here with the model's tokenizer)
    from loraocean.batching import encode
    from loraocean.models import load

    tokens = sum(len(encode(ex, load("tiny-llama")[1]).input_ids) for ex in examples)
    for job in (j for j in expand(cfg) if j.kind == "eval"):
        cost = json.loads((run_dir / "jobs" / f"eval-{job.key}" / "result.json").read_text())["inference"]
        assert cost["examples"] == len(examples) and cost["tokens"] == tokens and cost["peak_mb"] > 0
        # both rounded: seconds to 1 ms (so up to 0.5 ms / n off), latency to 0.01 ms
        assert cost["latency_ms"] == pytest.approx(1000 * cost["seconds"] / len(examples),
                                                   abs=0.5 / len(examples) + 0.005)
    # provenance: experts from the selection (manual follows the shipped relevance map), versions
    manual = df[(df.selection == "manual") & (df.method == "loramoe")].iloc[0]
    assert json.loads(manual.experts) == ["bb_anachronisms", "bb_strategyqa"]
    assert json.loads(manual.versions)["peft"] and manual.config_hash
    assert all(Path(a).is_dir() for a in json.loads(manual.adapters))


def test_quick_ci_study_report_and_cli(ci_run):
    run_dir, out = ci_run
    md = (run_dir / "report.md").read_text()
    html = (run_dir / "report.html").read_text()
    for section in ("## Claims", "## Results (opencompass convention)",
                    "## Selection strategies", "## Which experts each strategy chose",
                    "## Routing: mean gate per layer and expert"):
        assert section in md
        assert section[3:].split(" (")[0] in html
    # one Holm family across the study's claims: the paper's claims the study measures (LoRAMoE vs
    # Rocket and X-LoRA, Manual vs PPL; Random is ranked, not fitted) on both conventions
    claims = json.loads((run_dir / "results.json").read_text())["claims"]
    paper = [c for c in claims if c["family"] == "claims"]
    measured = [c for c in paper if c.get("seeds_known")]
    assert {(c["a"], c["b"]) for c in measured} == {("loramoe", "rocket"), ("loramoe", "xlora"), ("manual", "ppl")}
    assert len(measured) == 6 and {c["holm_family"] for c in measured} == {6}
    assert all(c["seeds"] == [2, 2] for c in measured)
    assert md.count("Holm over the 6 claims") == 6
    for method in ("loramoe", "rocket", "xlora"):
        assert (run_dir / "figures" / f"routing-{method}.png").stat().st_size > 1000
    from typer.testing import CliRunner

    from loraocean.cli import app
    from loraocean.cli.study import register
    from loraocean.errors import ConfigError
    from loraocean.study import run_study
    from loraocean.study.store import parse_where

    if "results" not in {c.name for c in app.registered_commands}:
        register(app)
    res = CliRunner().invoke(app, ["results", str(run_dir), "--where", "method=loramoe", "--where",
                                   "convention=lm-eval"], terminal_width=200)
    assert res.exit_code == 0, res.output
    assert "4 results" in res.output and "loramoe" in res.output and "rocket" not in res.output  # 2 strategies x 2 seeds
    with pytest.raises(ConfigError, match="unknown column 'colour'"):
        parse_where(["colour=red"])
    # the study's LoRA library is a clean library (manifest in step with the cards)
    from loraocean.library import Library

    roots = sorted((run_dir / "library").iterdir())
    assert roots and all(Library(root).verify().clean for root in roots)
    assert all(Library(root).list() for root in roots)
    # a warm rerun runs nothing
    again = run_study(load_config(ROOT / "studies" / "ci.yaml", quick=True), run_dir)
    assert again.ran == 0 and not again.failed
