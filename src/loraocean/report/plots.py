"""Figures of the report (matplotlib with the Agg backend: PNG files, no display needed), each
written atomically and readable by others (the report embeds them; report.md links them)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from loraocean.artifacts import READABLE, write_bytes_atomic


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> Path:
    """Write the figure as a PNG at `path` (atomically, mode 0644) and close it."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    _plt().close(fig)
    return write_bytes_atomic(path, buf.getvalue(), READABLE)


def accuracy_bars(df, targets: list[str], methods: list[str], selection: str, path: Path) -> Path:
    """One panel per target: a bar per method with its 95% CI, the majority-label rate dashed."""
    plt = _plt()
    sub = df[(df["selection"] == selection) | (df["selection"] == "none")]
    fig, axes = plt.subplots(1, len(targets), figsize=(max(4.0, 3.2 * len(targets)), 3.6), squeeze=False)
    for ax, target in zip(axes[0], targets):
        t = sub[sub["target"] == target]
        names = [m for m in methods if m in set(t["method"])]
        means, low, high = [], [], []
        for m in names:
            g = t[t["method"] == m]
            mean = float(g["value"].mean())
            means.append(mean)
            if len(g) == 1:
                low.append(mean - float(g["ci_low"].iloc[0] if g["ci_low"].notna().all() else mean))
                high.append(float(g["ci_high"].iloc[0] if g["ci_high"].notna().all() else mean) - mean)
            else:
                sd = float(g["value"].std(ddof=1))
                low.append(sd)
                high.append(sd)
        x = np.arange(len(names))
        ax.bar(x, means, yerr=[low, high], capsize=3, color="#4C72B0")
        maj = t["majority_rate"].dropna()
        if len(maj):
            ax.axhline(float(maj.iloc[0]), color="#C44E52", linestyle="--", linewidth=1, label="majority label")
            ax.legend(fontsize=7, loc="upper right")
        ax.set_xticks(x, names, rotation=45, ha="right", fontsize=8)
        ax.set_ylim(0, 1)
        ax.set_title(target, fontsize=9)
    axes[0][0].set_ylabel("accuracy")
    fig.suptitle(f"Accuracy with 95% CI ({selection} selection)", fontsize=10)
    fig.tight_layout()
    return _save(fig, path)


def selection_bars(df, strategies: list[str], methods: list[str], path: Path) -> Path:
    """Grouped bars: mean accuracy per selection strategy (groups) and MoE method (bars)."""
    plt = _plt()
    sub = df[df["selection"] != "none"]
    methods = [m for m in methods if m in set(sub["method"])]
    strategies = [s for s in strategies if s in set(sub["selection"])]
    fig, ax = plt.subplots(figsize=(max(4.0, 1.4 * len(strategies) * max(1, len(methods)) / 2), 3.4))
    width = 0.8 / max(1, len(methods))
    for j, method in enumerate(methods):
        vals = []
        for s in strategies:
            g = sub[(sub["selection"] == s) & (sub["method"] == method)]
            vals.append(float(g.groupby("target")["value"].mean().mean()) if len(g) else 0.0)
        ax.bar(np.arange(len(strategies)) + j * width, vals, width, label=method)
    ax.set_xticks(np.arange(len(strategies)) + width * (len(methods) - 1) / 2, strategies)
    ax.set_ylabel("mean accuracy over targets")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return _save(fig, path)


def routing_matrix(stats) -> tuple[list[str], list[str], np.ndarray] | None:
    """(layer names, expert names, layers x experts mean gate) from an exported routing file.

    Accepts {"layers": [...], "experts": [...], "mean_gates": [[...]]} (`loraocean.moe.routing_stats`)
    or {layer: [gate per expert]}."""
    if not stats:
        return None
    if isinstance(stats, dict) and "mean_gate" in stats and "mean_gates" not in stats:
        stats = {**stats, "mean_gates": stats["mean_gate"]}
    if isinstance(stats, dict) and "layers" in stats and "mean_gates" in stats:
        matrix = np.asarray(stats["mean_gates"], dtype=float)
        experts = stats.get("experts") or [f"e{i}" for i in range(matrix.shape[1])]
        return list(stats["layers"]), list(experts), matrix
    table = stats.get("mean_gates", stats) if isinstance(stats, dict) else None
    if isinstance(table, dict) and table and all(isinstance(v, list) for v in table.values()):
        layers = list(table)
        matrix = np.asarray([table[k] for k in layers], dtype=float)
        experts = stats.get("experts") if isinstance(stats.get("experts"), list) else None
        return layers, experts or [f"e{i}" for i in range(matrix.shape[1])], matrix
    return None


def is_constant(matrix: np.ndarray) -> bool:
    """Whether every gate of a routing matrix is the same number (e.g. 1/k for the uniform
    method): its heatmap would carry no information."""
    return bool(matrix.size) and float(np.ptp(matrix)) < 1e-6


def routing_figure(layers: list[str], experts: list[str], matrix: np.ndarray, title: str):
    """The routing heatmap as a matplotlib figure: one labelled row per layer (each row is 0.16
    inch, room for its 6-point label), one column per expert."""
    import textwrap

    plt = _plt()
    short = [l.replace("base_model.", "").replace("model.", "").replace("layers.", "L") for l in layers]
    fig, ax = plt.subplots(figsize=(max(5.0, 3.0 + 0.6 * len(experts)), 2.2 + 0.16 * len(layers)))
    im = ax.imshow(matrix, aspect="auto", cmap="viridis", vmin=0.0)
    ax.set_xticks(range(len(experts)), experts, rotation=45, ha="right", fontsize=7)
    ax.set_yticks(range(len(layers)), short, fontsize=6)
    ax.set_xlabel("expert")
    ax.set_ylabel("layer")
    ax.set_title("\n".join(textwrap.wrap(title, 48)), fontsize=8)
    fig.colorbar(im, ax=ax, label="mean gate")
    fig.tight_layout()
    return fig


def routing_heatmap(method: str, layers: list[str], experts: list[str], matrix: np.ndarray,
                    title: str, path: Path) -> Path:
    return _save(routing_figure(layers, experts, matrix, title), path)


def atlas_heatmap(rows: list[str], targets: list[str], matrix: np.ndarray, title: str, path: Path) -> Path:
    """The transfer atlas: one row per LoRA (the base model first), one column per target, the
    dev score of that LoRA alone on that target, written in each cell."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(max(4.0, 2.5 + 0.9 * len(targets)), max(2.5, 1.2 + 0.32 * len(rows))))
    im = ax.imshow(matrix, aspect="auto", cmap="viridis", vmin=0.0, vmax=1.0)
    for i in range(len(rows)):
        for j in range(len(targets)):
            ax.text(j, i, f"{matrix[i, j]:.2f}", ha="center", va="center", fontsize=6,
                    color="white" if matrix[i, j] < 0.6 else "black")
    ax.set_xticks(range(len(targets)), targets, rotation=45, ha="right", fontsize=7)
    ax.set_yticks(range(len(rows)), rows, fontsize=7)
    ax.set_xlabel("target (dev split)")
    ax.set_ylabel("LoRA")
    ax.set_title(title, fontsize=8)
    fig.colorbar(im, ax=ax, label="dev score")
    fig.tight_layout()
    return _save(fig, path)
