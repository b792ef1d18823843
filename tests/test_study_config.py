"""Study configs: the shipped ones load; bad ones fail with the YAML path and line; the CLI exits 2."""

from __future__ import annotations

import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from loraocean.errors import ConfigError
from loraocean.study import expand, find_study, load_config
from loraocean.tasks import get_task

ROOT = Path(__file__).resolve().parents[1]

GOOD = """\
name: t
models: [tiny-llama]
tasks:
  targets: [bb_intent_recognition]
  pool: [bb_snarks, bb_implicatures, bb_winowhy]
methods:
  - base
  - loramoe
  - name: rocket
    config: {}
selection: {strategies: [ppl, manual], k: 2}
caps: {max_eval: 10}
quick:
  caps: {max_eval: 5}
  selection: {k: 1}
"""


def load_text(tmp_path, text, **kw):
    path = tmp_path / "study.yaml"
    path.write_text(text)
    return load_config(path, **kw)


def test_shipped_studies_load_and_meet_their_brief():
    lite = load_config(find_study())  # no argument: the embedded default
    assert lite.name == "lite" and lite.models == ["smollm2-135m"]
    tasks = lite.tasks.library
    assert len(tasks) >= 8 and len({get_task(t).category for t in tasks}) >= 3
    assert len(lite.tasks.targets) >= 2
    assert {"loramoe", "xlora", "rocket", "base"} <= {m.name for m in lite.methods}
    assert {"ppl", "random", "manual"} <= set(lite.selection.strategies)
    assert set(lite.selection.compare) - {"ppl", "random", "manual"}  # an automatic strategy too
    quick = load_config(find_study("lite"), quick=True)
    assert len(expand(quick)) < len(expand(lite))
    paper = load_config(find_study("loralib"))
    counts = Counter(j.kind for j in expand(paper))
    assert len(paper.models) == 17 and len(paper.tasks.targets) == 40
    # 3 strategies x 6 methods, and rocket also on its own default selection (the `rocket` strategy)
    # x 3 seeds: selections (a seeded random draw, seeded shots), fits and their evaluations; the
    # references are evaluated once
    assert {"mixlora", "mola", "hydralora"} <= {m.name for m in paper.methods}
    assert counts == {"lora": 17 * 40, "select": 3 * 17 * 40 * 4, "fit": 3 * 17 * 40 * (3 * 6 + 1),
                      "eval": 17 * 40 * (3 * (3 * 6 + 1) + 1)}
    from loraocean.models.architectures import FAMILIES
    assert len(FAMILIES) == 17
    load_config(find_study("ci"), quick=True)


def test_medium_study_detects_what_its_comment_says():
    """studies/medium.yaml's comment: 8 cells x 3 seeds and 1,120 test examples (harmonic mean 275
    per target) detect 5.1 points on each claim at 80% power, its two claims one Holm family."""
    from loraocean.report.findings import harmonic, plan_claims, target_examples

    medium = load_config(find_study("medium"))
    counted = target_examples(medium)
    assert sum(n for n, _, _ in counted.values()) == 1120 and all(known for _, _, known in counted.values())
    planned = {p.question: p for p in plan_claims(medium, {t: n for t, (n, _, _) in counted.items()})}
    measured = [p for p in planned.values() if p.design is not None]
    assert [p.question for p in measured] == [("method", "loramoe", "xlora"), ("selection", "manual", "ppl")]
    assert harmonic(n for n, _, _ in counted.values()) == 275
    for p in measured:
        assert (p.family, p.level, p.design.cells, p.design.seeds) == (2, 0.025, 8, 3)
        assert round(100 * p.design.mdd(p.level), 1) == 5.1


def test_shipped_studies_fit_several_seeds():
    assert len(load_config(find_study("lite")).seeds) == 3
    assert len(load_config(find_study("medium")).seeds) == 3
    assert len(load_config(find_study("ci")).seeds) == 2


def test_quick_section_is_merged(tmp_path):
    cfg = load_text(tmp_path, GOOD, quick=True)
    assert cfg.caps.max_eval == 5 and cfg.selection.k == 1
    assert cfg.selection.strategies == ["ppl", "manual"]  # untouched keys stay
    assert load_text(tmp_path, GOOD).caps.max_eval == 10


@pytest.mark.parametrize("change, path, words", [
    (("caps: {max_eval: 10}", "caps: {max_evl: 10}"), "caps.max_evl", ["line 12", "did you mean 'max_eval'"]),
    (("  - base\n", "  - base\n  - lorramoe\n"), "methods[1].name", ["line 8", "unknown method 'lorramoe'",
                                                                   "'loramoe'"]),
    (("config: {}", "config: {no_such_option: 1}"), "methods[2].config.no_such_option", ["line 10", "known: "]),
    (("[ppl, manual]", "[ppl, handpicked]"), "selection.strategies[1]", ["unknown selection strategy"]),
    (("bb_winowhy]", "bb_winowhy, bb_nonexistent_task]"), "tasks.pool[3]", ["line 5", "unknown task"]),
    (("k: 2", "k: 4"), "selection.k", ["k=4 is out of range", "3 candidate experts", "use 1..3"]),
    (("k: 2", "k: 0"), "selection.k", ["out of range"]),
    (("models: [tiny-llama]", "models: [tiny-nonsense]"), "models[0]", ["line 2", "unknown tiny model family"]),
    (("name: t", "name: t\nexecutor: slurm"), "executor.kind", ["unknown executor 'slurm'"]),
    (("caps: {max_eval: 10}", "caps: {max_eval: -3}"), "caps.max_eval", ["positive integer"]),
    (("caps: {max_eval: 10}", "caps: {max_eval: ten}"), "caps.max_eval", ["must be a positive integer"]),
    (("name: t", "name: t\nevaluation: {convention: helm}"), "evaluation.convention", ["unknown convention"]),
    (("config: {}", "train: {lrr: 1.0e-4}"), "methods[2].train.lrr", ["line 10", "unknown training setting 'lrr'",
                                                                      "known: lr, epochs"]),
    (("config: {}", "train: {lr: -1}"), "methods[2].train.lr", ["must be a positive number (got -1)"]),
    (("config: {}", "train: {max_steps: 2.5}"), "methods[2].train.max_steps", ["a positive integer"]),
    (("config: {}", "train: {epochs: five}"), "methods[2].train.epochs", ["a positive number"]),
    (("config: {}", "budget: {lr: 1}"), "methods[2].budget", ["unknown key 'budget'"]),
    (("  - base\n", "  - {name: base, train: {lr: 0.1}}\n"), "methods[0].train", ["a reference"]),
    (("  - base\n", "  - base\n  - {name: uniform, train: {lr: 0.1}}\n"), "methods[1].train",
     ["uniform does not train"]),
    (("config: {}", "selection: [handpicked]"), "methods[2].selection[0]", ["unknown selection strategy"]),
    (("name: t", "name: t\nlibrary: {preset: lite2}"), "library.preset", ["unknown preset 'lite2'", "'lite'"]),
])
def test_bad_configs_name_the_yaml_path(tmp_path, change, path, words):
    text = GOOD.replace(*change)
    assert text != GOOD
    with pytest.raises(ConfigError) as err:
        load_text(tmp_path, text)
    msg = str(err.value)
    assert f"study.yaml" in msg and f": {path}: " in msg, msg
    for word in words:
        assert word in msg, msg


def _fits(cfg) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for job in expand(cfg):
        if job.kind == "fit":
            out.setdefault(job.inputs["method"], []).append(job.inputs["selection"])
    return out


def test_training_overrides_change_only_that_methods_jobs(tmp_path):
    """Equal budgets by default; an override named in the study file goes into its method's fit
    inputs only, so every other key (and the config hash of files without one) stays the same."""
    from loraocean.artifacts import hash_obj

    plain = load_text(tmp_path, GOOD)
    assert all("train" not in m and "selection" not in m for m in plain.to_dict()["methods"])
    assert all("train" not in j.inputs for j in expand(plain))
    tuned = load_text(tmp_path, GOOD.replace("config: {}", "config: {}\n    train: {lr: 5.0e-5, epochs: 5}"))
    assert tuned.methods[2].train == {"lr": 5.0e-5, "epochs": 5}
    assert hash_obj(tuned.to_dict()) != hash_obj(plain.to_dict())
    before, after = {j.key: j for j in expand(plain)}, {j.key: j for j in expand(tuned)}
    changed = [j for k, j in before.items() if k not in after]
    assert len(changed) == len(before) - len(set(before) & set(after))
    assert {(j.kind, j.inputs["method"]) for j in changed} == {("fit", "rocket"), ("eval", "rocket")}
    assert all(j.inputs["train"] == {"lr": 5.0e-5, "epochs": 5}
               for j in after.values() if j.kind == "fit" and j.inputs["method"] == "rocket")


def test_a_methods_default_selection_is_added_unless_the_file_lists_its_strategies(tmp_path):
    cfg = load_text(tmp_path, GOOD)
    assert _fits(cfg) == {"loramoe": ["ppl", "manual"], "rocket": ["ppl", "manual", "rocket"]}
    assert Counter(j.inputs["strategy"] for j in expand(cfg) if j.kind == "select") == \
        {"ppl": 1, "manual": 1, "rocket": 1}
    own = load_text(tmp_path, GOOD.replace("config: {}", "config: {}\n    selection: [manual]"))
    assert _fits(own) == {"loramoe": ["ppl", "manual"], "rocket": ["manual"]}
    assert {j.inputs["strategy"] for j in expand(own) if j.kind == "select"} == {"ppl", "manual"}
    # the jobs the study's strategies make keep their keys either way
    assert {j.key for j in expand(own)} <= {j.key for j in expand(cfg)}


def test_missing_sections_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="tasks: is required"):
        load_text(tmp_path, "models: [tiny-llama]\nmethods: [base]\n")
    with pytest.raises(ConfigError, match="line 2: not valid YAML"):
        load_text(tmp_path, "models: [tiny-llama\nmethods: [base]\n")
    with pytest.raises(ConfigError, match="no quick: section"):
        load_text(tmp_path, GOOD.split("quick:")[0], quick=True)
    with pytest.raises(ConfigError, match="no study named 'nope'"):
        find_study("nope")


def cli(*args, cwd=ROOT):
    return subprocess.run([str(Path(sys.executable).parent / "loraocean"), *args], capture_output=True, text=True,
                          cwd=cwd)


def test_cli_bad_config_exits_2_with_one_line(tmp_path):
    (tmp_path / "bad.yaml").write_text(GOOD.replace("[ppl, manual]", "[ppl, handpicked]"))
    proc = cli("run", str(tmp_path / "bad.yaml"), "--dry-run")
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "selection.strategies[1]" in lines[0]
    assert "Traceback" not in proc.stderr
    (tmp_path / "typo.yaml").write_text(GOOD.replace("config: {}", "train: {lrr: 1.0e-4}"))
    proc = cli("run", str(tmp_path / "typo.yaml"), "--dry-run")
    assert proc.returncode == 2 and "methods[2].train.lrr" in proc.stderr and "Traceback" not in proc.stderr


def test_cli_dry_run_lists_jobs_and_cost(tmp_path):
    (tmp_path / "s.yaml").write_text(GOOD)
    proc = cli("run", str(tmp_path / "s.yaml"), "--dry-run", "--run-dir", str(tmp_path / "run"))
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "study t" in out and "4 to run" not in out
    n = len(expand(load_config(tmp_path / "s.yaml")))
    assert f"{n} jobs, 0 cached, {n} to run" in out
    # rocket is fitted on ppl, manual and its own default selection (rocket): 2 + 3 fits
    assert "lora: 4 jobs, 0 cached" in out and "fit: 5 jobs" in out and "eval: 6 jobs" in out
    assert not (tmp_path / "run" / "jobs").exists()  # a dry run writes nothing


def test_model_override_replaces_the_study_models():
    cfg = load_config(find_study("lite"), quick=True, overrides={"models": ["tiny-llama"]})
    assert cfg.models == ["tiny-llama"]
    assert {j.inputs["model"] for j in expand(cfg)} == {"tiny-llama"}
    with pytest.raises(ConfigError, match="models\\[0\\]"):
        load_config(find_study("lite"), overrides={"models": ["no/such model"]})


def test_retest_draft_is_sized_to_detect_three_points_on_each_claim():
    """studies/retest.yaml (item 8's draft): at least 3 seeds, LoRAMoE, X-LoRA, Rocket and the
    uniform average fitted on PPL, Random and Manual; each of the paper's four claims detects 3
    points at 80% power at its Holm level."""
    from loraocean.report.findings import plan_claims, target_examples

    cfg = load_config(find_study("retest"))
    assert len(cfg.seeds) >= 3
    assert {"loramoe", "xlora", "rocket", "uniform"} <= {m.name for m in cfg.moe_methods}
    assert cfg.selection.strategies == ["ppl", "random", "manual"]
    examples = {t: n for t, (n, _, _) in target_examples(cfg).items()}
    planned = plan_claims(cfg, examples)
    assert len(planned) == 4 and all(p.design is not None and p.family == 4 for p in planned)
    assert all(p.design.mdd(p.level) <= 0.03 for p in planned)
