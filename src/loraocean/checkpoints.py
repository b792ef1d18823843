"""Putting an adapter on a base model for evaluation: a PEFT LoRA folder or an MoE checkpoint."""

from __future__ import annotations

from pathlib import Path

from loraocean.errors import AdapterMismatchError, LoraOceanError


def model_name(model) -> str | None:
    """The name the base model was loaded by (`loraocean.models.load` records it)."""
    return getattr(getattr(model, "config", None), "loraocean_name", None)


def _check_base(path: Path, trained_for: str | None, model) -> None:
    name = model_name(model)
    if trained_for and name and trained_for != name:
        raise AdapterMismatchError(
            f"{path} was trained for base model {trained_for!r}, but the model given is {name!r}; "
            f"evaluate it with --model {trained_for}")


def kind_of(path: str | Path) -> str:
    """`lora` (a PEFT adapter folder) or `moe` (an MoE checkpoint)."""
    path = Path(path)
    if (path / "moe_config.json").is_file():
        return "moe"
    if (path / "adapter_config.json").is_file():
        return "lora"
    if not path.exists():
        raise LoraOceanError(f"adapter {path} does not exist; give a LoRA folder (adapter_config.json) "
                             "or an MoE checkpoint (moe_config.json)")
    raise LoraOceanError(f"{path} is neither a PEFT adapter folder (no adapter_config.json) nor an MoE "
                         "checkpoint (no moe_config.json)")


def check(path: str | Path) -> str:
    """Check an adapter folder without a model (so a command fails before loading one): a PEFT
    folder against itself and its card's integrity record, an MoE checkpoint against its card.
    Returns its kind (`lora` or `moe`)."""
    path = Path(path)
    kind = kind_of(path)
    if kind == "moe":
        from loraocean.moe.checkpoint import check as check_checkpoint, read_config

        read_config(path)
        check_checkpoint(path)
        return kind
    from loraocean.library.adapter import WEIGHTS, check_adapter
    from loraocean.library.card import CARD, check_card

    if not (path / WEIGHTS).is_file():
        raise LoraOceanError(f"{path} has no {WEIGHTS} (weights are only read from safetensors, "
                             "never unpickled); re-save the adapter with PEFT")
    check_adapter(path)
    if (path / CARD).is_file():
        check_card(path)
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
        from loraocean.moe import load_checkpoint  # lazily: the MoE room depends on us, not back

        wrapped = load_checkpoint(path, model)  # checks the checkpoint itself
    else:
        from loraocean.library.card import CARD, read_card

        check(path)
        card = read_card(path) if (path / CARD).is_file() else {}
        _check_base(path, card.get("model"), model)
        from peft import PeftModel

        try:
            wrapped = PeftModel.from_pretrained(model, str(path), is_trainable=False)
        except (RuntimeError, ValueError, KeyError) as err:
            raise AdapterMismatchError(
                f"{path} does not fit base model {model_name(model)!r}: {str(err).splitlines()[0]}; "
                "evaluate it with the base model it was trained on") from None
    wrapped.eval()
    return wrapped
