"""Third-party methods through the `loraocean.methods` entry-point group: the worked example of
docs/adding-a-method.md installed as a tiny package (a module + dist-info on sys.path)."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest
import torch

from conftest import DEVICE, ROOT
from loraocean.errors import UnknownNameError
from loraocean.models import load
from loraocean.moe import load_adapter, load_checkpoint, registry, save_checkpoint
from test_moe_layer import make_adapters


@pytest.fixture
def installed(tmp_path, monkeypatch):
    doc = (ROOT / "docs" / "adding-a-method.md").read_text()
    code = re.search(r"```python\n(# first_heavy\.py\n.*?)```", doc, re.S).group(1)
    site = tmp_path / "site"
    site.mkdir()
    (site / "first_heavy.py").write_text(code)
    info = site / "first_heavy-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: first-heavy\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[loraocean.methods]\nfirst_heavy = first_heavy\n")
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setattr(registry.METHODS, "entry_points_loaded", False)
    yield
    registry.METHODS.forget("first_heavy")
    sys.modules.pop("first_heavy", None)


def test_entry_point_method_builds_trains_and_round_trips(installed, tmp_path):
    method = registry.get_method("first_heavy")
    assert method.trains and "first expert leads" in method.description
    paths = make_adapters(tmp_path / "a")
    base, _ = load("tiny-llama")
    moe = method.build(base, [load_adapter(p) for p in paths], method.make_config({"lead": 0.6}))
    assert {n for n, p in moe.named_parameters() if p.requires_grad} == {
        f"base.{name}.router.bias" for name in moe.layers()}
    ids = torch.randint(0, 250, (1, 7), generator=torch.Generator().manual_seed(1)).to(DEVICE)
    with torch.no_grad():
        for layer in moe.layers().values():
            layer.router.bias.fill_(0.1)
        want = moe(input_ids=ids).logits
        gates = next(iter(moe.layers().values())).last_gates[0, 0]
    prior = torch.tensor([0.6, 0.2, 0.2], device=DEVICE) + 0.1
    torch.testing.assert_close(gates, prior / prior.sum())
    save_checkpoint(moe, tmp_path / "ckpt")
    loaded = load_checkpoint(tmp_path / "ckpt", load("tiny-llama")[0])
    with torch.no_grad():
        assert torch.equal(loaded(input_ids=ids).logits, want)


def test_unknown_method_names_the_group():
    with pytest.raises(UnknownNameError, match="loraocean.methods"):
        registry.get_method("no_such_method")


STUDY = """\
name: thirdparty
models: [tiny-llama]
tasks:
  targets: [bb_sports_understanding]
  pool: [bb_anachronisms, bb_strategyqa]
library: {preset: smoke}
methods:
  - base
  - {name: first_heavy, config: {lead: 0.6}, train: {lr: 5.0e-3}}
selection: {strategies: [random], k: 2, shots: 4}
evaluation: {convention: lm-eval, batch_size: 8}
caps: {max_train: 8, max_train_steps: 1, max_fit: 8, max_fit_steps: 2, max_eval: 8}
"""


def test_entry_point_method_runs_through_a_study(installed, tmp_path):
    """An installed package's method in a study: validated, fitted (with the training override the
    file names), evaluated and reported by study/ and report/, which know no method by name."""
    import json

    from loraocean.report import write_report
    from loraocean.study import load_config, query, run_study

    (tmp_path / "s.yaml").write_text(STUDY)
    cfg = load_config(tmp_path / "s.yaml")
    summary = run_study(cfg, tmp_path / "run", fetch=False)
    assert not summary.failed and summary.ran == 3 + 1 + 1 + 2  # 3 LoRAs (pool + target), 1 selection, 1 fit, 2 evals
    df = query(tmp_path / "run")
    assert sorted(zip(df.method, df.selection)) == [("base", "none"), ("first_heavy", "random")]
    fit_dir = next((tmp_path / "run" / "jobs").glob("fit-*"))
    card = json.loads((fit_dir / "result.json").read_text())["card"]
    assert card["method"] == "first_heavy" and card["options"] == {"lead": 0.6}
    assert card["train_config"]["lr"] == 5e-3 and card["train_log"]["steps"] == 2
    assert card["train_overrides"] == {"lr": 5e-3}
    md, _ = write_report(tmp_path / "run")
    text = md.read_text()
    assert "| first_heavy |" in text and "first_heavy: lr=0.005" in text
    assert json.loads((tmp_path / "run" / "results.json").read_text())["train_overrides"] == {
        "first_heavy": {"lr": 5e-3}}
