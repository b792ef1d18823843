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
    monkeypatch.setattr(registry, "_entry_points_loaded", False)
    yield
    registry.METHODS.pop("first_heavy", None)
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
