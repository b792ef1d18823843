"""Peak memory of one `loralib`-preset training step, with and without gradient checkpointing
(printed as a ratio; never asserted). Run: python bench/memory.py [--device cuda --shape llama-8b]

A step is what the trainer does per optimizer step for one forward batch: the answer-only loss,
backward, AdamW. The batch is random tokens (batch x length, the last quarter of each row the
answer), the LoRA the `loralib` preset's (r=16, alpha 32, every attention and MLP Linear);
`--method loramoe` fits LoRAMoE (E=8 fresh experts of rank 4 on the MLP, float32 trainables).
Each configuration runs in its own process, so the figures do not mix:
- CUDA: torch.cuda.max_memory_allocated during the step (model, optimizer states, activations);
  the step time is the second step's, synchronised.
- CPU: the process's peak resident memory (ru_maxrss) minus its resident memory before the step,
  i.e. what the step added (the allocator keeps freed memory, so this is the step's high-water mark).

Options: --shape embedded | tiny | llama-1b | llama-8b (randomly initialised with Llama-3.2-1B's /
Llama-3-8B's shape and Llama 3's vocabulary), or --model NAME (any `loraocean.models.load` name,
e.g. a local folder); --quantize 4bit|8bit on CUDA (a shape is then saved to the cache once and
loaded through bitsandbytes); --batch, --length (default: the loralib preset's 8 x 1024);
--dtype (default bf16 on CUDA, fp32 on CPU); --method lora | loramoe; --peak-tflops (the card's
dense bf16 peak, for the matrix rate; known for H100/H200/A100/L40S).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import torch

from _common import SHAPES, shaped_model

LLAMA3_VOCAB = 128256  # the shapes' real vocabulary: the output head's memory depends on it

# Dense bf16 matrix peak of cards (TFLOP/s, without sparsity, from the vendors' data sheets); any
# other card: pass --peak-tflops.
PEAK_BF16_TFLOPS = [("H200", 989.4), ("H100 PCIe", 756.0), ("H100", 989.4), ("A100", 312.0),
                    ("L40S", 362.0)]


def build_model(args):
    from loraocean import models

    dtype = getattr(torch, args.dtype)
    if args.model:
        return models.load(args.model, device=args.device, dtype=dtype, quantize=args.quantize)[0]
    if args.shape == "embedded":
        return models.load("smollm2-135m", device=args.device, dtype=dtype, quantize=args.quantize)[0]
    if args.quantize:  # bitsandbytes quantises while loading: a saved folder of the shape (once)
        return models.load(str(shaped_model(args.shape, vocab_size=LLAMA3_VOCAB)), device=args.device,
                           dtype=dtype, quantize=args.quantize)[0]
    from transformers import AutoModelForCausalLM, LlamaConfig

    config = LlamaConfig(max_position_embeddings=8192, rope_theta=500000.0, **SHAPES[args.shape],
                         vocab_size=LLAMA3_VOCAB)
    with torch.device(args.device):
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    model.config.loraocean_name = args.shape
    return model.eval()


def matmul_parameters(model) -> int:
    """Weights of every Linear the forward multiplies by (the frozen base's, the output head's and
    the LoRA's A and B; embeddings are a lookup and not counted). Only nn.Linear modules count
    (bitsandbytes' 4/8-bit layers are ones): PEFT's LoRA wrapper also answers `.weight` with its
    base layer's, which would count that layer twice. A 4-bit layer counts its unpacked size."""
    total = 0
    for module in model.modules():
        if isinstance(module, torch.nn.Linear):
            quant = getattr(module.weight, "quant_state", None)
            total += quant.shape.numel() if quant is not None else module.weight.numel()
    return total


def trainable(model, method: str):
    if method == "lora":
        from peft import get_peft_model

        from loraocean.library.presets import get_preset
        from loraocean.library.train import lora_config

        return get_peft_model(model, lora_config(model, get_preset("loralib")))
    from loraocean.moe import get_method

    m = get_method("loramoe")
    moe = m.build(model, [], m.make_config({"n_experts": 8, "r": 4}))
    moe.upcast_trainables()
    return moe


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()


def child(args) -> dict:
    """One configuration, in this process: prints a JSON line."""
    from loraocean.trainer import answer_loss, checkpointing

    torch.manual_seed(0)
    model = trainable(build_model(args), args.method)
    device = next(model.parameters()).device
    ids = torch.randint(0, model.config.vocab_size, (args.batch, args.length), device=device)
    labels = ids.clone()
    labels[:, : args.length * 3 // 4] = -100
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels}
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4)
    model.train()

    def step():
        answer_loss(model, batch).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    with checkpointing(model, args.checkpointing):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
            torch.cuda.reset_peak_memory_stats(device)
            step()
            torch.cuda.synchronize(device)
            peak = torch.cuda.max_memory_allocated(device)
            start = time.perf_counter()
            step()
            torch.cuda.synchronize(device)
            seconds = time.perf_counter() - start
            before = 0
        else:
            before, high_before = rss_bytes(), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            start = time.perf_counter()
            step()
            seconds = time.perf_counter() - start
            high = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            if high == high_before:
                raise SystemExit("the step stayed below the loading's peak memory: use a larger --batch/--length")
            peak = high * 1024 - before
    n_trainable = sum(p.numel() for p in params)
    return {"checkpointing": args.checkpointing, "peak_bytes": peak, "rss_before": before,
            "seconds": seconds, "trainable": n_trainable, "device": str(device),
            "matmul_parameters": matmul_parameters(model)}


def peak_tflops(args) -> float | None:
    if args.peak_tflops:
        return args.peak_tflops
    if not args.device.startswith("cuda"):
        return None
    name = torch.cuda.get_device_name(args.device)
    return next((tf for key, tf in PEAK_BF16_TFLOPS if key in name), None)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--shape", default="embedded", choices=["embedded", *SHAPES])
    ap.add_argument("--model", default=None)
    ap.add_argument("--quantize", default=None)
    ap.add_argument("--method", default="lora", choices=["lora", "loramoe"])
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--length", type=int, default=1024)
    ap.add_argument("--dtype", default=None)
    ap.add_argument("--peak-tflops", type=float, default=None,
                    help="the card's dense bf16 peak (default: known for H100/H200/A100/L40S)")
    ap.add_argument("--checkpointing", type=int, default=None, help=argparse.SUPPRESS)  # child mode
    args = ap.parse_args()
    args.dtype = args.dtype or ("bfloat16" if args.device.startswith("cuda") else "float32")
    if args.checkpointing is not None:
        args.checkpointing = bool(args.checkpointing)
        print(json.dumps(child(args)))
        return
    what = args.model or args.shape
    print(f"torch {torch.__version__}, {what} {args.dtype}{' ' + args.quantize if args.quantize else ''}, "
          f"{args.method}, batch {args.batch} x {args.length}, device {args.device}"
          + (f" ({torch.cuda.get_device_name(args.device)})" if args.device.startswith("cuda") else ""))
    results = {}
    for on in (0, 1):
        proc = subprocess.run([sys.executable, __file__, *sys.argv[1:], "--checkpointing", str(on)],
                              capture_output=True, text=True)
        if proc.returncode != 0:
            err = [line for line in proc.stderr.splitlines() if line.strip()]
            raise SystemExit(f"the step with checkpointing {'on' if on else 'off'} failed: "
                             + (err[-1] if err else f"exit {proc.returncode}"))
        r = json.loads(proc.stdout.strip().splitlines()[-1])
        results[on] = r
        tokens = args.batch * args.length
        # Matrix rate, counted as the issue states it: tokens/s x 6 x the parameters of every
        # Linear the forward runs (base, head, LoRA); attention scores and the frozen weights'
        # skipped gradient (4 x, not 6 x, is what a frozen base really costs) are not corrected for.
        tflops = tokens / r["seconds"] * 6 * r["matmul_parameters"] / 1e12
        peak = peak_tflops(args)
        rate = f", {tflops:.1f} TFLOP/s by 6 x {r['matmul_parameters'] / 1e9:.2f} G matmul parameters per token"
        if peak:
            rate += f" = {100 * tflops / peak:.0f}% of the card's {peak:.0f} bf16 TFLOP/s"
        print(f"checkpointing {'on ' if on else 'off'}: peak {r['peak_bytes'] / 2**30:.2f} GiB"
              f"{' (step increment of resident memory)' if args.device == 'cpu' else ''}, "
              f"step {r['seconds']:.2f} s, {tokens / r['seconds']:.0f} tokens/s{rate}, "
              f"{r['trainable'] / 1e6:.2f} M trainable parameters")
    print(f"peak memory with / without checkpointing: {results[1]['peak_bytes'] / results[0]['peak_bytes']:.2f}; "
          f"step time with / without: {results[1]['seconds'] / results[0]['seconds']:.2f}")


if __name__ == "__main__":
    main()
