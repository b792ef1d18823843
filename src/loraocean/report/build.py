"""`loraocean report RUN_DIR`: report.md and report.html (same content) with tables, plots and the
findings of one study run, written from the run's results table and job folders.

The report is a list of blocks (heading, paragraph, table, image) rendered twice, to Markdown and to
HTML, so the two files never disagree. Written by hand because it is ~40 lines and no dependency.
report.html is one self-contained file (its figures inline as PNG data URIs), so a copy of it alone
shows everything; report.md links the PNG files in figures/. Both are readable by others (0644).
"""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path

from loraocean.artifacts import READABLE, write_json_atomic, write_text_atomic
from loraocean.report import costs as cost
from loraocean.report import findings as find
from loraocean.report import plots, tables
from loraocean.report.flags import flags
from loraocean.report.oracle import oracle_table
from loraocean.report.tables import Table
from loraocean.study import store


def _evals(run_dir: Path, study: dict) -> list[tuple[dict, dict]]:
    """(eval inputs, eval result) of every finished evaluation job."""
    out = []
    for job in study["jobs"]:
        res = store.job_result(run_dir, job) if job["kind"] == "eval" else None
        if res is not None:
            out.append((job["inputs"], res))
    return out


def chosen_experts(run_dir: Path, study: dict, model: str) -> dict:
    """(target, seed, strategy) -> chosen experts, from the finished selection jobs of `model`."""
    out = {}
    for job in study["jobs"]:
        i = job["inputs"]
        res = store.job_result(run_dir, job) if job["kind"] == "select" and i["model"] == model else None
        if res is not None:
            out[(i["target"], i["seed"], i["strategy"])] = res["experts"]
    return out


def fit_plan(study: dict) -> tuple[list[str], dict[str, dict], dict[str, list[str]]]:
    """From the study's fit jobs: the methods fitted on selected experts (in the study's order),
    the training overrides each method was fitted with (method -> fields; none: the preset's
    budget), and the strategies a method was fitted on beyond the study's own (its default
    selection or its `selection:` list)."""
    order = [m["name"] for m in study["config"]["methods"]]
    study_strategies = study["config"]["selection"]["strategies"]
    fitted, overrides, extra = [], {}, {}
    for job in study["jobs"]:
        i = job["inputs"]
        if job["kind"] != "fit":
            continue
        fitted.append(i["method"])
        if i.get("train"):
            overrides[i["method"]] = i["train"]
        if i["selection"] not in study_strategies:
            extra.setdefault(i["method"], [])
            if i["selection"] not in extra[i["method"]]:
                extra[i["method"]].append(i["selection"])
    return [m for m in order if m in fitted], overrides, extra


def plan_lines(overrides: dict[str, dict], extra: dict[str, list[str]]) -> list[str]:
    """The report's lines on unequal budgets and per-method selections."""
    if overrides:
        named = "; ".join(f"{m}: " + ", ".join(f"{k}={v}" for k, v in t.items()) for m, t in overrides.items())
        lines = [f"Training overrides named in the study file (unequal budgets): {named}. Every other "
                 "trained method trained with the preset's budget."]
    else:
        lines = ["Equal budgets: every trained method trained with the preset's budget (the study file "
                 "names no training override)."]
    lines += [f"{m} was also fitted on the experts of {', '.join(s)} selection (its own), beside the study's "
              "strategies." for m, s in extra.items()]
    return lines


def _failures(run_dir: Path) -> list[dict]:
    folder = run_dir / "failed"
    return [json.loads(p.read_text(encoding="utf-8")) for p in sorted(folder.glob("*.json"))] \
        if folder.is_dir() else []


def build_blocks(run_dir: Path, record: dict | None = None, frames=None) -> list[tuple]:
    """The report's blocks; `record` (when given) receives the findings and cost tables as data.
    `frames`: the (results, predictions) tables of `study.store.tables`, read when not given."""
    study = store.study_file(run_dir)
    df, preds = frames if frames is not None else store.tables(run_dir)  # read, never written
    cfg = study["config"]
    figures = run_dir / "figures"
    figures.mkdir(exist_ok=True)
    method_order = [m["name"] for m in cfg["methods"]]
    moe, overrides, extra = fit_plan(study)
    strategies = list(dict.fromkeys(cfg["selection"]["strategies"] + [s for ss in extra.values() for s in ss]))
    if record is not None:
        record["train_overrides"], record["own_selections"] = overrides, extra
    blocks: list[tuple] = [("h1", f"LoRAOcean study report: {study['name']}")]
    blocks.append(("p", f"Config {study.get('source') or ''} (hash {study['config_hash']}); models: "
                        f"{', '.join(cfg['models'])}; targets: {', '.join(cfg['tasks']['targets'])}; "
                        f"{len(cfg['tasks']['pool'])} tasks in the candidate pool; k = {cfg['selection']['k']}; "
                        f"seeds: {', '.join(map(str, cfg['seeds']))}; evaluation: {cfg['evaluation']['convention']} "
                        f"convention on the {cfg['evaluation']['split']} split (at most "
                        f"{cfg['caps']['max_eval'] or 'all'} examples per target)."))
    if "smollm2-135m" in cfg["models"]:
        blocks.append(("p", "The embedded smollm2-135m is a Q4_1 GGUF copy of SmolLM2-135M-Instruct "
                            "dequantized to fp32: results are for this copy, not the original checkpoint."))
    if df.empty:
        blocks.append(("p", "No finished evaluations yet: run the study first (`loraocean run`)."))
        return blocks
    shows = find.can_show(df)
    blocks.append(("p", f"**{shows}**"))
    if record is not None:
        record["can_show"] = shows
    conventions = list(dict.fromkeys(df["convention"]))
    blocks += find.claim_blocks(df, preds, method_order, record)
    blocks += find.contamination_blocks(run_dir, study)
    for model in list(dict.fromkeys(df["model"])):
        mdf = df[df["model"] == model]
        if len(set(df["model"])) > 1:
            blocks.append(("h2", f"Model {model}"))
        for conv in conventions:
            cdf = mdf[mdf["convention"] == conv]
            tag = f"{model}-{conv}".replace("/", "_")
            flagged = flags(cdf, preds)
            if flagged:
                blocks.append(("h2", f"Cells that show no learning ({conv} convention)"))
                blocks.append(("p", f"{len(flagged)} evaluations answer like the base model on at least 95% "
                                    "of examples ([=base] or [near base NN%]), score inside the 95% interval "
                                    "of the majority-label rate ([at majority NN%]) or give one answer to at "
                                    "least 90% of examples ([one answer NN%]); they are marked in the tables "
                                    "below, and a claim that includes one reads 'cannot tell'."))
            blocks.append(("h2", f"Results ({conv} convention)"))
            used = [s for s in strategies if s in set(cdf["selection"])] or ["none"]
            for strategy in used:
                table = tables.method_by_target(cdf, strategy, method_order, cfg["tasks"]["targets"], flagged)
                table.anchor = tables.anchor("results", model, conv, strategy)  # the leaderboard links here
                blocks.append(("table", table))
            blocks += [("p", line) for line in plan_lines(overrides, extra)]
            main = "manual" if "manual" in used else used[0]
            png = plots.accuracy_bars(cdf, [t for t in cfg["tasks"]["targets"] if t in set(cdf["target"])],
                                      method_order, main, figures / f"accuracy-{tag}.png")
            blocks.append(("img", png, f"accuracy per method and target, {main} selection"))
            if moe and set(cdf["selection"]) - {"none"}:
                blocks.append(("h2", f"Selection strategies ({conv} convention)"))
                blocks.append(("table", tables.selection_by_method(cdf, strategies, moe)))
                png = plots.selection_bars(cdf, strategies, moe, figures / f"selection-{tag}.png")
                blocks.append(("img", png, "mean accuracy per selection strategy and method"))
        costs = cost.cost_table(run_dir, study, mdf, method_order)
        costs.anchor = tables.anchor("costs", model)
        blocks += [("h2", "Costs"), ("table", costs)]
        if record is not None:
            record.setdefault("costs", {})[model] = costs
        chosen = chosen_experts(run_dir, study, model)
        if chosen:
            ranked = strategies + [s for s in cfg["selection"].get("compare", []) if s not in strategies]
            overlap, listing = tables.selection_overlap(chosen, ranked)
            blocks += [("h2", "Which experts each strategy chose"), ("table", overlap), ("table", listing)]
        against = oracle_table(run_dir, study, model)
        if against is not None:
            blocks.append(("table", against))
    blocks += routing_blocks(run_dir, study, moe, figures)
    blocks += provenance_blocks(run_dir, study, df)
    return blocks


def routing_blocks(run_dir: Path, study: dict, methods: list[str], figures: Path) -> list[tuple]:
    fits = _evals(run_dir, study)
    out = [("h2", "Routing: mean gate per layer and expert")]
    shown = 0
    for method in methods:
        candidates = [(i, r) for i, r in fits if i["method"] == method and plots.routing_matrix(r.get("routing"))]
        if not candidates:
            continue
        candidates.sort(key=lambda ir: (ir[0]["selection"] != "manual", ir[0]["target"], ir[0]["seed"]))
        inputs, result = candidates[0]
        layers, experts, matrix = plots.routing_matrix(result["routing"])
        title = f"{method} on {inputs['target']} ({inputs['selection']} selection, seed {inputs['seed']})"
        if plots.is_constant(matrix):  # e.g. uniform's 1/k everywhere: a heatmap would show nothing
            out.append(("p", f"{title}: every gate is {float(matrix.flat[0]):.3f} in every layer and for "
                             "every expert (constant routing), so no heatmap is drawn."))
            shown += 1
            continue
        png = plots.routing_heatmap(method, layers, experts, matrix, title,
                                    figures / f"routing-{method}.png")
        out.append(("img", png, f"routing heatmap of {title}"))
        shown += 1
    if not shown:
        out.append(("p", "No routing statistics were exported by the fitted methods of this run."))
    return out


def provenance_blocks(run_dir: Path, study: dict, df) -> list[tuple]:
    seconds: dict[str, float] = {}
    finished: dict[str, int] = {}
    for job in study["jobs"]:
        res = store.job_result(run_dir, job)
        if res is not None:
            seconds[job["kind"]] = seconds.get(job["kind"], 0.0) + res["seconds"]
            finished[job["kind"]] = finished.get(job["kind"], 0) + 1
    total = {kind: sum(1 for j in study["jobs"] if j["kind"] == kind) for kind in seconds}
    rows = [[kind, str(finished[kind]) if finished[kind] == total[kind] else f"{finished[kind]} of {total[kind]}",
             f"{secs / 60:.1f}"] for kind, secs in seconds.items()]
    out = [("h2", "Provenance"),
           ("table", Table("Compute time of the finished jobs (summed, minutes)", ["stage", "jobs", "minutes"], rows)),
           ("p", "Package versions: " + ", ".join(f"{k} {v}" for k, v in study["versions"].items() if v)),
           ("p", f"Every row of results.sqlite records its config hash, experts, adapters and package "
                 f"versions; `loraocean results {run_dir}` prints them.")]
    failed = _failures(run_dir)
    if failed:
        out.append(("h2", "Failed jobs"))
        out += [("li", f"{f['job']}: {f['error']}") for f in failed]
    return out


# --- rendering -------------------------------------------------------------------------------------

def to_markdown(blocks: list[tuple], base: Path) -> str:
    lines = []
    for n, block in enumerate(blocks):
        kind = block[0]
        if kind != "li" and n and blocks[n - 1][0] == "li":
            lines.append("")
        if kind in ("h1", "h2"):
            lines += ["#" * int(kind[1]) + " " + block[1], ""]
        elif kind == "p":
            lines += [block[1], ""]
        elif kind == "li":
            lines.append(f"- {block[1]}")
        elif kind == "img":
            lines += ["", f"![{block[2]}]({Path(block[1]).relative_to(base).as_posix()})", ""]
        elif kind == "table":
            t: Table = block[1]
            lines += ["", f"**{t.title}**", "", "| " + " | ".join(t.headers) + " |",
                      "|" + "|".join("---" for _ in t.headers) + "|"]
            lines += ["| " + " | ".join(r) + " |" for r in t.rows]
            lines += ([""] + [t.note] if t.note else []) + [""]
    return "\n".join(lines).replace("\n\n\n", "\n\n") + "\n"


def _inline(text: str) -> str:
    """Escape, then the one Markdown feature the blocks use: **bold**."""
    parts = html.escape(text).split("**")
    return "".join(f"<b>{p}</b>" if i % 2 else p for i, p in enumerate(parts))


def to_html(blocks: list[tuple], base: Path, title: str) -> str:
    out = ["<!doctype html><html><head><meta charset='utf-8'>", f"<title>{html.escape(title)}</title>",
           "<style>body{font-family:sans-serif;max-width:1100px;margin:2em auto}table{border-collapse:"
           "collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}"
           "td:first-child,th:first-child{text-align:left}img{max-width:100%}</style></head><body>"]
    in_list = False
    for block in blocks:
        kind = block[0]
        if kind != "li" and in_list:
            out.append("</ul>")
            in_list = False
        if kind in ("h1", "h2"):
            out.append(f"<{kind}>{_inline(block[1])}</{kind}>")
        elif kind == "p":
            out.append(f"<p>{_inline(block[1])}</p>")
        elif kind == "li":
            if not in_list:
                out.append("<ul>")
                in_list = True
            out.append(f"<li>{_inline(block[1])}</li>")
        elif kind == "img":  # inline, so the page travels alone
            data = base64.b64encode(Path(block[1]).read_bytes()).decode("ascii")
            out.append(f"<p><img src='data:image/png;base64,{data}' alt='{html.escape(block[2])}'></p>")
        elif kind == "table":
            t: Table = block[1]
            ident = f" id='{html.escape(t.anchor)}'" if t.anchor else ""
            out.append(f"<p{ident}><b>{html.escape(t.title)}</b></p><table><tr>"
                       + "".join(f"<th>{html.escape(h)}</th>" for h in t.headers) + "</tr>")
            out += ["<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in t.rows]
            out.append("</table>" + (f"<p><small>{html.escape(t.note)}</small></p>" if t.note else ""))
    if in_list:
        out.append("</ul>")
    out.append("</body></html>")
    return "\n".join(out) + "\n"


def write_report(run_dir: str | Path) -> tuple[Path, Path]:
    """report.md, report.html and results.json (the same findings and costs as data, every results
    row, the code's git commit, package versions and device)."""
    run_dir = Path(run_dir)
    record: dict = {}
    frames = store.tables(run_dir)
    blocks = build_blocks(run_dir, record, frames)
    title = blocks[0][1]
    md = write_text_atomic(run_dir / "report.md", to_markdown(blocks, run_dir), READABLE)
    page = write_text_atomic(run_dir / "report.html", to_html(blocks, run_dir, title), READABLE)
    study = store.study_file(run_dir)
    data = cost.results_json(run_dir, study, frames[0], record.get("claims", []),
                             record.get("costs", {}), record.get("can_show"))
    data["train_overrides"] = record.get("train_overrides", {})  # method -> fields; {}: equal budgets
    data["own_selections"] = record.get("own_selections", {})    # method -> strategies beyond the study's
    write_json_atomic(run_dir / "results.json", data, READABLE)
    return md, page
