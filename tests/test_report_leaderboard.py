"""The leaderboard across runs: two stand-in runs (the study machinery with stand-in stages: two
models, targets of two task families, one and two seeds, known training logs) read into entries,
the CSV and the page, each number checked against the runs' own results tables."""

from __future__ import annotations

import csv
import json
import re
import stat
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import test_study_standins as standins
from loraocean.report import tables
from loraocean.report.build import write_report
from loraocean.report.flags import flags
from loraocean.report.leaderboard import CSV_COLUMNS, write_leaderboard
from loraocean.report.runs import family, read_runs
from loraocean.study import load_config, query, run_study
from loraocean.study.store import collect, predictions, study_file

STUDY_A = """\
name: board-a
models: [tiny-llama]
tasks:
  targets: [bb_intent_recognition, bb_sports_understanding]
  pool: [bb_social_iqa, bb_snarks, bb_winowhy]
library: {preset: smoke}
methods: [base, target_lora, loramoe, xlora]
selection: {strategies: [ppl, manual], k: 2, shots: 4}
seeds: [0]
caps: {max_eval: 40}
"""

STUDY_B = """\
name: board-b
models: [tiny-qwen2]
tasks:
  targets: [bb_sports_understanding, bb_snarks]
  pool: [bb_social_iqa, bb_winowhy, bb_implicatures]
library: {preset: smoke}
methods: [base, loramoe, rocket]
selection: {strategies: [manual], k: 2, shots: 4}
seeds: [0, 1]
evaluation: {convention: both}
caps: {max_eval: 30}
"""

EXE = str(Path(sys.executable).parent / "loraocean")
PARAMS = {"loramoe": 777, "xlora": 130, "rocket": 4096}


def _patch(path: Path, **fields) -> None:
    data = json.loads(path.read_text())
    data.update(fields)
    path.write_text(json.dumps(data))


def make_run(root: Path, text: str, name: str, report: bool = True) -> Path:
    """A finished stand-in run whose jobs carry training logs and times, as the real stages write
    them: every library LoRA 5,000 parameters and 3 s; each fit its method's PARAMS, n + 1 s for
    its n-th fit; evaluations 0.2 s plus 0.01 s per position in the job list."""
    (root / f"{name}.yaml").write_text(text)
    run_dir = root / name
    run_study(load_config(root / f"{name}.yaml"), run_dir, stages=standins.STAGES, fetch=False)
    n_fit = 0
    for i, job in enumerate(study_file(run_dir)["jobs"]):
        result = run_dir / "jobs" / f"{job['kind']}-{job['key']}" / "result.json"
        if job["kind"] == "lora":
            _patch(result, seconds=3.0, train={"steps": 12, "tokens": 900, "trainable_params": 5000})
        elif job["kind"] == "fit":
            n_fit += 1
            _patch(result, seconds=float(n_fit + 1), card={"train_log": {
                "steps": 8, "tokens": 100, "trainable_params": PARAMS[job["inputs"]["method"]]}})
        elif job["kind"] == "eval":
            _patch(result, seconds=0.2 + 0.01 * i)
    collect(run_dir)  # results.sqlite from the patched job folders
    if report:
        write_report(run_dir)
    return run_dir


def make_runs(root: Path) -> list[Path]:
    return [make_run(root, STUDY_A, "run-a"), make_run(root, STUDY_B, "run-b")]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    return make_runs(tmp_path_factory.mktemp("board"))


@pytest.fixture(scope="module")
def board(runs, tmp_path_factory):
    out = tmp_path_factory.mktemp("out") / "board"
    return write_leaderboard(runs, out)


def test_entries_hold_each_runs_scores_and_costs(runs):
    read = read_runs(runs)
    assert [r.label for r, _ in read] == ["run-a", "run-b"]
    for (run, entries), folder in zip(read, runs):
        df = query(folder)
        flagged = flags(df, predictions(folder))
        keys = {(e.model, e.method, e.selection, e.convention) for e in entries}
        assert keys == set(map(tuple, df[["model", "method", "selection", "convention"]].drop_duplicates().values))
        for e in entries:
            mine = df[(df.model == e.model) & (df.method == e.method) & (df.selection == e.selection)
                      & (df.convention == e.convention)]
            assert sorted(e.scores) == sorted(set(mine.target))
            for target, s in e.scores.items():
                g = mine[mine.target == target]
                assert s.value == pytest.approx(g.value.mean()) and s.seeds == len(g) and s.n == g.n.max()
                assert s.text == tables.cell(g, flagged)[1]  # the report's own cell text
                if len(g) == 1:
                    assert (s.ci_low, s.ci_high, s.sd) == (g.ci_low.iloc[0], g.ci_high.iloc[0], None)
                else:
                    assert s.ci_low is None and s.sd == pytest.approx(np.std(g.value, ddof=1))
            # evaluation ms per test example: the eval jobs' seconds over their examples, by hand
            evals = mine.drop_duplicates("eval_key")
            assert e.eval_ms == pytest.approx(1000 * np.mean(evals.eval_seconds / evals.n))
            # training: base 0; target_lora its LoRA's 3 s and 5,000 parameters; fits their logs
            fits = mine.drop_duplicates("fit_key")
            if e.method == "base":
                assert (e.train_seconds, e.trainable_params) == (0.0, 0)
            elif e.method == "target_lora":
                assert (e.train_seconds, e.trainable_params) == (3.0, 5000)
            else:
                assert e.trainable_params == PARAMS[e.method]
                assert e.train_seconds == pytest.approx(fits.fit_seconds.mean())
        assert run.library == {run.study["config"]["models"][0]: {
            "loras": sum(j["kind"] == "lora" for j in run.study["jobs"]), "seconds": 3.0, "trainable_params": 5000}}
    # the study's order: models, methods, then references before the strategies in theirs
    a = [(e.method, e.selection) for e in read[0][1]]
    assert a[:4] == [("base", "none"), ("target_lora", "none"), ("loramoe", "ppl"), ("loramoe", "manual")]


def test_the_csv_has_every_cell_with_raw_fractions(runs, board):
    page, table = board
    rows = list(csv.DictReader(table.open()))
    assert list(rows[0]) == CSV_COLUMNS
    expected = 0
    for folder, label in zip(runs, ("run-a", "run-b")):
        df = query(folder)
        cells = df.groupby(["model", "target", "method", "selection", "convention"])
        expected += cells.ngroups
        for (model, target, method, selection, convention), g in cells:
            row = next(r for r in rows if (r["run"], r["model"], r["target"], r["method"], r["selection"],
                                           r["convention"]) == (label, model, target, method, selection, convention))
            assert float(row["value"]) == g.value.mean()  # the raw fraction, not a rounded percentage
            assert row["family"] == family(target) and int(row["seeds"]) == len(g)
            report, _, ident = row["details"].partition("#")
            html = (page.parent / report).resolve().read_text()
            assert f"id='{ident}'" in html  # the link lands on a table of that run's report
    assert len(rows) == expected
    assert {r["family"] for r in rows} == {"classification", "commonsense", "nlu"}


class Page(HTMLParser):
    """The board table's rows (their attributes and cells), every link and every external resource."""

    def __init__(self):
        super().__init__()
        self.rows, self.heads, self.links, self.external, self.options = [], [], [], [], {}
        self._in, self._cell, self._select = None, None, None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "table":
            self._in = a.get("id")
        if self._in == "board" and tag == "tr" and "data-model" in a:
            self.rows.append((a, []))
        if self._in == "board" and tag in ("td", "th"):
            self._cell = {**a, "text": ""}
            (self.rows[-1][1] if tag == "td" else self.heads).append(self._cell)
        if tag == "a":
            self.links.append(a["href"])
            if self._cell is not None:
                self._cell["href"] = a["href"]
        if tag in ("img", "script", "link", "iframe") and (a.get("src") or a.get("href")):
            self.external.append(a)
        if tag == "select":
            self._select = a["id"]
            self.options[self._select] = []
        if tag == "option":
            self.options[self._select].append((a["value"], "selected" in a))

    def handle_endtag(self, tag):
        if tag in ("td", "th"):
            self._cell = None
        if tag == "table":
            self._in = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell["text"] += data


def test_the_page_shows_the_cells_and_links_each_to_its_report(runs, board):
    page, table = board
    for path in (page, table):
        assert stat.S_IMODE(path.stat().st_mode) == 0o644
    text = page.read_text()
    parsed = Page()
    parsed.feed(text)
    assert not parsed.external and "http://" not in text.replace("http://www.w3.org/2000/svg", "")
    heads = [h["text"] for h in parsed.heads]
    assert heads[:5] == ["run", "model", "method", "selection", "convention"]
    targets = ["bb_intent_recognition", "bb_sports_understanding", "bb_snarks"]
    assert heads[5:8] == [f"{t}{family(t)}" for t in targets]
    assert heads[8:] == ["mean", "train s", "trainable params", "eval ms / example"]
    csv_rows = list(csv.DictReader(table.open()))
    assert len(parsed.rows) == len({(r["run"], r["model"], r["method"], r["selection"], r["convention"])
                                    for r in csv_rows})
    for attrs, cells in parsed.rows:
        run = attrs["data-run"]
        for target, c in zip(targets, cells[5:8]):
            row = [r for r in csv_rows if (r["run"], r["model"], r["method"], r["selection"], r["convention"],
                                           r["target"]) == (run, attrs["data-model"], attrs["data-method"],
                                                            attrs["data-selection"], attrs["data-convention"], target)]
            if not row:
                assert c["text"] == "" and "data-value" not in c
                continue
            assert float(c["data-value"]) == float(row[0]["value"])
            assert c["text"].startswith(tables.pct(float(row[0]["value"])))
            assert c["href"] == row[0]["details"]
        # the mean: over the row's targets, per family, by the report's rounding rule
        values = {t: float(c["data-value"]) for t, c in zip(targets, cells[5:8]) if "data-value" in c}
        means = json.loads(cells[8]["data-means"])
        assert means["all"][0] == pytest.approx(np.mean(list(values.values())))
        partial = "" if len(values) == 3 else f" ({len(values)} of 3 targets)"
        assert means["all"][1] == tables.pct(np.mean(list(values.values()))) + partial
        assert cells[8]["text"] == means["all"][1]
        if "bb_sports_understanding" in values:
            assert means["commonsense"] == [values["bb_sports_understanding"],
                                            tables.pct(values["bb_sports_understanding"])]
        assert cells[10]["text"] == f"{float(cells[10]['data-value']):,.0f}"
        assert cells[9]["href"].endswith("report.html#costs-" + attrs["data-model"])
    # filters: every model, family, fitted selection and convention; the first convention chosen
    assert parsed.options["filter-model"] == [("all", True), ("tiny-llama", False), ("tiny-qwen2", False)]
    assert [v for v, _ in parsed.options["filter-family"]] == ["all", "classification", "commonsense", "nlu"]
    assert [v for v, _ in parsed.options["filter-selection"]] == ["all", "ppl", "manual", "rocket"]  # rocket: its own
    assert parsed.options["filter-convention"] == [("all", False), ("lm-eval", True), ("opencompass", False)]
    assert "Peak memory is not recorded" in text
    for folder in runs:
        assert f"{folder.name}/report.html" in " ".join(parsed.links)


def test_a_run_without_a_report_says_so(tmp_path):
    bare = make_run(tmp_path, STUDY_A, "bare", report=False)
    page, _ = write_leaderboard([bare], tmp_path / "out")
    text = page.read_text()
    assert "no report.html in" in text and "report.html#" not in text
    assert re.search(r"<td class='score' data-value='[0-9.]+' data-family", text)  # scores without links


def test_the_command(runs, tmp_path):
    proc = subprocess.run([EXE, "leaderboard", *map(str, runs), "--out", str(tmp_path / "lb")],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"wrote {tmp_path / 'lb' / 'leaderboard.html'} and {tmp_path / 'lb' / 'leaderboard.csv'}"
    frame = pd.read_csv(tmp_path / "lb" / "leaderboard.csv")
    assert set(frame["run"]) == {"run-a", "run-b"}


@pytest.mark.parametrize("args, message", [
    (["{tmp}"], "is not a study run folder (no study.json)"),
    (["{a}", "{a}/."], "is given twice"),
])
def test_the_command_refuses_bad_input_in_one_line(runs, tmp_path, args, message):
    argv = [a.format(tmp=tmp_path, a=runs[0]) for a in args]
    proc = subprocess.run([EXE, "leaderboard", *argv, "--out", str(tmp_path / "lb")], capture_output=True, text=True)
    assert proc.returncode == 2 and message in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
