"""The README's Python API block runs as written (on the tiny model and the smoke preset)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def api_block() -> str:
    text = README.read_text()
    section = text.split("## Python API", 1)[1]
    return re.search(r"```python\n(.*?)```", section, flags=re.S).group(1)


@pytest.mark.slow
def test_readme_python_api_runs(tmp_path, monkeypatch, capsys):
    code = api_block()
    for line in ('MODEL = "smollm2-135m"', 'PRESET = "lite"'):
        assert line in code, f"the README example no longer sets {line}"
    code = code.replace('MODEL = "smollm2-135m"', 'MODEL = "tiny-llama"')
    code = code.replace('PRESET = "lite"', 'PRESET = "smoke"')
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(code, str(README), "exec"), namespace)

    from loraocean.library import Library

    lib = Library(tmp_path / "lib")
    assert sorted(e.task for e in lib.list()) == sorted([namespace["TARGET"]] + namespace["POOL"])
    assert lib.verify().clean
    chosen = namespace["selection"].chosen
    assert len(chosen) == 2 and namespace["TARGET"] not in chosen
    assert set(chosen) <= set(namespace["POOL"])
    result = namespace["result"]
    assert result.n == 50 and result.metric == "lm-eval acc" and result.convention == "lm-eval"
    assert 0.0 <= result.ci_low <= result.value <= result.ci_high <= 1.0
    correct = sum(r["correct"] for r in result.predictions)
    assert result.value == pytest.approx(correct / 50)
    assert (tmp_path / "runs" / "loramoe" / "moe_config.json").is_file()
    printed = capsys.readouterr().out
    assert str(chosen) in printed
