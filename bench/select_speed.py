"""How fast is `ppl` expert selection? Ratios against baselines measured in this same process.

    python bench/select_speed.py [--loras 16] [--shots 32] [--naive-loras 16] [--device cuda] [--shape llama-1b]

Builds N random PEFT LoRAs (the `lite` preset's config: r=8 on every linear layer) of the embedded
SmolLM2-135M in a temporary library, then times on the same K target examples:
  - base pass (plain): one plain HF forward of the base model over the K examples (batch 8,
    right-padded, full logits), the reference the issue names;
  - base pass (scorer): the selection's answer-only scorer on the base model, no adapter, without
    prefix sharing (answer-position logits only);
  - ppl selection: the `ppl` strategy over all N LoRAs (adapter swaps included), with the
    default swap (merged into the fp32 weights) and with `--swap peft` (one PeftModel);
  - naive loop: PeftModel.from_pretrained per LoRA, one example at a time, full logits.
Prints wall-clock and process-CPU ratios (CPU time is less disturbed by other processes on a
shared machine) and checks that ppl and the naive loop give the same perplexities. Never asserts
on time.
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
from pathlib import Path

import torch

from _common import Clock, add_device_args, model_from_args, use_shared_bigbench


def build_loras(model, root: Path, n: int) -> list:
    from peft import get_peft_model

    from loraocean.library.presets import get_preset
    from loraocean.library.train import lora_config

    config = lora_config(model, get_preset("lite"))
    config.init_lora_weights = False  # random A and B, so every LoRA changes the outputs
    entries = []
    for i in range(n):
        torch.manual_seed(i)
        peft = get_peft_model(model, config)
        with torch.no_grad():
            for name, p in peft.named_parameters():
                if "lora_B" in name:
                    p.mul_(0.02)
        folder = root / f"task{i:02d}"
        peft.save_pretrained(folder)
        peft.unload()
        entries.append(type("Entry", (), {"task": f"task{i:02d}", "path": folder, "card": {}})())
    return entries


def plain_pass(model, tokenizer, encoded, batch_size=8):
    from loraocean.batching import pad_batch

    with torch.no_grad():
        for start in range(0, len(encoded), batch_size):
            batch = pad_batch(encoded[start:start + batch_size], tokenizer.pad_token_id)
            model(input_ids=batch["input_ids"].to(model.device), attention_mask=batch["attention_mask"].to(model.device),
                  use_cache=False)


def naive_ppl(model, encoded, folder) -> float:
    from peft import PeftModel

    from loraocean.batching import IGNORE

    peft = PeftModel.from_pretrained(model, str(folder))
    total, count = 0.0, 0
    with torch.no_grad():
        for item in encoded:
            logits = peft(input_ids=torch.tensor([item.input_ids], device=model.device)).logits[0, :-1].float()
            labels = torch.tensor(item.labels[1:], device=model.device)
            nll = torch.nn.functional.cross_entropy(logits, labels, ignore_index=IGNORE, reduction="sum")
            total += float(nll)
            count += int((labels != IGNORE).sum())
    peft.unload()
    return math.exp(total / count)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--loras", type=int, default=16, help="candidate LoRAs")
    parser.add_argument("--shots", type=int, default=32, help="target examples")
    parser.add_argument("--naive-loras", type=int, default=None,
                        help="run the naive loop on only this many LoRAs and scale its time (default: all)")
    parser.add_argument("--task", default="bb_intent_recognition", help="target task")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (default 1: steadier ratios on a shared machine)")
    add_device_args(parser)
    args = parser.parse_args()
    name = model_from_args(args)
    torch.set_num_threads(args.threads)
    use_shared_bigbench()

    from loraocean.batching import encode
    from loraocean.models import load
    from loraocean.selection import ModelRef, get_strategy
    from loraocean.evaluation.answer_nll import prepare, score
    from loraocean.tasks import load_split

    model, tokenizer = load(name)
    device = model.device
    examples = load_split(args.task, "train", limit=args.shots, seed=0)
    encoded = [encode(ex, tokenizer, add_eos=False) for ex in examples]
    lengths = [len(e) for e in encoded]
    print(f"torch threads {torch.get_num_threads()}; {args.task}: {len(examples)} examples, "
          f"{min(lengths)}-{max(lengths)} tokens (mean {sum(lengths) / len(lengths):.0f})")

    with tempfile.TemporaryDirectory() as tmp:
        entries = build_loras(model, Path(tmp), args.loras)
        plain_pass(model, tokenizer, encoded[:8])  # warm-up
        with Clock(device) as plain:
            plain_pass(model, tokenizer, encoded)
        with Clock(device) as scorer:
            score(model, prepare(encoded, tokenizer.pad_token_id, 8, share_prefix=False))
        ref = ModelRef.of(model, tokenizer)
        with Clock(device) as ppl:
            ranking = get_strategy("ppl").select(args.task, entries, ref, 4, examples)
        with Clock(device) as ppl_peft:
            ranking_peft = get_strategy("ppl", swap="peft").select(args.task, entries, ref, 4, examples)
        n_naive = args.naive_loras or args.loras
        with Clock(device) as naive:
            naive_scores = {e.task: naive_ppl(model, encoded, e.path) for e in entries[:n_naive]}
        scale = args.loras / n_naive

    got = {c.task: c.score for c in ranking}
    worst = max(abs(got[t] - v) / v for t, v in naive_scores.items())
    got_peft = {c.task: c.score for c in ranking_peft}
    worst_peft = max(abs(got_peft[t] - v) / v for t, v in naive_scores.items())
    n = args.loras
    print(f"base pass, plain forward : {plain.wall:7.2f} s wall {plain.cpu:7.2f} s cpu")
    print(f"base pass, answer scorer : {scorer.wall:7.2f} s wall {scorer.cpu:7.2f} s cpu")
    print(f"ppl over {n} LoRAs        : {ppl.wall:7.2f} s wall {ppl.cpu:7.2f} s cpu")
    print(f"ppl, peft swap           : {ppl_peft.wall:7.2f} s wall {ppl_peft.cpu:7.2f} s cpu")
    print(f"peak memory on {device}  : ppl {ppl.peak_mib:.0f} MiB, peft swap {ppl_peft.peak_mib:.0f} MiB")
    print(f"naive over {n_naive} LoRAs      : {naive.wall:7.2f} s wall {naive.cpu:7.2f} s cpu"
          + (f" (x{scale:g} to scale to {n})" if scale != 1 else ""))
    print(f"ppl / ({n} x plain base pass)  : wall {ppl.wall / (n * plain.wall):.3f}  "
          f"cpu {ppl.cpu / (n * plain.cpu):.3f}   (target <= 1.3)")
    print(f"ppl / ({n} x scorer base pass) : wall {ppl.wall / (n * scorer.wall):.3f}  "
          f"cpu {ppl.cpu / (n * scorer.cpu):.3f}")
    print(f"ppl peft swap / ({n} x plain)   : wall {ppl_peft.wall / (n * plain.wall):.3f}  "
          f"cpu {ppl_peft.cpu / (n * plain.cpu):.3f}")
    print(f"naive / ppl                    : wall {naive.wall * scale / ppl.wall:.2f}x  "
          f"cpu {naive.cpu * scale / ppl.cpu:.2f}x   (target >= 3)")
    print(f"max relative difference vs naive perplexity: merged {worst:.2e}, peft swap {worst_peft:.2e}")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
