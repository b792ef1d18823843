"""Deterministic train/dev/test assignment for sources that have no split of their own."""

from __future__ import annotations

import hashlib

from loraocean.tasks.example import Example, SplitPolicy


def split_key(example: Example) -> str:
    """Content that decides an example's split: its input, choices and target; or its `group`
    when the metadata names one (MultiRC: every candidate answer of a question goes together)."""
    if example.metadata.get("group") is not None:
        return f"group\x1e{example.metadata['group']}"
    choices = "\x1f".join(example.choices or [])
    return f"{example.instruction}\x1e{example.input}\x1e{choices}\x1e{example.target}"


def _unit(example: Example, policy: SplitPolicy, task: str) -> float:
    """A number in [0, 1) from a seeded SHA-256 of the example's content."""
    digest = hashlib.sha256(f"{policy.seed}\x1d{task}\x1d{split_key(example)}".encode("utf-8"))
    return int.from_bytes(digest.digest()[:8], "big") / 2**64


def assign_split(example: Example, policy: SplitPolicy, task: str) -> str:
    """`train`, `dev` or `test` from a seeded SHA-256 of the example's content (stable everywhere)."""
    u = _unit(example, policy, task)
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


def apply_policy(data, policy: SplitPolicy, task: str) -> dict[str, list[Example]]:
    """Our train/dev/test from what a reader returned: a list (one pool, split by hash) or a dict
    {source split: examples} mapped through `policy.source_splits` (see `SplitPolicy`)."""
    if isinstance(data, list):
        return split_examples(data, policy, task)
    if policy.kind == "hash":
        pool = [ex for theirs in dict.fromkeys(t for _, t in policy.source_splits) or data
                for ex in data[theirs]]
        return split_examples(pool, policy, task)
    mapping = dict(policy.source_splits) if policy.source_splits else {s: s for s in data}
    out = {ours: list(data.get(mapping[ours], [])) if ours in mapping else []
           for ours in ("train", "dev", "test")}
    if "dev" not in mapping:  # carve dev out of train, by the same seeded content hash
        carve = SplitPolicy(fractions=(0.0, policy.fractions[1], 1.0 - policy.fractions[1]),
                            seed=policy.seed)
        parts = split_examples(out["train"], carve, task)
        if not parts["dev"] and len(parts["test"]) >= 2:
            # A tiny train split: still carve the lowest-hash example (with its whole group, if
            # it has one), so dev is not empty.
            key = split_key(min(parts["test"], key=lambda ex: _unit(ex, carve, task)))
            parts = {"dev": [ex for ex in parts["test"] if split_key(ex) == key],
                     "test": [ex for ex in parts["test"] if split_key(ex) != key]}
        out["dev"], out["train"] = parts["dev"], parts["test"]
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
