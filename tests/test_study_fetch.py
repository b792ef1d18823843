"""A study that needs BIG-bench tasks nobody has on disk fetches them once, saying so."""

from __future__ import annotations

import io
import json
import tarfile

from loraocean.study import load_config
from loraocean.study.runner import ensure_data
from loraocean.tasks import load_split
from loraocean.tasks import fetch


def sdist(path, tasks):
    """A .tar.gz laid out like the bigbench sdist, with hand-written task files."""
    with tarfile.open(path, "w:gz") as tar:
        for name in tasks:
            data = json.dumps({"examples": [{"input": f"{name} question {i}?",
                                             "target_scores": {"yes": int(i % 2), "no": 1 - int(i % 2)}}
                                            for i in range(20)]}).encode()
            info = tarfile.TarInfo(f"bigbench-1.0.0/bigbench/benchmark_tasks/{name}/task.json")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def test_missing_bigbench_is_fetched_once_and_announced(tmp_path, monkeypatch):
    monkeypatch.setenv("LORAOCEAN_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("LORAOCEAN_BIGBENCH", raising=False)
    archive = sdist(tmp_path / "bigbench-1.0.0.tar.gz", ["snarks", "winowhy", "implicatures"])
    calls = []

    def fake_download(**kw):  # the PyPI download replaced by the local archive; extraction is real
        calls.append(kw)
        return real(archive=archive, **kw)

    real = fetch.fetch_bigbench
    monkeypatch.setattr(fetch, "fetch_bigbench", fake_download)
    (tmp_path / "s.yaml").write_text(
        "models: [tiny-llama]\ntasks: {targets: [bb_snarks], pool: [bb_winowhy, bb_implicatures]}\n"
        "methods: [base]\n")
    cfg = load_config(tmp_path / "s.yaml")
    said = []
    ensure_data(cfg, said.append)
    assert len(calls) == 1
    assert "fetching the bigbench 1.0.0 sdist from PyPI once" in said[0]
    assert "bb_implicatures" in said[0] and "ready in" in said[1]
    assert len(load_split("bb_winowhy", "train")) > 5
    said.clear()
    ensure_data(cfg, said.append)  # now on disk: nothing to fetch, nothing said
    assert len(calls) == 1 and not said
