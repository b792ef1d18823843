"""The job engine's scheduling on the lite study's job graph: waves by kind vs by dependency, and
base model loads with and without cache affinity.

    python bench/engine_schedule.py [--seconds 30] [--workers 2]

The graph is the real one (`studies/lite.yaml` with a second base model, tiny-llama, so affinity has
something to choose: 2 x 94 jobs) run through `run_study` on a local pool of `--workers` processes.
The stages are stand-ins: each sleeps its job's estimated cost (`study.jobs.estimate_seconds`, the
costs the ETA uses) scaled so the whole graph sleeps `--seconds` in total, and asks its worker's
model cache for its base model; a stand-in loader makes a small tensor, and each worker's cache
holds one model (as a GPU holds one 7B model), so a job of the other model is a reload.
Prints wall time and loads per schedule. Never asserts on time.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def fake_load(name: str):
    import torch

    return torch.nn.Linear(8, 8), None


def _stand_in(job, ctx) -> None:
    from loraocean.engine import CACHE
    from loraocean.study.jobs import estimate_seconds

    CACHE.loader = fake_load
    ctx.base(job.inputs["model"])
    time.sleep(estimate_seconds(job, ctx.cfg) * float(os.environ["LORAOCEAN_BENCH_SCALE"]))


def lora(job, ctx, out):
    _stand_in(job, ctx)
    return {"adapter": "."}


def select(job, ctx, out):
    _stand_in(job, ctx)
    return {"experts": job.inputs["candidates"][: job.inputs["k"]]}


def fit(job, ctx, out):
    _stand_in(job, ctx)
    return {"experts": ctx.dep_result(job.deps[0])["experts"], "checkpoint": "."}


def evaluate(job, ctx, out):
    _stand_in(job, ctx)
    return {"scores": []}


STAGES = {"lora": lora, "select": select, "fit": fit, "eval": evaluate}


def main() -> None:
    from loraocean.study import expand, load_config, run_study
    from loraocean.study.jobs import estimate_seconds

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=30.0, help="total sleep of the whole graph")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    cfg = load_config(ROOT / "studies" / "lite.yaml", overrides={"models": ["smollm2-135m", "tiny-llama"]})
    jobs = expand(cfg)
    scale = args.seconds / sum(estimate_seconds(j, cfg) for j in jobs)
    os.environ["LORAOCEAN_BENCH_SCALE"] = str(scale)  # LORAOCEAN_* travels to the workers
    os.environ["LORAOCEAN_CACHE_GB"] = str(400 / 2**30)  # room for one stand-in model (288 bytes) per worker
    print(f"lite study x 2 base models: {len(jobs)} jobs, {args.seconds:.0f} s of stand-in work in "
          f"total, {args.workers} worker processes")
    print(f"{'schedule':12s} {'affinity':9s} {'wall s':>7s} {'loads':>6s}")
    rows = {}
    for waves, affinity in ((True, True), (False, True), (False, False)):
        with tempfile.TemporaryDirectory() as tmp:
            start = time.perf_counter()
            s = run_study(cfg, Path(tmp) / "run", stages=STAGES, workers=args.workers, waves=waves,
                          affinity=affinity, fetch=False)
            wall = time.perf_counter() - start
        assert s.ran == len(jobs) and not s.failed, s.failed
        rows[(waves, affinity)] = (wall, s.loads)
        print(f"{'waves' if waves else 'dependency':12s} {'yes' if affinity else 'no':9s} {wall:7.1f} {s.loads:6d}")
    (w_wall, _), (d_wall, d_loads), (_, n_loads) = rows[(True, True)], rows[(False, True)], rows[(False, False)]
    print(f"dependency / waves wall time: {d_wall / w_wall:.2f}; loads without / with affinity: "
          f"{n_loads} / {d_loads}")


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT / "src"))
    main()
