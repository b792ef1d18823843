"""What the conformance checks run on: tiny models of every architecture family, library-like
LoRAs for them (PEFT folders with a sealed card, random non-zero A and B), and a small synthetic
choice task whose examples a method's `prepare` step and a training step can use. Nothing here
reads the network or the task catalog's data."""

from __future__ import annotations

import random
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import torch

from loraocean import models
from loraocean.models.architectures import FAMILIES
from loraocean.tasks.example import Example, TaskSpec

TASK = TaskSpec(name="conformance", category="synthetic", source="synthetic:conformance", mode="choice",
                description="parity of a short word list (the conformance kit's own examples)")
WORDS = ("red", "blue", "green", "cat", "dog", "sun", "moon", "tree", "sea", "stone")


def examples(n: int, seed: int, split: str = "train") -> list[Example]:
    """Seeded choice examples: is the number of words even?"""
    rng = random.Random(f"{seed}-{split}")
    out = []
    for i in range(n):
        words = rng.sample(WORDS, rng.randint(1, 5))
        label = int(len(words) % 2 == 1)
        out.append(Example(id=f"{split}-{i}", task=TASK.name, instruction="Is the number of words even?",
                           input=" ".join(words), target=("yes", "no")[label], choices=["yes", "no"], label=label))
    return out


@dataclass
class Kit:
    """Settings and caches of one conformance run: where models go (`device`, `dtype`), which
    families the build check covers, a folder for the LoRAs and checkpoints it writes."""
    device: str | None = None
    dtype: torch.dtype | None = None
    families: tuple[str, ...] = tuple(FAMILIES)
    family: str = "llama"       # the family of every check but the build on every family
    seed: int = 0
    root: Path | None = None
    n_experts: int = 3
    strength: float = 1.0       # B times this (PEFT's random init already changes the logits clearly)
    _adapters: dict = field(default_factory=dict, repr=False)

    def __post_init__(self):
        self.device = self.device or models.default_device()
        self.dtype = self.dtype or models.default_dtype(self.device)
        if self.root is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="loraocean-conformance-")
            self.root = Path(self._tmp.name)
        self.root = Path(self.root)

    def load(self, family: str | None = None):
        """(tiny model, tokenizer) of `family` on the kit's device and dtype."""
        return models.load(f"tiny-{family or self.family}", device=self.device, dtype=self.dtype)

    def adapters(self, family: str | None = None) -> list[Path]:
        """`n_experts` PEFT LoRA folders on every target module of the family's tiny model (rank 4,
        alpha 8, random A and B times `strength`), written once."""
        family = family or self.family
        if family not in self._adapters:
            self._adapters[family] = [self._adapter(family, i) for i in range(self.n_experts)]
        return self._adapters[family]

    def _adapter(self, family: str, i: int) -> Path:
        from peft import LoraConfig, get_peft_model

        from loraocean.library.card import write_card

        name = f"tiny-{family}"
        base, _ = models.load(name, device="cpu", dtype=torch.float32)
        with torch.random.fork_rng():
            torch.manual_seed(1000 * self.seed + i)
            model = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules=models.targets(base, "all"),
                                                    init_lora_weights=False,
                                                    fan_in_fan_out=base.config.model_type == "gpt2"))  # Conv1D
            with torch.no_grad():
                for key, p in model.named_parameters():
                    if "lora_B" in key:
                        p.mul_(self.strength)
        path = self.root / "adapters" / family / f"task{i}"
        model.save_pretrained(str(path))
        write_card(path, {"model": name, "task": f"conformance{i}"})
        return path

    def experts(self, model, family: str | None = None, n: int | None = None):
        """The first `n` (default all) of the family's LoRAs as experts checked against `model`."""
        from loraocean.moe.experts import load_adapter

        paths = self.adapters(family)[: n or self.n_experts]
        experts = [load_adapter(p, model=model) for p in paths]
        for e, p in zip(experts, paths):
            e.task = p.name
        return experts

    def context(self, tokenizer):
        """What a method's `prepare` step may use: the synthetic task, its examples, the seed."""
        from loraocean.moe.fit import FitContext

        return FitContext(TASK, examples(8, self.seed), examples(6, self.seed, "dev"), tokenizer.pad_token_id,
                          128, self.seed)

    def batch(self, tokenizer, n: int = 4) -> dict[str, torch.Tensor]:
        """A padded training batch (input_ids, attention_mask, labels) of the synthetic examples."""
        from loraocean.batching import encode, pad_batch

        items = [encode(ex, tokenizer, max_length=64) for ex in examples(n, self.seed + 1)]
        return {k: v.to(self.device) for k, v in pad_batch(items, tokenizer.pad_token_id).items()}

    @property
    def tolerance(self) -> float:
        """Two implementations of the same logits (ours and PEFT's): float32 agrees to rounding
        accumulated through the layers; bf16 keeps 8 bits of mantissa, and PEFT computes its LoRA
        in float32 where we compute in the model's dtype, a few roundings per layer apart (seen:
        up to 0.064 on the kit's tiny models, whose logits move by about 1 under one LoRA)."""
        return 1e-4 if self.dtype == torch.float32 else 1e-1

    @property
    def same(self) -> float:
        """The same computation twice (before and after a save): equal up to the kernels' own
        nondeterminism on a GPU."""
        return 1e-5 if self.dtype == torch.float32 else 1e-2
