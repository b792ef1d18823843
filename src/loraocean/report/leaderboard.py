"""`loraocean leaderboard RUN... --out DIR`: one self-contained HTML page and a CSV comparing runs.

The page is a table of methods x targets (one row per run, model, method, selection and
convention; one column per target, its task family beneath) with each score's 95% CI or spread
over seeds and its degenerate-cell flag, the mean over the targets shown, and beside them what the
row cost (training wall time and trainable parameters per training run, evaluation time per test
example). Each score links to the table of its run's report.html that holds it, each cost to the
run's cost table. A plot draws the mean accuracy against a chosen cost. Filters (model, task
family, selection, convention) and sorting (click a column) are done by a few lines of our own
JavaScript (`leaderboard.js`, inlined), so the page needs no network and no library.

Every number a person reads is formatted here, in Python, by the report's one rule (`tables.pct`:
percent, one decimal); the script only shows, hides and reorders. The CSV (one line per target
cell) keeps raw fractions in [0, 1].
"""

from __future__ import annotations

import csv
import html
import io
import json
from importlib import resources
from pathlib import Path

import numpy as np

from loraocean.artifacts import READABLE, write_text_atomic
from loraocean.report.runs import Entry, Run, family, read_runs, relative_link
from loraocean.report.tables import anchor, ordered, pct

PAGE = "leaderboard.html"
TABLE = "leaderboard.csv"
ALL = "all"
CSV_COLUMNS = ["run", "run_folder", "study", "config_hash", "model", "family", "target", "method", "selection",
               "convention", "metric", "value", "ci_low", "ci_high", "sd_over_seeds", "seeds", "n", "flag",
               "train_seconds", "trainable_params", "eval_ms_per_example", "details"]
MISSING = ("Peak memory is not recorded in the run folders (no stage of a study measures it), so the "
           "page has no memory column.")


def write_leaderboard(folders: list[str | Path], out: str | Path) -> tuple[Path, Path]:
    """Read the run folders and write `out/leaderboard.html` and `out/leaderboard.csv` (0644)."""
    out = Path(out)
    runs = read_runs(folders)
    out.mkdir(parents=True, exist_ok=True)
    page = write_text_atomic(out / PAGE, to_html(runs, out), READABLE)
    table = write_text_atomic(out / TABLE, to_csv(runs, out), READABLE)
    return page, table


def targets_of(runs: list[tuple[Run, list[Entry]]]) -> list[str]:
    """Every target of the runs, in the order of the runs' study files."""
    return ordered([t for _, entries in runs for e in entries for t in e.scores],
                   [t for run, _ in runs for t in run.study["config"]["tasks"]["targets"]])


def link(entry: Entry, where: str, out: Path) -> str | None:
    """The address of `where` (an id) in the entry's report.html, from a page in `out`."""
    return None if entry.run.report is None else f"{relative_link(entry.run.report, out)}#{where}"


def means(entry: Entry, columns: dict[str, str]) -> dict[str, list]:
    """Family (or 'all') -> [mean over the entry's targets in it, its text, its sort value]; the text
    says 'k of K targets' when the entry lacks some of the family's columns."""
    out = {}
    for fam in [ALL] + sorted(set(columns.values())):
        shown = [t for t, f in columns.items() if fam in (ALL, f)]
        have = [entry.scores[t].value for t in shown if t in entry.scores]
        if not have:
            continue
        mean = float(np.mean(have))
        text = pct(mean) + ("" if len(have) == len(shown) else f" ({len(have)} of {len(shown)} targets)")
        out[fam] = [mean, text]
    return out


def _num(x: float | None, fmt: str) -> str:
    return "–" if x is None else fmt.format(x)


def _attr(value) -> str:
    return html.escape(str(value), quote=True)


def _td(text: str, value=None, href: str | None = None, cls: str = "", extra: str = "") -> str:
    attrs = (f" class='{cls}'" if cls else "") + ("" if value is None else f" data-value='{_attr(value)}'") + extra
    inner = html.escape(text) if href is None else f"<a href='{_attr(href)}'>{html.escape(text)}</a>"
    return f"<td{attrs}>{inner}</td>"


def _select(name: str, label: str, values: list[str], default: str = ALL) -> str:
    options = "".join(f"<option value='{_attr(v)}'{' selected' if v == default else ''}>{html.escape(v)}</option>"
                      for v in values)
    return f"<label>{html.escape(label)} <select id='filter-{name}' data-filter='{name}'>{options}</select></label>"


def row_html(entry: Entry, columns: dict[str, str], out: Path) -> str:
    costs = link(entry, anchor("costs", entry.model), out)
    cells = [_td(entry.run.label, entry.run.label), _td(entry.model, entry.model), _td(entry.method, entry.method),
             _td(entry.selection, entry.selection), _td(entry.convention, entry.convention)]
    for target, fam in columns.items():
        s = entry.scores.get(target)
        if s is None:
            cells.append(_td("", cls="score", extra=f" data-family='{_attr(fam)}'"))
            continue
        tip = (f"{entry.run.label}: {entry.method} ({entry.selection}) on {target}, {entry.metric}, "
               f"n = {s.n} test examples, {s.seeds} seed{'s' if s.seeds > 1 else ''}")
        cells.append(_td(s.text, s.value, link(entry, s.anchor, out), "score",
                         f" data-family='{_attr(fam)}' title='{_attr(tip)}'"))
    by_family = means(entry, columns)
    whole = by_family.get(ALL)
    cells.append(_td(whole[1] if whole else "–", whole[0] if whole else None, cls="mean",
                     extra=f" data-means='{_attr(json.dumps(by_family))}'"))
    cells.append(_td(_num(entry.train_seconds, "{:.1f}"), entry.train_seconds, costs, "cost train"))
    cells.append(_td(_num(entry.trainable_params, "{:,.0f}"), entry.trainable_params, costs, "cost params"))
    cells.append(_td(_num(entry.eval_ms, "{:.1f}"), entry.eval_ms, None, "cost eval"))
    keys = " ".join(f"data-{k}='{_attr(getattr(entry, k))}'" for k in ("model", "method", "selection", "convention"))
    return f"<tr {keys} data-run='{_attr(entry.run.label)}'>" + "".join(cells) + "</tr>"


def runs_table(runs: list[tuple[Run, list[Entry]]], out: Path) -> str:
    head = ["run", "study", "config hash", "models", "evaluation", "seeds", "library LoRAs (mean each)", "details"]
    rows = []
    for run, _ in runs:
        cfg = run.study["config"]
        ev = cfg["evaluation"]
        lib = "; ".join(f"{m}: {c['loras']} LoRAs, {_num(c['seconds'], '{:.1f}')} s, "
                        f"{_num(c['trainable_params'], '{:,.0f}')} params" for m, c in run.library.items()) or "–"
        details = (f"<a href='{_attr(relative_link(run.report, out))}'>report.html</a>" if run.report else
                   f"no report.html in {html.escape(str(run.folder))}: `loraocean report` writes it")
        cells = [run.label, run.name, run.study["config_hash"], ", ".join(cfg["models"]),
                 f"{ev['split']} split, at most {cfg['caps'].get('max_eval') or 'all'} examples per target, "
                 f"{ev['convention']} convention", ", ".join(map(str, cfg["seeds"])), lib]
        rows.append("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in cells) + f"<td>{details}</td></tr>")
    return ("<table id='runs'><thead><tr>" + "".join(f"<th>{h}</th>" for h in head) + "</tr></thead><tbody>"
            + "".join(rows) + "</tbody></table>")


def to_html(runs: list[tuple[Run, list[Entry]]], out: Path) -> str:
    entries = [e for _, es in runs for e in es]
    columns = {t: family(t) for t in targets_of(runs)}
    models = ordered([e.model for e in entries], [])
    selections = ordered([e.selection for e in entries if e.selection != "none"], [])
    conventions = ordered([e.convention for e in entries], [])
    empty = [run.label for run, es in runs if not es]
    head = (["run", "model", "method", "selection", "convention"]
            + [f"{html.escape(t)}<br><small>{html.escape(f)}</small>" for t, f in columns.items()]
            + ["mean", "train s", "trainable params", "eval ms / example"])
    kinds = ["text"] * 5 + ["score"] * len(columns) + ["mean", "cost", "cost", "cost"]
    fams = [""] * 5 + [f" data-family='{_attr(f)}'" for f in columns.values()] + [""] * 4
    ths = "".join(f"<th data-kind='{k}'{f} tabindex='0'>{h}</th>" for h, k, f in zip(head, kinds, fams))
    rows = "\n".join(row_html(e, columns, out) for e in entries)
    script = resources.files("loraocean.report").joinpath("leaderboard.js").read_text(encoding="utf-8")
    return f"""<!doctype html><html lang='en'><head><meta charset='utf-8'>
<title>LoRAOcean leaderboard</title>
<style>{STYLE}</style></head><body>
<h1>LoRAOcean leaderboard</h1>
<p>{len(runs)} run{'s' if len(runs) != 1 else ''} ({html.escape(', '.join(r.label for r, _ in runs))}),
{len(entries)} rows: one per run, model, method, selection and convention. Scores are percentages with one
decimal: the mean over seeds with its 95% bootstrap CI (one seed) or &plusmn; the standard deviation over
seeds, and the cell's flag in brackets. Click a column to sort; click a score for its run's report.
{f"<br>No finished evaluations in: {html.escape(', '.join(empty))}." if empty else ""}</p>
<div id='filters'>{_select('model', 'model', [ALL] + models)} {_select('family', 'task family', [ALL] + sorted(set(columns.values())))}
{_select('selection', 'selection', [ALL] + selections)} {_select('convention', 'convention', [ALL] + conventions, conventions[0] if conventions else ALL)}
<span id='shown'></span></div>
<table id='board'><thead><tr>{ths}</tr></thead><tbody>
{rows}
</tbody></table>
<h2>Accuracy against cost</h2>
<p><label>cost <select id='xaxis'><option value='train'>training wall seconds per run</option>
<option value='params'>trainable parameters</option><option value='eval'>evaluation ms per test example</option>
</select></label> &mdash; one point per row shown above (the mean over its targets shown).</p>
<svg id='plot' width='820' height='440' role='img' aria-label='mean accuracy against cost'></svg>
<h2>Reading this page</h2>
<ul>
<li>Rows of different runs are comparable only where they share the evaluation split, cap and convention
(listed under Runs). References (selection 'none': the base model, the target's own LoRA) stay shown under
every selection filter. The task family filter shows that family's targets and the mean over them; a mean over
fewer targets than the columns shown says 'k of K targets'.</li>
<li>[=base]: every answer equals the base model's; [one answer NN%]: the most frequent answer covers NN% of the
examples (at least 90%). Such cells learned nothing a reader should trust.</li>
<li>train s and trainable params: the mean per training run behind the row (the fit of an MoE method, the
target's LoRA for target_lora, 0 for the base model and for training-free methods' parameters); MoE methods
also start from the shared library LoRAs, whose cost each run lists below. eval ms / example: the evaluation
job's wall time per test example (attaching the adapter and scoring; both conventions come from one pass).
'–': not recorded.</li>
<li>{html.escape(MISSING)}</li>
<li>The CSV beside this page ({TABLE}) holds every cell with raw fractions in [0, 1].</li>
</ul>
<h2>Runs</h2>
{runs_table(runs, out)}
<script>{script}</script>
</body></html>
"""


STYLE = ("body{font-family:sans-serif;margin:2em auto;max-width:1400px}table{border-collapse:collapse;margin:1em 0}"
         "td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}th{cursor:pointer;background:#f4f4f4}"
         "td:nth-child(-n+5),th:nth-child(-n+5){text-align:left;white-space:nowrap}#runs td,#runs th{text-align:left;cursor:auto}"
         "th[aria-sort=ascending]::after{content:' \\25B2'}th[aria-sort=descending]::after{content:' \\25BC'}"
         "#filters label{margin-right:1em}#shown{color:#555}svg text{font-size:11px}a{color:#1a4f8b}")


def to_csv(runs: list[tuple[Run, list[Entry]]], out: Path) -> str:
    """One line per entry and target, raw fractions in [0, 1] (empty where not recorded)."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for run, entries in runs:
        for e in entries:
            for target, s in e.scores.items():
                writer.writerow([run.label, str(run.folder), run.name, run.study["config_hash"], e.model,
                                 family(target), target, e.method, e.selection, e.convention, e.metric,
                                 s.value, _raw(s.ci_low), _raw(s.ci_high), _raw(s.sd), s.seeds, s.n, s.flag,
                                 _raw(e.train_seconds), _raw(e.trainable_params), _raw(e.eval_ms),
                                 link(e, s.anchor, out) or ""])
    return buf.getvalue()


def _raw(x) -> str:
    return "" if x is None else repr(float(x))
