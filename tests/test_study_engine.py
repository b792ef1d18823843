"""A study with the real stages on tiny-llama (its target a relative `bigbench:PATH`) gives the same
results table in this process (jobs get private copies of the cached base model) and on a pool of
two worker processes whose model cache has room for no copy (jobs get the cached model itself, and
the cache reloads it after a job that changed it)."""

from __future__ import annotations

import shutil

import pytest

from conftest import BIGBENCH
from loraocean.study import load_config, query, run_study
from test_engine_cluster import COLUMNS, STUDY


@pytest.mark.slow
def test_tight_model_cache_and_process_pool_give_the_in_process_results(tmp_path, monkeypatch):
    shutil.copytree(BIGBENCH / "sports_understanding", tmp_path / "data" / "sports_understanding")
    (tmp_path / "driver").mkdir()
    (tmp_path / "driver" / "study.yaml").write_text(STUDY)
    monkeypatch.chdir(tmp_path / "driver")
    cfg = load_config("study.yaml")
    roomy = run_study(cfg, tmp_path / "roomy", fetch=False)
    monkeypatch.setenv("LORAOCEAN_CACHE_GB", "1e-9")  # travels to the pool's workers
    tight = run_study(cfg, tmp_path / "tight", workers=2, fetch=False)
    assert roomy.ran == tight.ran == 8 and not roomy.failed and not tight.failed
    assert roomy.loads <= 1  # in this process: one load (none when an earlier test loaded it)
    a = query(tmp_path / "roomy")[COLUMNS].reset_index(drop=True)
    b = query(tmp_path / "tight")[COLUMNS].reset_index(drop=True)
    assert len(a) == 3 and a.equals(b)
