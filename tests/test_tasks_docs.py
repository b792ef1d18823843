"""The task docs stay true: the worked example of docs/adding-a-task.md runs, and docs/tasks.md
lists every catalog task with its source, category, mode, metric and licence."""

from __future__ import annotations

import re
from pathlib import Path

from loraocean.tasks import CATALOG
from loraocean.tasks.catalog import CATALOG_40
from loraocean.tasks.converters import CONVERTERS

DOCS = Path(__file__).resolve().parents[1] / "docs"


def test_adding_a_task_example_runs():
    blocks = re.findall(r"```python\n(.*?)```", (DOCS / "adding-a-task.md").read_text(), re.DOTALL)
    assert len(blocks) == 4
    namespace: dict = {}
    try:
        for block in blocks:
            exec(compile(block, "docs/adding-a-task.md", "exec"), namespace)
        assert CATALOG["sciq"].source == "hf:allenai/sciq"
    finally:
        CATALOG.pop("sciq", None)
        CONVERTERS.pop("sciq", None)


def test_tasks_md_lists_every_catalog_task():
    text = (DOCS / "tasks.md").read_text()
    rows = {line.split("|")[1].strip(" `"): [c.strip(" `") for c in line.split("|")[1:-1]]
            for line in text.splitlines() if line.startswith("| `")}
    for name in CATALOG_40 + ("gsm8k_hub",):
        spec = CATALOG[name]
        task, category, mode, metric, extraction, source, _, _, license = rows[name]
        assert (category, mode, metric, extraction, license) == (
            spec.category, spec.mode, spec.metric, spec.extraction, spec.license), name
        assert source.split(":<")[0] in spec.source, name
