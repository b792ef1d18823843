"""Routing statistics: the mean gate weight of each expert at each MoE layer over a data split
(padding excluded), exported as JSON and CSV for plots."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import torch

from loraocean.artifacts import write_json_atomic, write_text_atomic
from loraocean.batching import encode, pad_batch


@torch.no_grad()
def routing_stats(model, tokenizer, examples, batch_size: int = 8, max_length: int = 512) -> dict:
    """{"layers": [...], "experts": [...], "mean_gates": layers x experts, "tokens": n}."""
    layers = model.layers()
    sums = {name: None for name in layers}
    tokens = 0
    device = model.device
    model.eval()
    for start in range(0, len(examples), batch_size):
        items = [encode(ex, tokenizer, max_length=max_length) for ex in examples[start:start + batch_size]]
        batch = {k: v.to(device) for k, v in pad_batch(items, tokenizer.pad_token_id).items()}
        model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
        mask = batch["attention_mask"][..., None].float()
        tokens += int(mask.sum())
        for name, layer in layers.items():
            g = (model.gates_of(layer).float() * mask).sum((0, 1))
            sums[name] = g if sums[name] is None else sums[name] + g
    names = [e["name"] for e in model.expert_info]
    return {"method": model.method, "layers": list(layers), "experts": names, "tokens": tokens,
            "mean_gates": [(sums[n] / max(tokens, 1)).tolist() for n in layers]}


def write_routing(stats: dict, out_dir: str | Path) -> tuple[Path, Path]:
    """routing.json and routing.csv (columns layer, expert, mean_gate) in `out_dir`."""
    out_dir = Path(out_dir)
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(["layer", "expert", "mean_gate"])
    for layer, row in zip(stats["layers"], stats["mean_gates"]):
        for expert, value in zip(stats["experts"], row):
            writer.writerow([layer, expert, f"{value:.6g}"])
    return (write_json_atomic(out_dir / "routing.json", stats),
            write_text_atomic(out_dir / "routing.csv", buf.getvalue()))
