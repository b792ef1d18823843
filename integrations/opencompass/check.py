"""Run OpenCompass on one small task with a LoRA on a tiny model and compare with our scorer.

Runs inside the OpenCompass environment (`make opencompass-check` builds it and runs this):

    .venv-opencompass/bin/python integrations/opencompass/check.py [--limit 20] [--work DIR] [--mode normal]

Steps: train nothing, but make a seeded random LoRA on tiny-llama (PEFT, non-zero B) with a card;
write BIG-bench logical_deduction/three_objects (test split, `--limit` examples) as OpenCompass
JSONL + a PPL dataset config; run the `opencompass` command on `eval_loraocean_example.py`'s
pattern (our `LoraOceanModel` + that dataset); then score the same examples with
`loraocean.evaluation.evaluate(convention="opencompass")` and compare per-example predictions and
accuracy. `--mode debug` runs OpenCompass with `--debug` (one process, the model built in it);
`--mode normal` without it, OpenCompass's usual way: its runner starts worker processes that rebuild
`LoraOceanModel` from the dumped config, so this checks that the config carries everything a worker
needs. Writes the mode's entry of `last_result.json` beside this file (date, versions, figures) and
exits 1 on a disagreement.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
TASK = "logical_deduction/three_objects"


def make_lora(out: Path) -> None:
    import torch
    from peft import LoraConfig, get_peft_model

    from loraocean.library.card import write_card
    from loraocean.models import load

    torch.manual_seed(0)
    model, _ = load("tiny-llama")
    peft = get_peft_model(model, LoraConfig(r=4, lora_alpha=16, target_modules=["q_proj", "v_proj"],
                                            init_lora_weights=False))
    peft.save_pretrained(out)
    write_card(out, {"model": "tiny-llama", "task": "bb_" + TASK.replace("/", "_")})  # sealed, as ours are


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=20)
    parser.add_argument("--work", type=Path, default=ROOT / ".cache" / "opencompass-check")
    parser.add_argument("--mode", choices=("debug", "normal"), default="debug")
    args = parser.parse_args()
    bigbench = ROOT.parent / "shared" / "data" / "bigbench"
    if bigbench.is_dir():
        os.environ.setdefault("LORAOCEAN_BIGBENCH", str(bigbench))

    from loraocean.checkpoints import attach
    from loraocean.evaluation import evaluate
    from loraocean.bridges.opencompass_bridge import write_opencompass_task
    from loraocean.models import load
    from loraocean.tasks import get_task, load_split

    args.work.mkdir(parents=True, exist_ok=True)
    adapter = args.work / "lora"
    if not adapter.exists():
        make_lora(adapter)
    spec = get_task("bb_" + TASK.replace("/", "_"))
    examples = load_split(spec, "test", limit=args.limit)
    model, tok = load("tiny-llama")
    model = attach(model, adapter)

    data, config = write_opencompass_task(spec, examples, tok, args.work, model_name="tiny-llama",
                                          adapter=str(adapter))
    start = time.perf_counter()
    outputs = args.work / f"outputs-{args.mode}"
    command = [str(Path(sys.executable).parent / "opencompass"), str(config), "-w", str(outputs)]
    run = subprocess.run(command + (["--debug"] if args.mode == "debug" else []), capture_output=True,
                         text=True)
    oc_seconds = time.perf_counter() - start
    if run.returncode != 0:
        sys.stdout.write(run.stdout[-4000:] + run.stderr[-4000:])
        sys.exit(f"opencompass exited with {run.returncode}")
    preds_file = sorted(outputs.rglob(f"predictions/**/{spec.name}.json"))[-1]
    oc_preds = json.loads(preds_file.read_text())
    oc_labels = [int(oc_preds[str(i)]["prediction"]) for i in range(len(examples))]

    ours = evaluate(model, tok, spec, examples, convention="opencompass")
    our_labels = [p["predictions"]["opencompass ppl"] for p in ours.predictions]
    same = sum(a == b for a, b in zip(oc_labels, our_labels))
    # OpenCompass records each label's PPL per example: compare with our whole-prompt CE.
    ppl_diff = max(abs(float(oc_preds[str(i)][f"label: {k}"]["PPL"]) - ce)
                   for i, p in enumerate(ours.predictions) for k, ce in enumerate(p["whole_ce"]))
    oc_acc = sum(p == ex.label for p, ex in zip(oc_labels, examples)) / len(examples)
    result = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "mode": args.mode, "task": spec.name, "n": len(examples), "model": "tiny-llama + random LoRA (r=4, q/v)",
        "identical_predictions": f"{same}/{len(examples)}",
        "max_ppl_difference": ppl_diff,
        "prediction_counts": {str(k): oc_labels.count(k) for k in sorted(set(oc_labels))},
        "opencompass_acc": oc_acc, "loraocean_opencompass_ppl_acc": ours.value,
        "opencompass_run_seconds": round(oc_seconds, 1),
        "versions": {name: _version(name) for name in ("opencompass", "torch", "transformers", "peft", "numpy")},
    }
    path = HERE / "last_result.json"
    results = json.loads(path.read_text()) if path.is_file() else {}
    if "task" in results:  # the earlier one-mode layout: that run was --debug
        results = {"debug": results}
    path.write_text(json.dumps(results | {args.mode: result}, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    if same != len(examples) or ppl_diff > 1e-3:
        sys.exit(1)


def _version(name: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


if __name__ == "__main__":
    main()
