"""Deterministic train/dev/test assignment for sources that have no split of their own."""

from __future__ import annotations

import hashlib

from loraocean.tasks.example import Example, SplitPolicy


def split_key(example: Example) -> str:
    """Content that decides an example's split: its input, choices and target."""
    choices = "\x1f".join(example.choices or [])
    return f"{example.instruction}\x1e{example.input}\x1e{choices}\x1e{example.target}"


def assign_split(example: Example, policy: SplitPolicy, task: str) -> str:
    """`train`, `dev` or `test` from a seeded SHA-256 of the example's content (stable everywhere)."""
    digest = hashlib.sha256(f"{policy.seed}\x1d{task}\x1d{split_key(example)}".encode("utf-8"))
    u = int.from_bytes(digest.digest()[:8], "big") / 2**64
    train, dev, _ = policy.fractions
    if u < train:
        return "train"
    if u < train + dev:
        return "dev"
    return "test"


def split_examples(examples: list[Example], policy: SplitPolicy, task: str) -> dict[str, list[Example]]:
    out: dict[str, list[Example]] = {"train": [], "dev": [], "test": []}
    for ex in examples:
        out[assign_split(ex, policy, task)].append(ex)
    return out


def subsample(examples: list[Example], limit: int | None, seed: int = 0) -> list[Example]:
    """A seeded, stable subset of at most `limit` examples, in their original order.

    Stable means: the subset of size n is a prefix-closed ranking by a hash of (seed, id), so
    raising the cap only adds examples.
    """
    if limit is None or limit >= len(examples):
        return list(examples)
    ranked = sorted(
        range(len(examples)),
        key=lambda i: hashlib.sha256(f"{seed}\x1d{examples[i].id}".encode()).digest(),
    )
    keep = sorted(ranked[:limit])
    return [examples[i] for i in keep]
