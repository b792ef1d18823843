"""Putting an adapter on a base model: a PEFT LoRA folder or an MoE checkpoint.

This module sits above `moe` and `evaluation` (docs/architecture.md): it alone tells the two kinds
of folder apart, so evaluation scores whatever model it is given and knows no checkpoint format.

    from loraocean.checkpoints import attach
    model = attach(base, "runs/lite/jobs/fit-.../moe")   # or a library LoRA folder
"""

from __future__ import annotations

from pathlib import Path

from loraocean.errors import AdapterMismatchError, LoraOceanError
from loraocean.library.adapter import CONFIG as LORA_CONFIG, WEIGHTS, check_adapter
from loraocean.library.card import CARD, check_card, read_card
from loraocean.library.store import check_entry_folder
from loraocean.models import name_of
from loraocean.moe.checkpoint import CONFIG as MOE_CONFIG, check as check_checkpoint, load_checkpoint, read_config


def _check_base(path: Path, trained_for: str | None, model) -> None:
    name = name_of(model)
    if trained_for and name and trained_for != name:
        raise AdapterMismatchError(
            f"{path} was trained for base model {trained_for!r}, but the model given is {name!r}; "
            f"evaluate it with --model {trained_for}")


def kind_of(path: str | Path) -> str:
    """`lora` (a PEFT adapter folder) or `moe` (an MoE checkpoint)."""
    path = Path(path)
    if (path / MOE_CONFIG).is_file():
        return "moe"
    if (path / LORA_CONFIG).is_file():
        return "lora"
    if not path.exists():
        raise LoraOceanError(f"adapter {path} does not exist; give a LoRA folder ({LORA_CONFIG}) "
                             f"or an MoE checkpoint ({MOE_CONFIG})")
    raise LoraOceanError(f"{path} is neither a PEFT adapter folder (no {LORA_CONFIG}) nor an MoE "
                         f"checkpoint (no {MOE_CONFIG})")


def check(path: str | Path) -> str:
    """Check an adapter folder without a model (so a command fails before loading one): a PEFT
    folder against itself and its card's integrity record, an MoE checkpoint against its card.
    Returns its kind (`lora` or `moe`)."""
    path = Path(path)
    kind = kind_of(path)
    if kind == "moe":
        read_config(path)
        check_checkpoint(path)
        return kind
    if not (path / WEIGHTS).is_file():
        raise LoraOceanError(f"{path} has no {WEIGHTS} (weights are only read from safetensors, "
                             "never unpickled); re-save the adapter with PEFT")
    check_adapter(path)
    if (path / CARD).is_file():
        check_card(path)
        check_entry_folder(path)  # a library entry in another entry's folder is refused
    return kind


def attach(model, path: str | Path):
    """`model` with the adapter at `path` on it, in eval mode.

    A PEFT folder is checked against itself (`library.adapter.check_adapter`) and, when it has a
    card, against the card's integrity record, then loads with `PeftModel.from_pretrained`
    (safetensors weights only); an MoE checkpoint with `loraocean.moe.load_checkpoint` (which does
    the same checks). Either way the base model the adapter was made for must be the one given,
    else AdapterMismatchError names both.
    """
    path = Path(path)
    if kind_of(path) == "moe":
        wrapped = load_checkpoint(path, model)  # checks the checkpoint itself
    else:
        check(path)
        card = read_card(path) if (path / CARD).is_file() else {}
        _check_base(path, card.get("model"), model)
        from peft import PeftModel

        try:
            wrapped = PeftModel.from_pretrained(model, str(path), is_trainable=False)
        except (RuntimeError, ValueError, KeyError) as err:
            raise AdapterMismatchError(
                f"{path} does not fit base model {name_of(model)!r}: {str(err).splitlines()[0]}; "
                "evaluate it with the base model it was trained on") from None
    wrapped.eval()
    return wrapped
