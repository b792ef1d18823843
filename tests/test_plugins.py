"""Registries that other packages extend (`loraocean.plugins`): a method and a strategy shipped by a
small test package (tests/fixtures/plugin_pkg, put on sys.path with its dist-info, as an installed
package is) are found through their entry points, the method passes the conformance kit (in this
process and in the package's own test suite, run as another package runs it), the strategy takes
its declared place; a name registered twice is refused with one line naming both sources."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT
from loraocean.moe import registry
from loraocean.plugins import DuplicateNameError
from loraocean.selection import base as selection_base
from loraocean.testing import CHECKS, Kit, check_method

PLUGIN = ROOT / "tests" / "fixtures" / "plugin_pkg"


def _unload(prefix: str) -> None:
    for name in [m for m in sys.modules if m == prefix or m.startswith(prefix + ".")]:
        sys.modules.pop(name)


@pytest.fixture
def installed(monkeypatch):
    """The plugin package importable with its dist-info (its entry points) on sys.path."""
    monkeypatch.syspath_prepend(str(PLUGIN))
    monkeypatch.setattr(registry.METHODS, "entry_points_loaded", False)
    monkeypatch.setattr(selection_base.STRATEGIES, "entry_points_loaded", False)
    yield
    registry.METHODS.forget("shared_a")
    selection_base.STRATEGIES.forget("alphabetical")
    _unload("loraocean_plugin_demo")


def test_the_dist_info_declares_what_pyproject_does():
    """The in-place dist-info and the package's pyproject.toml (a real install) agree."""
    toml = (PLUGIN / "pyproject.toml").read_text()
    points = (PLUGIN / "loraocean_plugin_demo-0.1.dist-info" / "entry_points.txt").read_text()
    declared = {group: re.findall(r'^(\w+) = "([\w.:]+)"$', body, re.M)
                for group, body in re.findall(r'^\[project\.entry-points\."([\w.]+)"\]\n(.*?)(?=^\[|\Z)', toml, re.M | re.S)}
    written = {group: re.findall(r"^(\w+) = ([\w.:]+)$", body, re.M)
               for group, body in re.findall(r"^\[([\w.]+)\]\n(.*?)(?=^\[|\Z)", points, re.M | re.S)}
    assert declared == written and set(declared) == {"loraocean.methods", "loraocean.strategies"}


def test_the_docs_listing_is_the_plugin_method():
    doc = (ROOT / "docs" / "adding-a-method.md").read_text()
    code = re.search(r"```python\n(# loraocean_plugin_demo/method\.py\n.*?)```", doc, re.S).group(1)
    assert code == (PLUGIN / "loraocean_plugin_demo" / "method.py").read_text()


def test_plugin_method_is_found_listed_and_conforms(installed, tmp_path, capsys):
    from test_moe_cli import run

    method = registry.get_method("shared_a")
    assert method.trains and registry.METHODS.sources["shared_a"] == "loraocean_plugin_demo.method.build"
    code, out, _ = run(["moe", "methods"], capsys)
    assert code == 0 and re.search(r"^shared_a +trains .*\n +reference: a test fixture", out, re.M)
    kit = Kit(root=tmp_path, families=("llama", "gpt2", "opt"))
    assert check_method("shared_a", kit) == list(CHECKS)


@pytest.mark.slow
def test_the_plugins_own_suite_passes_with_the_kit(tmp_path):
    """`plugin_tests.py` is what another package writes: it imports loraocean.testing and checks
    its method on every family. Run as that package's suite (another process, its own rootdir)."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(PLUGIN)] + [p for p in sys.path if p]))
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           "--rootdir", str(PLUGIN), "--confcutdir", str(PLUGIN), str(PLUGIN / "plugin_tests.py")],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert f"{1 + len(CHECKS)} passed" in done.stdout


def test_plugin_strategy_takes_its_declared_place_and_runs(installed, smoke_library):
    from loraocean.selection import every_strategy, select

    order = every_strategy()
    assert order[0] == "alphabetical" and order.index("ppl") < order.index("diversity")
    sel = select("bb_sports_understanding", smoke_library, "tiny-llama", k=1, strategy="alphabetical")
    assert [c.task for c in sel.ranking] == sorted(c.task for c in sel.ranking)
    assert sel.shots == 0 and sel.uses_target_labels is False  # it needs no examples and no labels


def test_a_strategy_gets_examples_when_it_declares_it_needs_them(smoke_library):
    from loraocean.selection import Choice, select, strategy

    seen = {}

    def make(name, needs):
        @strategy(name, needs=needs, order=200)
        class Recorder:
            higher_is_better = True

            def select(self, target_task, candidates, model, k, examples):
                seen[name] = len(examples)
                return [Choice(e.task, None, "", str(e.path)) for e in candidates]

    try:
        make("records_examples", ("examples",))
        make("records_nothing", ())
        select("bb_sports_understanding", smoke_library, "tiny-llama", k=1, strategy="records_examples", shots=3)
        select("bb_sports_understanding", smoke_library, "tiny-llama", k=1, strategy="records_nothing", shots=3)
    finally:
        selection_base.STRATEGIES.forget("records_examples")
        selection_base.STRATEGIES.forget("records_nothing")
    assert seen == {"records_examples": 3, "records_nothing": 0}


def _second_package(tmp_path: Path, module: str, code: str, group: str) -> Path:
    site = tmp_path / "site"
    (site / "dup-0.1.dist-info").mkdir(parents=True)
    (site / f"{module}.py").write_text(code)
    (site / "dup-0.1.dist-info" / "METADATA").write_text("Metadata-Version: 2.1\nName: dup\nVersion: 0.1\n")
    (site / "dup-0.1.dist-info" / "entry_points.txt").write_text(f"[{group}]\nclash = {module}\n")
    return site


DUPLICATE_METHOD = """
from dataclasses import dataclass
from loraocean.moe import register_method

@dataclass
class Config:
    pass

@register_method("uniform", Config)
def build(base, experts, cfg):
    raise AssertionError("never built")
"""

DUPLICATE_STRATEGY = """
from loraocean.selection import strategy

@strategy("ppl")
class Clash:
    higher_is_better = True
"""


@pytest.mark.parametrize("kind", ["method", "strategy"])
def test_a_name_registered_twice_is_refused_naming_both(tmp_path, monkeypatch, capsys, kind):
    from test_moe_cli import run

    module = f"dup_{kind}"
    group, code, reg = {"method": ("loraocean.methods", DUPLICATE_METHOD, registry.METHODS),
                        "strategy": ("loraocean.strategies", DUPLICATE_STRATEGY, selection_base.STRATEGIES)}[kind]
    monkeypatch.syspath_prepend(str(_second_package(tmp_path, module, code, group)))
    monkeypatch.setattr(reg, "entry_points_loaded", False)
    held = {"method": "loraocean.moe.methods.baselines.build_uniform",
            "strategy": "loraocean.selection.ppl.Ppl"}[kind]
    try:
        with pytest.raises(DuplicateNameError) as err:
            reg.everything() if kind == "strategy" else registry.all_methods()
        message = str(err.value)
        assert held in message and f"{module}." in message and "package dup" in message
        assert reg.sources[{"method": "uniform", "strategy": "ppl"}[kind]] == held  # not overwritten
        if kind == "method":
            monkeypatch.setattr(reg, "entry_points_loaded", False)
            code, _, err_text = run(["moe", "methods"], capsys)
            assert code == 2 and held in err_text and len(err_text.strip().splitlines()) == 1
    finally:
        _unload(module)


def test_registering_a_taken_name_in_process_is_refused():
    from dataclasses import dataclass

    @dataclass
    class Config:
        pass

    def build(base, experts, cfg):
        return None

    with pytest.raises(DuplicateNameError, match="'mixlora' is registered twice: by loraocean.moe.methods.mixlora.build "
                                                 "and by test_plugins.*build"):
        registry.register_method("mixlora", Config)(build)
    assert registry.METHODS.sources["mixlora"] == "loraocean.moe.methods.mixlora.build"
