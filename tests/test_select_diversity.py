"""Diversity (Rocket's group step) on constructed LoRAs whose overlaps are known by design."""

from __future__ import annotations

import itertools

import torch

from loraocean.selection import Choice, ModelRef, get_strategy
from loraocean.selection.diversity import cosine_matrix
from loraocean.library.card import write_card

MODULES = ["q_proj", "v_proj"]


def write_lora(model, folder, task, blocks, seed, r=2):
    """A LoRA whose A matrices read only the input coordinates in `blocks` (8 coordinates each):
    LoRAs on disjoint blocks have orthogonal weight deltas."""
    from peft import LoraConfig, get_peft_model

    gen = torch.Generator().manual_seed(seed)
    peft = get_peft_model(model, LoraConfig(r=r, lora_alpha=r, target_modules=MODULES,
                                            init_lora_weights=False))
    with torch.no_grad():
        for name, p in peft.named_parameters():
            if "lora_A" in name:
                p.zero_()
                for b in blocks:
                    p[:, 8 * b:8 * (b + 1)] = torch.randn(p.shape[0], 8, generator=gen)
            elif "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=gen))
    peft.save_pretrained(folder)
    peft.unload()
    write_card(folder, {"model": "tiny-llama", "task": task})


class Entry:
    def __init__(self, task, path):
        self.task, self.path, self.model, self.card = task, path, "tiny-llama", {}


def dense_cosines(model, folders):
    """Independent check: PEFT's own dense deltas (get_delta_weight), flattened and concatenated."""
    from peft import PeftModel

    vectors = []
    for folder in folders:
        peft = PeftModel.from_pretrained(model, str(folder))
        parts = [m.get_delta_weight("default").flatten().double()
                 for name, m in peft.named_modules() if hasattr(m, "get_delta_weight") and "default" in m.lora_A]
        vectors.append(torch.cat(parts))
        peft.unload()
    v = torch.stack(vectors).cpu()
    v = v / v.norm(dim=1, keepdim=True)
    return v @ v.T


def test_diversity_picks_the_orthogonal_subset(tiny_llama, tmp_path):
    model, tokenizer = tiny_llama
    # o1..o3 read disjoint input blocks (mutually orthogonal); x1, x2 read every block (overlap all)
    design = {"x1": [0, 1, 2, 3], "x2": [0, 1, 2], "o1": [0], "o2": [1], "o3": [2]}
    entries = []
    for seed, (task, blocks) in enumerate(design.items()):
        write_lora(model, tmp_path / task, task, blocks, seed)
        entries.append(Entry(task, tmp_path / task))

    cos = cosine_matrix([e.path for e in entries])
    dense = dense_cosines(model, [e.path for e in entries])
    assert torch.allclose(cos, dense, atol=1e-6)
    assert cos[2:, 2:].sub(torch.eye(3, dtype=cos.dtype)).abs().max() < 1e-9

    # the base ranking puts the overlapping LoRAs first; diversity must still pick o1, o2, o3
    base = [Choice(e.task, float(i), "base", str(e.path)) for i, e in enumerate(entries)]
    div = get_strategy("diversity", base="random", pool=5, base_ranking=base)
    ranking = div.select("target", entries, ModelRef.of(model, tokenizer), 3, [])
    assert [c.task for c in ranking[:3]] == ["o1", "o2", "o3"]
    assert all(c.score < 1e-9 for c in ranking[:3])
    assert [c.task for c in ranking[3:]] == ["x1", "x2"]

    # k=2 over a pool of the top 3 (x1, x2, o1): brute force over the dense cosines agrees
    div = get_strategy("diversity", base="random", pool=3, base_ranking=base)
    got = [c.task for c in div.select("target", entries, ModelRef.of(model, tokenizer), 2, [])[:2]]
    best = min(itertools.combinations(range(3), 2), key=lambda s: abs(float(dense[s[0], s[1]])))
    assert got == [entries[i].task for i in best]
