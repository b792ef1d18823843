"""The report travels: report.html holds its figures inline and is readable by others, figures
that carry no information are left out (with a line saying so), every heatmap row is labelled,
and `loraocean results` rounds a score exactly as the report does."""

from __future__ import annotations

import base64
import io
import json
import shutil
import stat
from html.parser import HTMLParser

import numpy as np
import pytest

import test_study_standins as standins
from loraocean.report import plots
from loraocean.report.build import routing_blocks, write_report
from loraocean.report.tables import pct
from loraocean.study import load_config, run_study
from loraocean.study.store import collect, job_dir, study_file

STUDY = """\
name: travel
models: [tiny-llama]
tasks:
  targets: [bb_intent_recognition]
  pool: [bb_social_iqa, bb_snarks, bb_winowhy]
library: {preset: smoke}
methods: [base, target_lora, loramoe, xlora]
selection: {strategies: [ppl, manual], k: 2, shots: 4}
seeds: [0]
caps: {max_eval: 40}
"""


@pytest.fixture
def run(tmp_path):
    (tmp_path / "s.yaml").write_text(STUDY)
    run_dir = tmp_path / "run"
    run_study(load_config(tmp_path / "s.yaml"), run_dir, stages=standins.STAGES, fetch=False)
    return run_dir


class Images(HTMLParser):
    def __init__(self):
        super().__init__()
        self.sources = []

    def handle_starttag(self, tag, attrs):
        if tag == "img":
            self.sources.append(dict(attrs)["src"])


def test_report_html_travels_alone_and_is_readable_by_others(run, tmp_path):
    from PIL import Image

    md, page = write_report(run)
    alone = tmp_path / "elsewhere" / "report.html"
    alone.parent.mkdir()
    shutil.copy(page, alone)  # nothing beside it
    parser = Images()
    parser.feed(alone.read_text())
    figures = sorted((run / "figures").glob("*.png"))
    assert len(parser.sources) == len(figures) >= 4  # accuracy, selection, 2 routing heatmaps
    decoded = []
    for src in parser.sources:
        head, _, data = src.partition(",")
        assert head == "data:image/png;base64"
        decoded.append(base64.b64decode(data))
        assert Image.open(io.BytesIO(decoded[-1])).size[0] > 100
    assert sorted(decoded) == sorted(f.read_bytes() for f in figures)  # the very files, no other
    for path in [md, page, run / "results.json", *figures]:
        assert stat.S_IMODE(path.stat().st_mode) == 0o644, path


def test_a_constant_routing_is_a_line_not_a_heatmap(tmp_path):
    """uniform's gates are 1/k everywhere: its heatmap would be one colour, so the report says so
    in a line and draws only the method whose gates vary."""
    layers = [f"model.layers.{i}.mlp.up_proj" for i in range(3)]
    gates = {"uniform": [[0.5, 0.5]] * 3, "loramoe": [[0.2, 0.8], [0.6, 0.4], [0.5, 0.5]]}
    jobs = []
    for method, matrix in gates.items():
        job = {"kind": "eval", "key": method, "inputs": {"method": method, "selection": "manual",
                                                         "target": "t", "seed": 0}}
        job_dir(tmp_path, "eval", method).mkdir(parents=True)
        (job_dir(tmp_path, "eval", method) / "result.json").write_text(json.dumps(
            {"routing": {"layers": layers, "experts": ["a", "b"], "mean_gates": matrix}}))
        jobs.append(job)
    figures = tmp_path / "figures"
    figures.mkdir()
    blocks = routing_blocks(tmp_path, {"jobs": jobs}, ["uniform", "loramoe"], figures)
    assert [b[0] for b in blocks] == ["h2", "p", "img"]
    assert blocks[1][1].startswith("uniform on t (manual selection, seed 0): every gate is 0.500 in every layer")
    assert "no heatmap is drawn" in blocks[1][1]
    assert [p.name for p in figures.iterdir()] == ["routing-loramoe.png"]


def test_every_heatmap_row_is_labelled_in_a_row_high_enough_for_its_label():
    layers = [f"base_model.model.model.layers.{i}.{m}" for i in range(24) for m in ("q_proj", "v_proj", "up_proj")]
    matrix = np.random.default_rng(0).dirichlet([1.0] * 4, size=len(layers))
    fig = plots.routing_figure(layers, ["a", "b", "c", "d"], matrix, "loramoe on t")
    ax = fig.axes[0]
    labels = [t.get_text() for t in ax.get_yticklabels()]
    assert labels == [l.replace("base_model.", "").replace("model.", "").replace("layers.", "L") for l in layers]
    assert labels[0] == "L0.q_proj" and len(set(labels)) == 72
    fig.canvas.draw()
    row_px = ax.get_window_extent().height / len(layers)
    label_px = max(t.get_window_extent().height for t in ax.get_yticklabels())
    assert label_px <= row_px  # neighbouring labels cannot overlap
    import matplotlib.pyplot as plt

    plt.close(fig)


def test_results_prints_a_score_as_the_report_does(run):
    """9 of 80 = 0.1125: `results` used to print 0.113 where the report printed 11.2."""
    from typer.testing import CliRunner

    from loraocean.cli import app
    from loraocean.cli.study import register

    study = study_file(run)
    job = next(j for j in study["jobs"] if j["kind"] == "eval" and j["inputs"]["method"] == "loramoe"
               and j["inputs"]["selection"] == "manual")
    path = job_dir(run, "eval", job["key"]) / "result.json"
    result = json.loads(path.read_text())
    result["scores"][0].update(value=9 / 80, ci_low=0.05, ci_high=0.2, n=80)
    path.write_text(json.dumps(result))
    collect(run)
    md, _ = write_report(run)
    assert "| loramoe | 11.2 (5.0–20.0)" in md.read_text()  # the manual selection's table (a flag may follow)
    if "results" not in {c.name for c in app.registered_commands}:
        register(app)
    res = CliRunner().invoke(app, ["results", str(run), "--where", "method=loramoe", "--where",
                                   "selection=manual"], terminal_width=250)
    assert res.exit_code == 0, res.output
    line = next(l for l in res.output.splitlines() if "loramoe" in l)
    cells = [c.strip() for c in line.split("│")]
    assert "11.2" in cells and "5.0–20.0" in cells and "0.113" not in line
    assert pct(9 / 80) == "11.2"
    # the CSV keeps the raw fraction
    res = CliRunner().invoke(app, ["results", str(run), "--csv", str(run / "rows.csv")])
    assert res.exit_code == 0, res.output
    import pandas as pd

    assert 9 / 80 in pd.read_csv(run / "rows.csv")["value"].tolist()
