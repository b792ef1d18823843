"""The results store: `<run>/results.sqlite`, one row per (model, target, method, selection, seed,
convention), plus the per-example correctness the paired tests of the report need.

The job folders are the source of truth; `collect` rebuilds the database from them (atomically:
written beside, then renamed), so a killed study never leaves a half-written table.

    results(model, target, method, selection, seed, convention, metric, value, ci_low, ci_high, n,
            majority_rate, experts, eval_seconds, fit_seconds, select_seconds, lora_seconds,
            adapters, eval_key, fit_key, select_key, config_hash, versions, created)
    predictions(eval_key, convention, example_id, correct, prediction)
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import sqlite3
import time
from pathlib import Path

from loraocean.artifacts import read_json_object, read_text
from loraocean.errors import ConfigError, DataError, LoraOceanError

DB_NAME = "results.sqlite"
JOBS = "jobs"  # <run>/jobs/<kind>-<key>/: `job_dir`
COLUMNS = {
    "model": "TEXT", "target": "TEXT", "method": "TEXT", "selection": "TEXT", "seed": "INTEGER",
    "convention": "TEXT", "metric": "TEXT", "value": "REAL", "ci_low": "REAL", "ci_high": "REAL",
    "n": "INTEGER", "majority_rate": "REAL", "experts": "TEXT", "eval_seconds": "REAL",
    "fit_seconds": "REAL", "select_seconds": "REAL", "lora_seconds": "REAL", "adapters": "TEXT",
    "eval_key": "TEXT", "fit_key": "TEXT", "select_key": "TEXT", "config_hash": "TEXT",
    "versions": "TEXT", "created": "TEXT",
}
KEY = ("model", "target", "method", "selection", "seed", "convention")


def _load(path: Path, fix: str = "") -> dict | None:
    """A JSON object file, None when absent; a damaged one is a DataError naming it."""
    if not path.is_file():
        return None
    fix = fix or f"remove {path.parent} and rerun `loraocean run` to redo that job"
    return read_json_object(path, fix=fix)


STUDY_FIELDS = {"name": str, "config_hash": str, "config": dict, "versions": dict, "jobs": list}


def study_file(run_dir: str | Path) -> dict:
    path = Path(run_dir) / "study.json"
    fix = "rerun `loraocean run CONFIG --run-dir DIR` to rewrite it (finished jobs are kept)"
    data = _load(path, fix)
    if data is None:
        raise LoraOceanError(f"{run_dir} is not a study run folder (no study.json); "
                             "run `loraocean run CONFIG --run-dir DIR` first")
    for key, kind in STUDY_FIELDS.items():
        if not isinstance(data.get(key), kind):
            raise DataError(path, "damaged (missing or wrong type)", field=key, fix=fix)
    for i, job in enumerate(data["jobs"]):
        if not (isinstance(job, dict) and isinstance(job.get("key"), str) and isinstance(job.get("kind"), str)
                and isinstance(job.get("deps", []), list) and isinstance(job.get("rows", []), list)):
            raise DataError(path, "damaged job entry", field=f"jobs[{i}]", fix=fix)
    return data


def job_dir(run_dir: str | Path, kind: str, key: str) -> Path:
    """`<run>/jobs/<kind>-<key>/`: the folder of one job (its result.json and artifacts)."""
    return Path(run_dir) / JOBS / f"{kind}-{key}"


def job_result(run_dir: str | Path, job: dict) -> dict | None:
    """The result.json of a job of study.json (`kind`, `key`); None while it has not finished."""
    return _load(job_dir(run_dir, job["kind"], job["key"]) / "result.json")


def rows_of(run_dir: Path, study: dict) -> tuple[list[dict], list[tuple]]:
    jobs = {j["key"]: j for j in study["jobs"]}

    def result(key: str | None) -> dict | None:
        return job_result(run_dir, jobs[key]) if key in jobs else None

    rows, preds = [], []
    for job in study["jobs"]:
        if job["kind"] != "eval":
            continue
        res = result(job["key"])
        if res is None:
            continue
        try:
            rows += _rows(job, jobs, res, result, study)
        except (KeyError, TypeError, AttributeError, ValueError) as err:
            folder = job_dir(run_dir, "eval", job["key"])
            raise DataError(folder / "result.json", f"damaged ({type(err).__name__}: {err}), or a job it "
                            "depends on is", fix=f"remove {folder} and rerun `loraocean run` to redo it") from None
        preds += _predictions(job_dir(run_dir, "eval", job["key"]) / "predictions.jsonl", job["key"])
    return rows, preds


def _rows(job: dict, jobs: dict, res: dict, result, study: dict) -> list[dict]:
    """The results rows of one finished eval job."""
    rows = []
    fit_key = next((d for d in job["deps"] if jobs[d]["kind"] == "fit"), None)
    fit = result(fit_key)
    select_key = next((d for d in jobs[fit_key]["deps"] if jobs[d]["kind"] == "select"), None) \
        if fit_key else None
    sel = result(select_key)
    lora_secs = sum((result(d) or {}).get("seconds", 0.0) for d in
                    (jobs[select_key]["deps"] if select_key else job["deps"]))
    experts = (sel or {}).get("experts") or res.get("experts") or []
    for score in res.get("scores", []):
        for identity in job["rows"]:
            rows.append({
                **identity, "convention": score["convention"], "metric": score["metric"],
                "value": score["value"], "ci_low": score.get("ci_low"), "ci_high": score.get("ci_high"),
                "n": score.get("n"), "majority_rate": score.get("majority_rate"),
                "experts": json.dumps(experts), "eval_seconds": res.get("seconds"),
                "fit_seconds": (fit or {}).get("seconds"), "select_seconds": (sel or {}).get("seconds"),
                "lora_seconds": round(lora_secs, 3), "adapters": json.dumps(res.get("adapters", [])),
                "eval_key": job["key"], "fit_key": fit_key, "select_key": select_key,
                "config_hash": study["config_hash"], "versions": json.dumps(study["versions"]),
                "created": res.get("created", ""),
            })
    return rows


def _predictions(path: Path, key: str) -> list[tuple]:
    if not path.is_file():
        return []
    fix = f"remove {path.parent} and rerun `loraocean run` to redo that evaluation"
    out = []
    for n, line in enumerate(read_text(path, fix=fix).split("\n"), start=1):
        if not line.strip():
            continue
        try:
            p = json.loads(line)
            out.append((key, str(p["convention"]), str(p["id"]), int(bool(p["correct"])),
                        str(p.get("prediction", ""))))
        except (json.JSONDecodeError, TypeError, KeyError) as err:
            raise DataError(path, f"damaged prediction ({type(err).__name__}: {err})", line=n, fix=fix) from None
    return out


def collect(run_dir: str | Path) -> Path:
    """Rebuild `<run>/results.sqlite` from the finished job folders."""
    run_dir = Path(run_dir)
    study = study_file(run_dir)
    rows, preds = rows_of(run_dir, study)  # first: a damaged job folder leaves no temporary file
    final = run_dir / DB_NAME
    tmp = run_dir / f".{DB_NAME}.{os.getpid()}.tmp"
    tmp.unlink(missing_ok=True)
    con = sqlite3.connect(tmp)
    try:
        _fill(con, study, rows, preds)
        con.commit()
    finally:
        con.close()
    os.replace(tmp, final)
    return final


def tables(run_dir: str | Path):
    """(results, predictions) DataFrames, exactly as `query` and `predictions` read them after a
    `collect`, built in memory from the job folders: for readers (the report) that must not
    write the run folder."""
    import pandas as pd

    study = study_file(run_dir)
    with contextlib.closing(sqlite3.connect(":memory:")) as con:
        _fill(con, study, *rows_of(Path(run_dir), study))
        return (pd.read_sql_query(f"SELECT * FROM results ORDER BY {', '.join(KEY)}", con),
                pd.read_sql_query("SELECT * FROM predictions", con))


def _fill(con, study: dict, rows: list[dict], preds: list[tuple]) -> None:
    """Create and fill the results, predictions and meta tables."""
    cols = ", ".join(f"{k} {t}" for k, t in COLUMNS.items())
    con.execute(f"CREATE TABLE results ({cols}, UNIQUE ({', '.join(KEY)}))")
    con.execute("CREATE TABLE predictions (eval_key TEXT, convention TEXT, example_id TEXT, "
                "correct INTEGER, prediction TEXT)")
    con.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT)")
    names = list(COLUMNS)
    con.executemany(f"INSERT OR REPLACE INTO results ({', '.join(names)}) VALUES "
                    f"({', '.join('?' for _ in names)})", [[r.get(k) for k in names] for r in rows])
    con.executemany("INSERT INTO predictions VALUES (?, ?, ?, ?, ?)", preds)
    con.executemany("INSERT INTO meta VALUES (?, ?)", [
        ("name", study["name"]), ("config_hash", study["config_hash"]),
        ("config", json.dumps(study["config"])), ("collected", time.strftime("%Y-%m-%d %H:%M:%S"))])


_FILTER = re.compile(r"^\s*([a-z_]+)\s*(>=|<=|!=|=|>|<)\s*(.*?)\s*$")


def parse_where(clauses: list[str]) -> tuple[str, list]:
    """`["selection=manual", "value>=0.5"]` -> SQL condition and parameters (columns checked)."""
    parts, params = [], []
    for clause in clauses:
        m = _FILTER.match(clause)
        if not m:
            raise ConfigError(f"--where {clause!r}: write COLUMN=VALUE (or !=, >=, <=, >, <)")
        col, op, value = m.groups()
        if col not in COLUMNS:
            raise ConfigError(f"--where {clause!r}: unknown column {col!r}; columns: {', '.join(COLUMNS)}")
        if COLUMNS[col] in ("REAL", "INTEGER"):
            try:
                value = float(value)
            except ValueError:
                raise ConfigError(f"--where {clause!r}: {col} is a number") from None
        parts.append(f"{col} {op} ?")
        params.append(value)
    return (" AND ".join(parts) or "1"), params


def query(run_dir: str | Path, where: list[str] | None = None):
    """The results table (a pandas DataFrame), optionally filtered."""
    path = Path(run_dir) / DB_NAME
    if not path.is_file():
        study_file(run_dir)  # a clear error when this is not a run folder at all
        collect(run_dir)
    cond, params = parse_where(where or [])
    return _read_sql(path, f"SELECT * FROM results WHERE {cond} ORDER BY {', '.join(KEY)}", params)


def _read_sql(path: Path, sql: str, params=()):
    import pandas as pd

    try:
        with contextlib.closing(sqlite3.connect(path.resolve().as_uri() + "?mode=ro", uri=True)) as con:
            return pd.read_sql_query(sql, con, params=params)
    except (sqlite3.DatabaseError, pd.errors.DatabaseError) as err:
        raise DataError(path, f"damaged results table ({str(err).splitlines()[0]})",
                        fix=f"delete it; `loraocean results {path.parent}` rebuilds it from the job "
                            "folders") from None


def predictions(run_dir: str | Path):
    """Per-example correctness of every evaluation (DataFrame)."""
    return _read_sql(Path(run_dir) / DB_NAME, "SELECT * FROM predictions")
