"""One small training loop shared by LoRA training and every MoE method that trains.

Plain PyTorch on purpose (readable top to bottom, like a torchtune recipe): length-grouped batches,
gradient accumulation to the effective batch, AdamW, linear warm-up then cosine decay, gradient
clipping, an optional auxiliary loss from the model (e.g. LoRAMoE's balancing constraint), and a
hard stop on a NaN/inf loss.

Speed: only the answer tokens carry a loss, so (when the model's forward takes transformers'
`logits_to_keep`) the output head runs on those positions only instead of every position: the
head of a small model with a large vocabulary (SmolLM2: 576 x 49152) is a big share of the step.
The loss is the same mean token cross-entropy over answer tokens as transformers computes.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from typing import Callable

import torch

from loraocean.batching import Encoded, length_grouped, pad_batch
from loraocean.errors import TrainingError
from loraocean.models.calling import takes_logits_mask, takes_logits_to_keep


@dataclass
class TrainConfig:
    lr: float = 2e-4
    epochs: float = 1.0
    max_steps: int | None = None  # optimizer steps; caps epochs when set
    batch_size: int = 8           # examples per forward pass
    grad_accum: int = 1           # forward passes per optimizer step
    warmup_ratio: float = 0.03
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    seed: int = 0
    answer_logits_only: bool = True  # head on answer positions only, when the model supports it


@dataclass
class TrainLog:
    steps: int = 0
    tokens: int = 0
    seconds: float = 0.0
    losses: list[float] = field(default_factory=list)  # one per optimizer step
    trainable: int = 0  # trainable parameters (elements) the optimizer updated

    def summary(self) -> dict:
        n = len(self.losses)
        head = self.losses[: max(1, n // 10)]
        tail = self.losses[-max(1, n // 10):]
        return {"steps": self.steps, "tokens": self.tokens, "seconds": round(self.seconds, 2),
                "trainable_params": self.trainable,
                "loss_first": round(sum(head) / len(head), 4) if n else None,
                "loss_last": round(sum(tail) / len(tail), 4) if n else None,
                "loss_min": round(min(self.losses), 4) if n else None,
                "tokens_per_second": round(self.tokens / self.seconds, 1) if self.seconds else None}


def lr_lambda(total: int, warmup: int) -> Callable[[int], float]:
    def fn(step: int) -> float:
        if step < warmup:
            return (step + 1) / max(1, warmup)
        progress = (step - warmup) / max(1, total - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return fn


def answer_loss(model, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Mean next-token cross-entropy over the labelled (answer) tokens, computing logits only at
    the positions that predict them (a boolean (batch, length) `logits_to_keep`; transformers
    releases that take no mask compute every position's logits, and the kept ones are picked)."""
    labels = batch["labels"]
    keep = torch.zeros_like(labels, dtype=torch.bool)
    keep[:, :-1] = labels[:, 1:] != -100
    inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
    if takes_logits_mask(model):
        logits = model(**inputs, logits_to_keep=keep).logits
    else:
        logits = model(**inputs).logits[keep]
    logits = logits.reshape(-1, logits.shape[-1]).float()
    return torch.nn.functional.cross_entropy(logits, labels[:, 1:][keep[:, :-1]])


def train(model, data: list[Encoded], cfg: TrainConfig, pad_id: int, *,
          params: list[torch.nn.Parameter] | None = None,
          aux_loss: Callable[[], torch.Tensor | None] | None = None,
          batch_hook: Callable[[list[int]], None] | None = None,
          on_step: Callable[[int, int, float], None] | None = None) -> TrainLog:
    """Train the parameters that require grad (or `params`) on `data`.

    aux_loss: called after each forward, returns a tensor added to the LM loss (or None).
    batch_hook: called with the example indices of each batch before its forward (e.g. to set
    per-example routing labels). on_step(step, total, loss): progress callback.
    """
    if not data:
        raise TrainingError("no training examples")
    torch.manual_seed(cfg.seed)
    params = params if params is not None else [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise TrainingError("the model has no trainable parameters")
    device = next(model.parameters()).device
    batches_per_epoch = len(length_grouped([len(d) for d in data], cfg.batch_size, cfg.seed))
    steps_per_epoch = max(1, batches_per_epoch // cfg.grad_accum)
    total = max(1, math.ceil(steps_per_epoch * cfg.epochs))
    if cfg.max_steps is not None:
        total = min(total, cfg.max_steps)
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(total, int(cfg.warmup_ratio * total)))
    log = TrainLog(trainable=sum(p.numel() for p in params))
    fast_loss = cfg.answer_logits_only and takes_logits_to_keep(model)
    model.train()
    start = time.perf_counter()
    epoch = 0
    micro = 0
    running = 0.0
    while log.steps < total:
        for batch_idx in length_grouped([len(d) for d in data], cfg.batch_size, cfg.seed + epoch):
            if batch_hook is not None:
                batch_hook(batch_idx)
            batch = {k: v.to(device) for k, v in pad_batch([data[i] for i in batch_idx], pad_id).items()}
            loss = answer_loss(model, batch) if fast_loss else model(**batch).loss
            extra = aux_loss() if aux_loss is not None else None
            if extra is not None:
                loss = loss + extra
            if not torch.isfinite(loss):
                raise TrainingError(f"loss became {loss.item()} at step {log.steps + 1}; lower the "
                                    "learning rate or check the data")
            (loss / cfg.grad_accum).backward()
            running += loss.item() / cfg.grad_accum
            log.tokens += int(batch["attention_mask"].sum())
            micro += 1
            if micro % cfg.grad_accum:
                continue
            if cfg.max_grad_norm:
                torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
            log.steps += 1
            log.losses.append(running)
            if on_step is not None:
                on_step(log.steps, total, running)
            running = 0.0
            if log.steps >= total:
                break
        epoch += 1
    model.eval()
    log.seconds = time.perf_counter() - start
    return log


def config_dict(cfg: TrainConfig) -> dict:
    return asdict(cfg)
