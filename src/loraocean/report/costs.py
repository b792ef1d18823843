"""What each method cost beside what it scored, and `results.json`, the machine-readable report.

Costs come from the finished job folders: a fitted method's training log (`card.train_log` of its
fit jobs), the library LoRA's own training log for a reference evaluated on it, nothing for the
base model. The
library LoRAs the MoE methods start from are shared by all of them and shown as their own row.
"""

from __future__ import annotations

import json
import platform
import subprocess
from pathlib import Path

import numpy as np

from loraocean.report.tables import Table, ordered
from loraocean.study.store import job_dir, job_result

LIBRARY_ROW = "library LoRA (each)"


def training(run_dir: Path, study: dict, df) -> dict[str, list[dict]]:
    """method -> one record per distinct training run behind its evaluations: trainable params,
    optimizer steps, training tokens, wall seconds (the job's own time)."""
    jobs = {j["key"]: j for j in study["jobs"]}
    out: dict[str, list[dict]] = {}
    seen = set()
    for _, row in df.drop_duplicates(["eval_key"]).iterrows():
        eval_job = jobs.get(row["eval_key"])
        if eval_job is None:
            continue
        source = row["fit_key"] if isinstance(row["fit_key"], str) else next(
            (d for d in eval_job["deps"] if jobs[d]["kind"] == "lora"), None)
        if source in seen:
            continue
        seen.add(source)
        if source is None:  # the base model: nothing trained
            out.setdefault(row["method"], []).append({"trainable_params": 0, "steps": 0, "tokens": 0, "seconds": 0.0})
            continue
        res = job_result(run_dir, jobs[source]) or {}
        log = res.get("train") if jobs[source]["kind"] == "lora" else (res.get("card") or {}).get("train_log")
        log = log or {}
        sweep = (res.get("card") or {}).get("lr_sweep") or {}
        out.setdefault(row["method"], []).append({
            "trainable_params": log.get("trainable_params", 0 if not log else None),
            "steps": log.get("steps", 0), "tokens": log.get("tokens", 0), "seconds": res.get("seconds"),
            "lr": sweep.get("chosen"), "grid": sweep.get("grid")})
    libs = [(job_result(run_dir, j) or {}) for j in study["jobs"] if j["kind"] == "lora"]
    out[LIBRARY_ROW] = [{"trainable_params": (r.get("train") or {}).get("trainable_params"),
                         "steps": (r.get("train") or {}).get("steps"), "tokens": (r.get("train") or {}).get("tokens"),
                         "seconds": r.get("seconds")} for r in libs if r]
    return out


def inference(run_dir: Path, study: dict, df) -> dict[str, list[dict]]:
    """method -> the inference cost of each of its evaluations (eval result `inference`: latency
    per example, tokens per second, peak memory)."""
    jobs = {j["key"]: j for j in study["jobs"]}
    out: dict[str, list[dict]] = {}
    for _, row in df.drop_duplicates(["eval_key"]).iterrows():
        job = jobs.get(row["eval_key"])
        cost = ((job_result(run_dir, job) or {}).get("inference") if job else None) or {}
        if cost:
            out.setdefault(row["method"], []).append(cost)
    return out


def _lrs(records: list[dict]) -> str:
    """The learning rates a method's runs chose on dev, most frequent first, with their counts."""
    chosen = [r["lr"] for r in records if r.get("lr") is not None]
    if not chosen:
        return "–"
    counts = {lr: chosen.count(lr) for lr in sorted(set(chosen), key=lambda x: -chosen.count(x))}
    return ", ".join(f"{lr:g}" + (f" x{c}" if len(counts) > 1 else "") for lr, c in counts.items())


def _mean(records: list[dict], key: str) -> float | None:
    values = [r[key] for r in records if r.get(key) is not None]
    return float(np.mean(values)) if values else None


def _num(x: float | None, fmt: str = "{:,.0f}") -> str:
    return "–" if x is None else fmt.format(x)


def cost_table(run_dir: Path, study: dict, df, methods: list[str]) -> Table:
    """Rows: methods (and the shared library LoRA); columns: mean cost per training run, n."""
    runs = training(run_dir, study, df)
    served = inference(run_dir, study, df)
    grids = {tuple(r["grid"]) for rs in runs.values() for r in rs if r.get("grid")}
    rows, values = [], {}
    for method in ordered([m for m in runs if m != LIBRARY_ROW], methods) + [LIBRARY_ROW]:
        records = runs.get(method, [])
        if not records:
            continue
        ns = df[df["method"] == method]["n"].dropna().astype(int)
        cells = {"trainable_params": _mean(records, "trainable_params"), "steps": _mean(records, "steps"),
                 "tokens": _mean(records, "tokens"), "seconds": _mean(records, "seconds")}
        cost = served.get(method, [])
        cells.update({"latency_ms": _mean(cost, "latency_ms"), "tokens_per_s": _mean(cost, "tokens_per_s"),
                      "peak_mb": _mean(cost, "peak_mb")})
        values.update({(method, k): v for k, v in cells.items()})
        if method == LIBRARY_ROW:
            n = "n/a"  # not evaluated on its own: a library LoRA is an expert of the methods above
        else:
            n = "–" if ns.empty else (str(ns.min()) if ns.min() == ns.max() else f"{ns.min()}–{ns.max()}")
        rows.append([method, _num(cells["trainable_params"]), _num(cells["steps"]), _num(cells["tokens"]),
                     _num(cells["seconds"], "{:.1f}"), str(len(records)), n,
                     # no learning rate was chosen on dev for an untuned run (library LoRAs, training-free)
                     _lrs(records) if any(r.get("grid") for r in records) else "n/a"]
                    + (["n/a"] * 3 if method == LIBRARY_ROW else
                       [_num(cells["latency_ms"], "{:.1f}"), _num(cells["tokens_per_s"], "{:,.0f}"),
                        _num(cells["peak_mb"], "{:,.0f}")]))
    memory = {c.get("memory") for cs in served.values() for c in cs} - {None}
    tuning = (f"Equal tuning: each trained method's runs chose their learning rate from the same grid "
              f"({', '.join(f'{x:g}' for x in sorted(next(iter(grids))))}) on the target's dev split, each "
              "value training the same steps from the same start; the chosen values are listed. "
              if len(grids) == 1 else "")
    return Table(title="Cost of each method (training: mean per training run; inference: mean per evaluation)",
                 headers=["method", "trainable params", "optimizer steps", "training tokens",
                          "wall s", "training runs", "test examples per cell", "lr (chosen on dev)",
                          "latency (ms/example)", "tokens/s", "peak memory (MB)"],
                 rows=rows, values=values,
                 note=tuning + "Training-free methods build in the wall time shown and train nothing; the "
                      "wall time of a tuned fit covers every value of its grid. MoE methods also start from "
                      "the shared library LoRAs (last row, each). Inference: the evaluation's wall time per "
                      "example, each example's prompt and reference-answer tokens per second (the same "
                      "tokens for every method) and peak memory ("
                      + (", ".join(sorted(memory)) or "not recorded")
                      + "; a process peak is an upper bound shared by the jobs of one worker)."
                      + (" '–': not recorded by the job (its folder was written before this column existed)."
                         if any("–" in r for r in rows) else ""))


def git_commit() -> str | None:
    """The commit of the code that writes the report (with '+dirty' for uncommitted changes)."""
    here = Path(__file__).resolve().parent
    try:
        head = subprocess.run(["git", "-C", str(here), "rev-parse", "HEAD"], capture_output=True,
                              text=True, check=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(here), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, check=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return head + ("+dirty" if dirty else "")


def devices(run_dir: Path, study: dict) -> list[str]:
    """Devices the run's library LoRAs were trained on (their cards), else this machine's."""
    found = set()
    for job in study["jobs"]:
        res = job_result(run_dir, job) if job["kind"] == "lora" else None
        card = (job_dir(run_dir, "lora", job["key"]) / res["adapter"] / "card.json") if res else None
        if card is not None and card.is_file():
            found.add(json.loads(card.read_text(encoding="utf-8")).get("device"))
    found.discard(None)
    if found:
        return sorted(found)
    import torch

    return [torch.cuda.get_device_name(0) if torch.cuda.is_available() else f"cpu ({platform.processor() or platform.machine()})"]


def results_json(run_dir: Path, study: dict, df, claims: list, costs: dict[str, Table],
                 can_show: str | None = None) -> dict:
    """The machine-readable report: every results row, the claims and costs, and provenance."""
    from loraocean.artifacts import package_versions

    versions = package_versions(("loraocean", "torch", "transformers", "peft", "safetensors", "accelerate",
                                 "datasets", "numpy", "pandas"))
    return {"study": study["name"], "config_hash": study["config_hash"], "git_commit": git_commit(),
            "versions": versions, "study_versions": study["versions"], "device": devices(run_dir, study),
            "results": json.loads(df.drop(columns=["versions"], errors="ignore").to_json(orient="records")),
            "can_show": can_show, "claims": claims,
            "costs": {model: [dict(zip(t.headers, r)) for r in t.rows] for model, t in costs.items()}}
