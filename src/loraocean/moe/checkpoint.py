"""MoE checkpoints: a folder with moe_config.json (method, its config, experts, base model),
moe_model.safetensors (every tensor the method added: experts, routers, classifier) and card.json.

    model = load_checkpoint("runs/gsm8k-moe", base)   # base: models.load(name)[0]
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

from loraocean.artifacts import atomic_dir, package_versions, read_text, write_json_atomic
from loraocean.errors import AdapterMismatchError, DataError, LoraOceanError
from loraocean.library.card import check_card, check_replaceable, write_card
from loraocean.models import name_of
from loraocean.moe.experts import shaped_expert
from loraocean.moe.model import MoEModel
from loraocean.moe.registry import get_method

CONFIG = "moe_config.json"
WEIGHTS = "moe_model.safetensors"
CARD = "card.json"
FILES = (CONFIG, WEIGHTS)  # recorded in the card (the weights last)
FORMAT_VERSION = 1


def save_checkpoint(model: MoEModel, out: str | Path, card: dict | None = None,
                    overwrite: bool = False) -> Path:
    """Write `model`'s MoE part atomically; the folder appears only when complete."""
    from safetensors.torch import save_file

    config = {"format_version": FORMAT_VERSION, "method": model.method,
              "config": asdict(model.config_obj), "experts": model.expert_info,
              "base_model": name_of(model.base)}
    if overwrite:
        check_replaceable(out)  # only ever replaces a checkpoint or adapter loraocean wrote
    with atomic_dir(out, overwrite=overwrite) as tmp:
        state = {k: v.cpu() for k, v in model.moe_state_dict().items()}
        save_file(state, str(tmp / WEIGHTS))
        write_json_atomic(tmp / CONFIG, config)
        card = dict(card or {}, method=model.method, model=config["base_model"], versions=package_versions())
        write_card(tmp, card, names=FILES)
    return Path(out)


def read_config(path: str | Path) -> dict:
    path = Path(path) / CONFIG
    if not path.is_file():
        raise LoraOceanError(f"{path.parent} is not an MoE checkpoint (no {CONFIG}); "
                             "make one with `loraocean moe fit`")
    try:
        config = json.loads(read_text(path))
    except json.JSONDecodeError as err:
        raise DataError(path, f"invalid JSON ({err.msg})", line=err.lineno) from None
    shape = {"method": str, "config": dict, "experts": list}
    for key, kind in shape.items():
        if not isinstance(config, dict) or not isinstance(config.get(key), kind):
            raise DataError(path, f"not an MoE config (needs {', '.join(shape)})", field=key,
                            fix="re-run `loraocean moe fit`")
    return config


def check(path: str | Path) -> dict:
    """The checkpoint's card after checking it, its config and its weights against the card's
    integrity record (see `library.card`)."""
    return check_card(path, names=FILES)


def load_checkpoint(path: str | Path, model) -> MoEModel:
    """Rebuild the method on `model` (changed in place: MoE layers are injected) and load the
    checkpoint's tensors. Returns an HF-causal-LM-like module in eval mode."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    config = read_config(path)
    check(path)
    loaded = name_of(model)
    if config.get("base_model") and loaded and config["base_model"] != loaded:
        raise AdapterMismatchError(f"{path} was fitted on {config['base_model']!r} but the model is "
                                   f"{loaded!r}; load it on the same base model")
    method = get_method(config["method"])
    cfg = method.make_config(config["config"])
    experts = [shaped_expert(d) for d in config["experts"]]
    moe = method.build(model, experts, cfg)
    try:
        moe.load_moe_state_dict(load_file(str(path / WEIGHTS)))
    except (KeyError, FileNotFoundError, SafetensorError) as err:
        raise DataError(path / WEIGHTS, f"does not match {CONFIG}: {err}",
                        fix="re-run `loraocean moe fit`") from None
    moe.eval()
    return moe
