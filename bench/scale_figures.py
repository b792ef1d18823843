"""Every figure the scale issue (#14) asks a GPU for, from one command, each bench in its own
process; prints their result lines and writes them all to --out (default scale-figures.txt).

    python bench/scale_figures.py                      # on a GPU: the issue's shapes (not yet timed there)
    python bench/scale_figures.py --device cpu --shape tiny   # the same steps on a tiny model (checks the script)

1. card memory of a `loralib`-preset step (8 x 1024, r=16 on every Linear) with and without
   checkpointing, and its matrix rate: 8B shape, 1B shape, 8B shape with a 4-bit base, and LoRAMoE
   (E=8) on the 8B shape (bench/memory.py);
2. LoRAMoE E=8 step / one-LoRA step at the 1B shape, 8 x 512; the stacked layer / the base product
   at Llama-3-8B's MLP shape; X-LoRA greedy decoding / one plain cached decode of the base at the 1B
   shape, with dynamic caches and with static caches and the captured per-token step
   (bench/moe_overhead.py).

A step that fails is reported with its last error line and the others still run; exit 1 if any did.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def steps(device: str, shape: str | None) -> list[tuple[str, list[str]]]:
    big, small = ("llama-8b", "llama-1b") if shape is None else (shape, shape)
    dev = ["--device", device]
    if device.startswith("cuda"):
        quantized = [("memory, 4-bit base, " + big, ["memory.py", *dev, "--shape", big, "--quantize", "4bit"])]
        layer, length = "llama-8b", "512"
    else:  # bitsandbytes quantises on CUDA only; the 8B MLP projection is too large for a CPU
        quantized, layer, length = [], "smollm2", "64"
    small_batch = [] if device.startswith("cuda") else ["--batch", "2", "--length", "256"]
    smaller = [] if small == big else [("memory, lora, " + small, ["memory.py", *dev, "--shape", small, *small_batch])]
    return [
        ("memory, lora, " + big, ["memory.py", *dev, "--shape", big, *small_batch]),
        *smaller,
        *quantized,
        ("memory, loramoe, " + big, ["memory.py", *dev, "--shape", big, "--method", "loramoe", *small_batch]),
        ("moe overhead, " + small, ["moe_overhead.py", *dev, "--shape", small, "--length", length,
                                    "--layer", layer, "--quick"]),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--shape", default=None, help="one shape for every step instead of the issue's (e.g. tiny)")
    parser.add_argument("--out", default="scale-figures.txt")
    parser.add_argument("--timeout", type=int, default=900, help="seconds per step")
    args = parser.parse_args()
    lines, failed = [], 0
    for title, cmd in steps(args.device, args.shape):
        start = time.perf_counter()
        try:
            proc = subprocess.run([sys.executable, *cmd], cwd=HERE, capture_output=True, text=True,
                                  timeout=args.timeout)
            ok, out = proc.returncode == 0, proc.stdout
            err = [line for line in proc.stderr.splitlines() if line.strip()]
        except subprocess.TimeoutExpired:
            ok, out, err = False, "", [f"timed out after {args.timeout} s"]
        failed += not ok
        block = [f"## {title} ({time.perf_counter() - start:.0f} s): python bench/{' '.join(cmd)}"]
        block += [line for line in out.splitlines() if line.strip() and "warn" not in line.lower()]
        if not ok:
            block.append("FAILED: " + (err[-1] if err else "no output"))
        print("\n".join(block), flush=True)
        lines += block + [""]
        Path(args.out).write_text("\n".join(lines))  # after each step: a run cut short keeps what it measured
    print(f"written to {args.out}")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
