"""One small training loop shared by LoRA training and every MoE method that trains.

Plain PyTorch on purpose (readable top to bottom, like a torchtune recipe): length-grouped batches,
gradient accumulation to the effective batch, AdamW, linear warm-up then cosine decay, gradient
clipping, an optional auxiliary loss from the model (e.g. LoRAMoE's balancing constraint), and a
hard stop on a NaN/inf loss.

Memory (none of these changes what is learned, only what is kept in memory at once):
- `gradient_checkpointing`: transformers' activation checkpointing of every decoder layer,
  non-reentrant (torch restores the RNG state, so dropout and the routers inside a layer recompute
  exactly what the forward computed).
- `micro_batch`: each batch of `batch_size` examples runs as forwards of at most `micro_batch`
  examples whose losses are weighted by their share of the batch's answer tokens, so the gradient
  is the batch's (the auxiliary loss is computed per forward and weighted by its share of examples).
- On a CUDA out-of-memory error the step is redone with half the micro-batch (down to one
  example); `max_memory_gib` caps this process's share of the card (torch's per-process memory
  fraction), so a preset made for a large card runs on a smaller one with its hyperparameters.

Speed: only the answer tokens carry a loss, so (when the model's forward takes transformers'
`logits_to_keep`) the output head runs on those positions only instead of every position: the
head of a small model with a large vocabulary (SmolLM2: 576 x 49152) is a big share of the step.
The loss is the same mean token cross-entropy over answer tokens as transformers computes.
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass, field
from typing import Callable, Iterator

import torch

from loraocean.batching import Encoded, length_grouped, pad_batch
from loraocean.errors import ConfigError, TrainingError
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
    gradient_checkpointing: bool = False  # recompute each layer's activations in backward
    micro_batch: int | None = None        # examples per forward (None: batch_size); same gradients
    max_memory_gib: float | None = None   # CUDA only: cap on this process's device memory


@dataclass
class TrainLog:
    steps: int = 0
    tokens: int = 0
    seconds: float = 0.0
    losses: list[float] = field(default_factory=list)  # one per optimizer step
    trainable: int = 0  # trainable parameters (elements) the optimizer updated
    micro_batch: int = 0  # examples per forward at the end (smaller than asked after out-of-memory)

    def summary(self) -> dict:
        n = len(self.losses)
        head = self.losses[: max(1, n // 10)]
        tail = self.losses[-max(1, n // 10):]
        return {"steps": self.steps, "tokens": self.tokens, "seconds": round(self.seconds, 2),
                "trainable_params": self.trainable,
                "loss_first": round(sum(head) / len(head), 4) if n else None,
                "loss_last": round(sum(tail) / len(tail), 4) if n else None,
                "loss_min": round(min(self.losses), 4) if n else None,
                "tokens_per_second": round(self.tokens / self.seconds, 1) if self.seconds else None,
                "micro_batch": self.micro_batch}


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
    inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"],
              "use_cache": False}
    if takes_logits_mask(model):
        logits = model(**inputs, logits_to_keep=keep).logits
    else:
        logits = model(**inputs).logits[keep]
    logits = logits.reshape(-1, logits.shape[-1]).float()
    return torch.nn.functional.cross_entropy(logits, labels[:, 1:][keep[:, :-1]])


def hf_model(model):
    """The transformers model inside a PEFT or MoE wrapper (or `model` itself)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


@contextlib.contextmanager
def checkpointing(model, on: bool):
    """Activation checkpointing of the transformers model inside `model` for the block."""
    if not on:
        yield
        return
    hf = hf_model(model)
    if not getattr(hf, "supports_gradient_checkpointing", False):
        raise ConfigError(f"{type(hf).__name__} does not support gradient checkpointing; set "
                          "gradient_checkpointing to false (preset field or --no-gradient-checkpointing)")
    kwargs = {"use_reentrant": False}
    if hasattr(hf, "activation_checkpointing_enable"):  # recent transformers; before: gradient_*
        hf.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
        disable = hf.activation_checkpointing_disable
    else:
        hf.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
        disable = hf.gradient_checkpointing_disable
    try:
        yield
    finally:
        disable()


@contextlib.contextmanager
def memory_cap(device: torch.device, gib: float | None):
    """At most `gib` GiB of `device` for this process during the block (CUDA only)."""
    if gib is None:
        yield
        return
    if device.type != "cuda":
        raise ConfigError(f"max_memory_gib = {gib} needs a CUDA device (the model is on {device}); "
                          "leave it unset on other devices")
    total = torch.cuda.get_device_properties(device).total_memory
    torch.cuda.set_per_process_memory_fraction(min(1.0, gib * 2**30 / total), device)
    try:
        yield
    finally:
        torch.cuda.set_per_process_memory_fraction(1.0, device)


def batches(data: list[Encoded], cfg: TrainConfig) -> Iterator[list[int]]:
    """Length-grouped batches of example indices, epoch after epoch (reshuffled per epoch)."""
    lengths = [len(d) for d in data]
    epoch = 0
    while True:
        yield from length_grouped(lengths, cfg.batch_size, cfg.seed + epoch)
        epoch += 1


def accumulate(model, data: list[Encoded], group: list[list[int]], micro: int, pad_id: int,
               fast_loss: bool, aux_loss, batch_hook, step: int) -> tuple[float, int]:
    """Forward and backward every batch of one optimizer step (each in forwards of at most
    `micro` examples); the gradients sum to the mean of the batches' gradients.
    Returns (loss, tokens): the step's mean batch loss and its number of tokens."""
    device = next(model.parameters()).device
    total, tokens = 0.0, 0
    for batch_idx in group:
        parts = [batch_idx[i:i + micro] for i in range(0, len(batch_idx), micro)]
        padded = [pad_batch([data[i] for i in part], pad_id) for part in parts]
        answers = [int((b["labels"][:, 1:] != -100).sum()) for b in padded]
        for part, batch, n_answer in zip(parts, padded, answers):
            if batch_hook is not None:
                batch_hook(part)
            batch = {k: v.to(device) for k, v in batch.items()}
            lm = answer_loss(model, batch) if fast_loss else model(**batch, use_cache=False).loss
            loss = lm * (n_answer / max(1, sum(answers)))  # shares are exactly 1 for a whole batch
            extra = aux_loss() if aux_loss is not None else None
            if extra is not None:
                loss = loss + extra * (len(part) / len(batch_idx))
            if not torch.isfinite(loss):
                raise TrainingError(f"loss became {loss.item()} at step {step}; lower the "
                                    "learning rate or check the data")
            (loss / len(group)).backward()
            total += loss.item() / len(group)
            tokens += int(batch["attention_mask"].sum())
    return total, tokens


def finite(params: list[torch.nn.Parameter]) -> bool:
    """Whether every value of `params` is finite (one device sync: the largest magnitude of each
    tensor, in which a NaN or inf survives)."""
    with torch.no_grad():
        return bool(torch.stack([p.detach().abs().amax().float() for p in params if p.numel()]).isfinite().all())


def train(model, data: list[Encoded], cfg: TrainConfig, pad_id: int, *,
          params: list[torch.nn.Parameter] | None = None,
          aux_loss: Callable[[], torch.Tensor | None] | None = None,
          batch_hook: Callable[[list[int]], None] | None = None,
          on_step: Callable[[int, int, float], None] | None = None) -> TrainLog:
    """Train the parameters that require grad (or `params`) on `data`.

    aux_loss: called after each forward, returns a tensor added to the LM loss (or None).
    batch_hook: called with the example indices of each forward before it runs (e.g. to set
    per-example routing labels). on_step(step, total, loss): progress callback.
    """
    if not data:
        raise TrainingError("no training examples")
    if cfg.micro_batch is not None and cfg.micro_batch < 1:
        raise ConfigError(f"micro_batch must be at least 1 (got {cfg.micro_batch})")
    if cfg.max_memory_gib is not None and cfg.max_memory_gib <= 0:
        raise ConfigError(f"max_memory_gib must be positive (got {cfg.max_memory_gib})")
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
    log = TrainLog(trainable=sum(p.numel() for p in params),
                   micro_batch=min(cfg.micro_batch or cfg.batch_size, cfg.batch_size))
    fast_loss = cfg.answer_logits_only and takes_logits_to_keep(model)
    stream = batches(data, cfg)
    model.train()
    start = time.perf_counter()
    try:
        with checkpointing(model, cfg.gradient_checkpointing), memory_cap(device, cfg.max_memory_gib):
            while log.steps < total:
                group = [next(stream) for _ in range(cfg.grad_accum)]
                while True:
                    out_of_memory = False
                    try:
                        running, tokens = accumulate(model, data, group, log.micro_batch, pad_id,
                                                     fast_loss, aux_loss, batch_hook, log.steps + 1)
                    except torch.OutOfMemoryError:
                        out_of_memory = True  # handled below, once the error's frames are freed
                    if not out_of_memory:
                        break
                    opt.zero_grad(set_to_none=True)
                    if device.type == "cuda":
                        torch.cuda.empty_cache()
                    if log.micro_batch == 1:
                        raise TrainingError(
                            "out of device memory with one example per forward; turn on "
                            "gradient_checkpointing, load the base in 4-bit, or lower max_length")
                    log.micro_batch //= 2
                log.tokens += tokens
                if cfg.max_grad_norm:
                    torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
                opt.step()
                if not finite(params):  # never a finished result computed from NaN
                    raise TrainingError(f"a trained weight became non-finite (nan or inf) at step "
                                        f"{log.steps + 1}; lower the learning rate or check the options")
                sched.step()
                opt.zero_grad(set_to_none=True)
                log.steps += 1
                log.losses.append(running)
                if on_step is not None:
                    on_step(log.steps, total, running)
    finally:
        model.eval()
    log.seconds = time.perf_counter() - start
    return log
