"""Training throughput: our trainer (loraocean.trainer.train) against a plain transformers.Trainer
+ PEFT baseline, same model, LoRA config, hyperparameters, data and number of optimizer steps.

Both runs see the same N = steps x batch examples once (one epoch), so they process the same real
(non-padding) tokens; tokens/s = those tokens / training seconds. The baseline batches in random
order and pads to the longest in each batch (DataCollatorForSeq2Seq); ours groups by length and
runs the output head on answer positions only. Peak memory: GPU max allocated, or on CPU the peak
resident memory above the level before the run (sampled every 20 ms). Besides wall-clock tokens/s
it prints tokens per CPU-second of this process, which stays meaningful on a shared, busy machine
(use --threads 1 there, so idle threads spinning do not count as work).

    python bench/train_throughput.py                      # smollm2-135m, bb_intent_recognition
    python bench/train_throughput.py --model tiny-llama --steps 6 --repeats 1
    python bench/train_throughput.py --shape llama-1b --device cuda   # a random 1B llama on a GPU

Prints ratios; asserts nothing about time.
"""

from __future__ import annotations

import argparse
import os
import threading
import time

import torch

from _common import add_device_args, model_from_args, synchronize


class PeakMemory:
    """Peak memory of the block: CUDA max allocated, else sampled process RSS above the start."""

    def __init__(self, device: str):
        self.device, self.peak = device, 0

    def __enter__(self):
        if self.device.startswith("cuda"):
            torch.cuda.reset_peak_memory_stats()
            return self
        import psutil

        self._proc, self._stop = psutil.Process(os.getpid()), False
        self._start = self._proc.memory_info().rss
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self):
        while not self._stop:
            self.peak = max(self.peak, self._proc.memory_info().rss - self._start)
            time.sleep(0.02)

    def __exit__(self, *exc):
        if self.device.startswith("cuda"):
            self.peak = torch.cuda.max_memory_allocated()
        else:
            self._stop = True
            self._thread.join()


def run_ours(model, tok, encoded, preset, seed):
    from peft import get_peft_model

    from loraocean.library.train import lora_config
    from loraocean.trainer import train

    torch.manual_seed(seed)
    pm = get_peft_model(model, lora_config(model, preset))
    synchronize(next(model.parameters()).device)
    start, cpu = time.perf_counter(), time.process_time()
    log = train(pm, encoded, preset.train_config(seed), tok.pad_token_id)
    synchronize(next(model.parameters()).device)
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    pm.unload()
    return seconds, cpu, log.steps, log.losses


def run_baseline(model, tok, encoded, preset, seed, device):
    from datasets import Dataset
    from peft import get_peft_model
    from transformers import (DataCollatorForSeq2Seq, PrinterCallback, Trainer, TrainerCallback,
                              TrainingArguments)

    from loraocean.library.train import lora_config

    torch.manual_seed(seed)
    pm = get_peft_model(model, lora_config(model, preset))
    data = Dataset.from_list([{"input_ids": e.input_ids, "attention_mask": [1] * len(e),
                               "labels": e.labels} for e in encoded])
    losses = []

    class Losses(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kw):
            if logs and "loss" in logs:
                losses.append(logs["loss"])

    args = TrainingArguments(
        output_dir="/tmp/loraocean-bench-trainer", per_device_train_batch_size=preset.train.batch_size,
        gradient_accumulation_steps=preset.train.grad_accum, learning_rate=preset.train.lr,
        max_steps=preset.train.max_steps, lr_scheduler_type="cosine", warmup_steps=preset.train.warmup_ratio,
        weight_decay=preset.train.weight_decay, max_grad_norm=preset.train.max_grad_norm, seed=seed,
        logging_steps=1, save_strategy="no", report_to=[], disable_tqdm=True,
        dataloader_num_workers=0, use_cpu=not device.startswith("cuda"),
        bf16=device.startswith("cuda"))
    trainer = Trainer(model=pm, args=args, train_dataset=data,
                      data_collator=DataCollatorForSeq2Seq(tok, padding=True, label_pad_token_id=-100),
                      callbacks=[Losses()])
    trainer.remove_callback(PrinterCallback)
    synchronize(device)
    start, cpu = time.perf_counter(), time.process_time()
    result = trainer.train()
    synchronize(device)
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    pm.unload()
    return seconds, cpu, result.global_step, losses


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--task", default="bb_intent_recognition")
    ap.add_argument("--preset", default="lite")
    ap.add_argument("--steps", type=int, default=4, help="optimizer steps per run")
    ap.add_argument("--repeats", type=int, default=2, help="alternating runs of each; best kept")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    add_device_args(ap)
    a = ap.parse_args()
    a.model = model_from_args(a)
    if a.threads:
        torch.set_num_threads(a.threads)

    from dataclasses import replace

    from loraocean.batching import encode
    from loraocean.library.presets import get_preset
    from loraocean.library.train import train_examples
    from loraocean.models import load
    from loraocean.tasks import template_name

    model, tok = load(a.model)
    device = str(next(model.parameters()).device)
    base = get_preset(a.preset)
    n = a.steps * base.train.batch_size * base.train.grad_accum
    preset = replace(base.with_train(max_steps=a.steps, epochs=1.0), train_limit=n)
    _, examples = train_examples(a.task, preset, a.seed)
    template = template_name(tok, preset.template)
    encoded = [encode(ex, tok, template, max_length=preset.max_length) for ex in examples]
    tokens = sum(len(e) for e in encoded)
    print(f"{a.model} on {device} ({torch.get_num_threads()} threads), {a.task}: {len(encoded)} "
          f"examples, {tokens} real tokens, {a.steps} steps of {base.train.batch_size}x{base.train.grad_accum}, "
          f"preset {a.preset} values", flush=True)
    best = {"ours": None, "baseline": None}
    best_cpu = {"ours": None, "baseline": None}
    for rep in range(a.repeats):
        for name in ("baseline", "ours"):
            with PeakMemory(device) as mem:
                if name == "ours":
                    seconds, cpu, steps, losses = run_ours(model, tok, encoded, preset, a.seed)
                else:
                    seconds, cpu, steps, losses = run_baseline(model, tok, encoded, preset, a.seed, device)
            print(f"  run {rep + 1} {name:8s}: {steps} steps, {seconds:7.2f} s wall, {cpu:7.2f} s CPU, "
                  f"{tokens / seconds:8.1f} tokens/s, {tokens / cpu:8.1f} tokens/CPU-s, "
                  f"peak memory {mem.peak / 2**20:7.1f} MiB, loss {losses[0]:.4f} -> {losses[-1]:.4f}",
                  flush=True)
            if best[name] is None or seconds < best[name][0]:
                best[name] = (seconds, min(mem.peak, best[name][1]) if best[name] else mem.peak)
            else:
                best[name] = (best[name][0], min(mem.peak, best[name][1]))
            if best_cpu[name] is None or cpu < best_cpu[name]:
                best_cpu[name] = cpu
    ratio = best["baseline"][0] / best["ours"][0]
    cpu_ratio = best_cpu["baseline"] / best_cpu["ours"]
    print(f"ratio ours / transformers.Trainer (best of {a.repeats}): tokens/s {ratio:.2f}x, "
          f"tokens/CPU-s {cpu_ratio:.2f}x; peak memory (lowest of the runs) ours {best['ours'][1] / 2**20:.0f} MiB vs "
          f"baseline {best['baseline'][1] / 2**20:.0f} MiB")


if __name__ == "__main__":
    main()
