"""Helpers shared by the bench scripts (run as `python bench/NAME.py`, so this folder is on sys.path).

Every bench takes `--device` (where the models load: cpu, cuda, cuda:1; default cuda when there
is one) and `--shape` (instead of `--model`: a randomly initialised llama of a real model's shape,
saved once as a normal Hugging Face folder with the embedded model's tokenizer, so no weights are
downloaded). `Clock` synchronises the device around what it times and reports peak memory.
"""

from __future__ import annotations

import os
import resource
import time
from pathlib import Path

SHARED_BIGBENCH = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "bigbench"

# Llama dimensions of real checkpoints (Llama 3.2 1B, Llama 3.1 8B) and of the tests' tiny models;
# the vocabulary is the embedded tokenizer's (SmolLM2, 49152), not Llama's.
SHAPES = {
    "tiny": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, tie_word_embeddings=True),
    "llama-1b": dict(hidden_size=2048, intermediate_size=8192, num_hidden_layers=16,
                     num_attention_heads=32, num_key_value_heads=8, tie_word_embeddings=True),
    "llama-8b": dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
                     num_attention_heads=32, num_key_value_heads=8, tie_word_embeddings=False),
}


def use_shared_bigbench() -> None:
    """Read BIG-bench tasks from ../shared/data/bigbench when it is there (else the fetched copy)."""
    if SHARED_BIGBENCH.is_dir():
        os.environ.setdefault("LORAOCEAN_BIGBENCH", str(SHARED_BIGBENCH))


def add_device_args(parser) -> None:
    parser.add_argument("--device", default=None,
                        help="where models load: cpu, cuda, cuda:1 (default: cuda when available)")
    parser.add_argument("--shape", choices=sorted(SHAPES), default=None,
                        help="a random llama of this shape with the embedded tokenizer, instead of --model")


def model_from_args(args, default: str = "smollm2-135m") -> str:
    """The model name the bench loads (a `--shape` folder, `--model`, or `default`), with
    `--device` made the default device of `loraocean.models.load`."""
    if args.device:
        os.environ["LORAOCEAN_DEVICE"] = args.device
    if args.shape:
        return str(shaped_model(args.shape))
    return getattr(args, "model", None) or default


def shaped_model(shape: str, seed: int = 0, vocab_size: int | None = None) -> Path:
    """A randomly initialised llama of `shape` in the cache, built once (directly on the default
    device, in its default dtype, so an 8B shape needs no CPU copy). `vocab_size` widens the
    embeddings and output head beyond the embedded tokenizer's (e.g. Llama 3's 128256, for memory
    figures); token ids above the tokenizer's are then never produced by it, only by benches."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    from loraocean.artifacts import atomic_dir
    from loraocean.models import default_device, default_dtype, embedded
    from loraocean.paths import cache_dir

    folder = cache_dir("bench-models") / (f"random-{shape}" + (f"-vocab{vocab_size}" if vocab_size else ""))
    if (folder / "config.json").is_file():
        return folder
    tokenizer = AutoTokenizer.from_pretrained(str(embedded.folder()))
    config = AutoConfig.for_model("llama", **SHAPES[shape], vocab_size=vocab_size or len(tokenizer),
                                  max_position_embeddings=4096,
                                  bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                                  pad_token_id=tokenizer.pad_token_id)
    device = default_device()
    torch.manual_seed(seed)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(config, dtype=default_dtype(device))
    with atomic_dir(folder, overwrite=True) as out:
        model.save_pretrained(out)
        tokenizer.save_pretrained(out)
    return folder


def synchronize(device) -> None:
    import torch

    if str(device).startswith("cuda"):
        torch.cuda.synchronize(device)


class Clock:
    """Wall and CPU seconds of a `with` block (`.wall`, `.cpu`) and its peak memory in MiB
    (`.peak_mib`: the device's allocator peak on CUDA, the process's peak RSS on CPU). On CUDA
    the device is synchronised at both ends, so queued kernels count where they ran."""

    def __init__(self, device="cpu"):
        self.device = str(device)
        self.peak_mib = 0.0

    def __enter__(self):
        import torch

        if self.device.startswith("cuda"):
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
        self.wall, self.cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc):
        import torch

        synchronize(self.device)
        self.wall = time.perf_counter() - self.wall
        self.cpu = time.process_time() - self.cpu
        if self.device.startswith("cuda"):
            self.peak_mib = torch.cuda.max_memory_allocated(self.device) / 2 ** 20
        else:  # Linux reports KiB; a process-wide peak, not reset per block
            self.peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
