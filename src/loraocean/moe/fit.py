"""`fit`: build a method on a base model from selected experts, train it on the target task's
train split when the method trains, and write a checkpoint.

    card = fit(method, "smollm2-135m", ["bb_snarks", "bb_implicatures"], "bb_winowhy",
               library="lib", out="runs/winowhy-moe", preset="lite")   # method: see `loraocean moe methods`

Experts are library task names (resolved with `Library(root).get(model, task)`) or adapter folders.
Training uses the one shared loop, `loraocean.trainer.train`, with the method's auxiliary loss and
batch hook (e.g. LoRAMoE's per-example task_type), if it has them.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path

from loraocean import models
from loraocean.batching import encode
from loraocean.errors import ConfigError, LoraOceanError
from loraocean.moe.checkpoint import save_checkpoint
from loraocean.moe.experts import Expert, load_adapter
from loraocean.moe.presets import Preset, get_preset
from loraocean.moe.registry import get_method
from loraocean.tasks import data_hash, get_task, load_split


@dataclass
class FitContext:
    """What a method's `prepare` step may use."""
    spec: object
    train: list
    dev: list
    pad_id: int
    max_length: int
    seed: int
    notes: dict = field(default_factory=dict)  # recorded in the card (e.g. dev scores, weights)


def resolve_experts(experts: list[str], model_name: str, library: str | Path | None, model=None) -> list[Expert]:
    """Each item: an adapter folder, or a task name looked up in the library."""
    out = []
    for item in experts:
        folder = Path(item).expanduser()
        if (folder / "adapter_config.json").is_file():
            out.append(load_adapter(folder, model=model))
            continue
        if library is None:
            raise LoraOceanError(f"expert {item!r} is not an adapter folder; give --library DIR to look "
                                 "task names up in a LoRA library")
        from loraocean.library import Library

        entry = Library(library).get(model_name, item)
        expert = load_adapter(entry.path, name=item, model=model)
        expert.task = item
        out.append(expert)
    return out


def fit(method: str, model_name: str, experts: list[str], task: str, out: str | Path,
        library: str | Path | None = None, preset: "str | Preset" = "lite", options: dict | None = None,
        seed: int = 0, model=None, tokenizer=None, overwrite: bool = False, on_step=None,
        train: dict | None = None, lrs: list[float] | None = None) -> dict:
    """Fit `method` for target `task` and write the checkpoint to `out`; returns its card.

    `preset`: a name from `moe.presets.PRESETS` or a `Preset` (e.g. `get_preset("lite").capped(...)`).
    `options`: the method's options (a mapping, or its config dataclass already made).
    `train`: TrainConfig fields that override the preset's for this fit (named in the card).
    `lrs`: a learning-rate grid chosen from on the dev split (`moe.tuning`; recorded in the card).
    `model`/`tokenizer`: an already-loaded base model (it is changed in place)."""
    if model is None:
        model, tokenizer = models.load(model_name)
    moe, card = fit_model(method, model, tokenizer, experts, task, library=library, preset=preset,
                          options=options, seed=seed, on_step=on_step, train=train, lrs=lrs)
    save_checkpoint(moe, out, card, overwrite=overwrite)
    return card


def fit_model(method: str, model, tokenizer, experts: list[str], task: str,
              library: str | Path | None = None, preset: "str | Preset" = "lite", options: dict | None = None,
              seed: int = 0, on_step=None, train: dict | None = None, lrs: list[float] | None = None) -> tuple:
    """(MoEModel, card): `fit` without writing the checkpoint. The fit's seed also seeds the
    method's own initialisation (its config's `seed`, unless `options` names one)."""
    m = get_method(method)
    cfg = options if isinstance(options, m.config) else m.make_config(options, n_experts=len(experts))
    if not isinstance(options, m.config) and "seed" not in (options or {}) and hasattr(cfg, "seed"):
        cfg = replace(cfg, seed=seed)
    if train and not m.trains:
        raise ConfigError(f"{method} does not train, so it takes no training overrides ({train})")
    p = get_preset(preset)
    train_cfg = p.train_config(seed, train)
    model_name = models.name_of(model) or "unknown"
    spec = get_task(task)
    train_ex = load_split(spec, "train", limit=p.train_limit, seed=seed)
    try:
        dev_ex = load_split(spec, "dev", limit=p.dev_limit, seed=seed)
    except LoraOceanError:
        dev_ex = []
    ctx = FitContext(spec, train_ex, dev_ex, tokenizer.pad_token_id, p.max_length, seed)
    chosen = resolve_experts(experts, model_name, library, model)
    start = time.perf_counter()
    if m.prepare is not None:
        chosen = m.prepare(model, tokenizer, chosen, cfg, ctx)
    moe = m.build(model, chosen, cfg)
    log = None
    if m.trains:
        moe.upcast_trainables()
        from loraocean.trainer import train as train_loop

        encoded = [encode(ex, tokenizer, max_length=p.max_length) for ex in train_ex]
        aux = (lambda: m.aux_loss(moe, cfg)) if m.aux_loss is not None else None
        hook = m.batch_hook(moe, ctx) if m.batch_hook is not None else None
        if lrs:
            from loraocean.moe.tuning import sweep

            lr, scores, log = sweep(moe, list(lrs), lambda lr: train_loop(
                moe, encoded, replace(train_cfg, lr=lr), tokenizer.pad_token_id, aux_loss=aux,
                batch_hook=hook, on_step=on_step), lambda: _dev_score(moe, tokenizer, spec, dev_ex))
            train_cfg = replace(train_cfg, lr=lr)
            ctx.notes["lr_sweep"] = {"grid": list(lrs), "dev": {str(k): v for k, v in scores.items()},
                                     "chosen": lr, "dev_examples": len(dev_ex), "metric": "lm-eval headline"}
        else:
            log = train_loop(moe, encoded, train_cfg, tokenizer.pad_token_id, aux_loss=aux,
                             batch_hook=hook, on_step=on_step)
    moe.eval()
    card = {"method": method, "model": model_name, "task": spec.name, "experts": [str(e) for e in experts],
            "preset": p.name, "options": asdict(cfg), "seed": seed,
            "train_config": asdict(train_cfg) if m.trains else None,
            **({"train_overrides": dict(train)} if train else {}),
            "train_log": log.summary() if log else None, "losses": log.losses if log else None,
            "data_hash": data_hash(train_ex), "n_train": len(train_ex), "notes": ctx.notes,
            "lr_sweep": ctx.notes.get("lr_sweep"),
            "dtypes": {"base": models.precision(model), "trainable": models.dtype_names(moe.trainable_parameters()),
                       "saved": models.dtype_names(moe.moe_state_dict().values())},
            "seconds": round(time.perf_counter() - start, 2),
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    return moe, card


def _dev_score(moe, tokenizer, spec, dev: list) -> float:
    """The headline score of `moe` on the dev examples (lm-eval convention), for the lr sweep."""
    if not dev:
        raise ConfigError(f"task {spec.name!r} has no dev examples to choose a learning rate on; "
                          "give the fit no learning-rate grid")
    from loraocean.evaluation import evaluate

    return float(evaluate(moe, tokenizer, spec, dev, convention="lm-eval").value)
