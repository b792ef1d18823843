"""The checks every MoE method must pass, whoever wrote it. Each is a function `(kit, name)` that
raises `ConformanceError` (an AssertionError) saying what the method did wrong; `check_method` runs
them all. A method is built the way `fit` builds it: its `prepare` step on the selected experts (the
kit's LoRAs), then its `build`.

- `builds`: builds on the tiny model of every architecture family, runs forward (and backward when
  it trains) with finite numbers;
- `save_load`: its checkpoint, loaded on a fresh base model, gives the logits it gave (trained
  parameters moved off their initial values first, so that nothing trivial passes);
- `trains_declared`: what requires grad is what changes in a training step, nothing of the base
  model changes, everything it trains is in its checkpoint, and a method that does not train has
  nothing to train;
- `device_dtype`: every tensor it adds is on the kit's device, the logits are in the model's dtype,
  what it trains is float32 after `upcast_trainables` (as `fit` does) and a training step runs;
- `deterministic`: the same seed gives the same tensors and logits whatever the global random state;
- `degenerates`: its declared trivial cases (`Method.degenerates`): "base", built without experts it
  is the base model; "expert", built on one LoRA it is that LoRA (on the modules it adapts), as PEFT
  applies it;
- `export`: when it declares an `Export`, the exported folder loaded by that tool gives the
  checkpoint's logits.
"""

from __future__ import annotations

import copy
from typing import Callable

import torch

from loraocean.moe.registry import get_method
from loraocean.testing.fixtures import Kit


class ConformanceError(AssertionError):
    """A method that breaks one of the checks (the message names the method and the check)."""


def _fail(name: str, check: str, what: str) -> None:
    raise ConformanceError(f"{name} fails {check}: {what}")


def make(kit: Kit, name: str, model, tokenizer, experts, options: dict | None = None):
    """The method built as `fit` builds it: its config (with `options`), its prepare step on
    `experts`, its build."""
    m = get_method(name)
    if m.target_expert:
        experts = experts[:1]
    cfg = m.make_config(options or {})
    if m.prepare is not None:
        experts = m.prepare(model, tokenizer, experts, cfg, kit.context(tokenizer))
    return m.build(model, experts, cfg), cfg


def built(kit: Kit, name: str, family: str | None = None, n: int | None = None, options: dict | None = None):
    """(MoEModel, cfg, tokenizer) on a fresh tiny model of `family` with `n` of the kit's LoRAs."""
    model, tokenizer = kit.load(family)
    moe, cfg = make(kit, name, model, tokenizer, kit.experts(model, family, n), options)
    return moe, cfg, tokenizer


def perturb(moe, seed: int) -> None:
    """Move every trainable tensor off its initial value (seeded), as training would."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in moe.trainable_parameters():
            noise = torch.randn(p.shape, generator=gen).to(device=p.device, dtype=p.dtype)
            spread = float(p.detach().float().std()) if p.numel() > 1 else 0.0
            p.add_(noise * (0.1 * spread + 0.05))


@torch.no_grad()
def logits(model, batch) -> torch.Tensor:
    model.eval()
    return model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits.float()


def _close(name: str, check: str, got: torch.Tensor, want: torch.Tensor, tol: float, what: str) -> None:
    if got.shape != want.shape:
        _fail(name, check, f"{what}: shape {tuple(got.shape)} != {tuple(want.shape)}")
    diff = float((got - want).abs().max())
    if not diff <= tol:
        _fail(name, check, f"{what}: logits differ by {diff:.3g} (tolerance {tol:g})")


def train_step(kit: Kit, name: str, moe, cfg, tokenizer, lr: float = 1e-2) -> torch.Tensor:
    """One AdamW step of the LM loss plus the method's auxiliary loss (with its batch hook), as the
    shared training loop takes one; returns the loss."""
    m = get_method(name)
    moe.upcast_trainables()
    moe.train()
    batch = kit.batch(tokenizer)
    if m.batch_hook is not None:
        m.batch_hook(moe, kit.context(tokenizer))(list(range(batch["input_ids"].shape[0])))
    params = moe.trainable_parameters()
    opt = torch.optim.AdamW(params, lr=lr)
    loss = moe(**batch).loss
    aux = m.aux_loss(moe, cfg) if m.aux_loss is not None else None
    if aux is not None:
        if not torch.isfinite(aux):
            _fail(name, "trains_declared", f"its auxiliary loss is {float(aux)}")
        loss = loss + aux
    loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)
    moe.eval()
    return loss.detach()


# --- the checks ----------------------------------------------------------------------------------

def check_builds(kit: Kit, name: str) -> None:
    m = get_method(name)
    for family in kit.families:
        try:
            moe, cfg, tokenizer = built(kit, name, family)
        except Exception as err:  # noqa: BLE001  (the message says which family)
            _fail(name, "builds", f"on tiny-{family}: {type(err).__name__}: {err}")
        batch = kit.batch(tokenizer, n=2)
        out = logits(moe, batch)
        if not torch.isfinite(out).all():
            _fail(name, "builds", f"on tiny-{family}: non-finite logits")
        if m.trains:
            loss = train_step(kit, name, moe, cfg, tokenizer)
            if not torch.isfinite(loss):
                _fail(name, "builds", f"on tiny-{family}: training loss {float(loss)}")


def check_save_load(kit: Kit, name: str) -> None:
    from loraocean.moe.checkpoint import load_checkpoint, save_checkpoint

    moe, _, tokenizer = built(kit, name)
    perturb(moe, kit.seed)
    batch = kit.batch(tokenizer)
    want = logits(moe, batch)
    folder = kit.root / "checkpoints" / f"{name}-save-load"
    save_checkpoint(moe, folder, overwrite=True)
    loaded = load_checkpoint(folder, kit.load()[0])
    saved, back = moe.moe_state_dict(), loaded.moe_state_dict()
    if set(saved) != set(back):
        _fail(name, "save_load", f"tensors {sorted(set(saved) ^ set(back))[:3]} appear on one side only")
    for key in saved:
        if not torch.equal(saved[key].cpu(), back[key].cpu()):
            _fail(name, "save_load", f"tensor {key} changed in the round trip")
    _close(name, "save_load", logits(loaded, batch), want, kit.same, "the loaded checkpoint")


def check_trains_declared(kit: Kit, name: str) -> None:
    m = get_method(name)
    moe, cfg, tokenizer = built(kit, name)
    trainable = {id(p) for p in moe.trainable_parameters()}
    if not m.trains:
        if trainable:
            _fail(name, "trains_declared", "it does not train (trains=False) but has parameters that require grad")
        return
    if not trainable:
        _fail(name, "trains_declared", "it trains (trains=True) but no parameter requires grad")
    perturb(moe, kit.seed)  # B = 0 at the start would leave A without a gradient
    saved = {t.data_ptr() for t in moe.moe_state_dict().values()}
    unsaved = [n for n, p in moe.named_parameters() if p.requires_grad and p.data_ptr() not in saved]
    if unsaved:
        _fail(name, "trains_declared", f"it trains {unsaved[:3]} but its checkpoint does not save them")
    before = {n: p.detach().clone() for n, p in moe.named_parameters()}
    before.update({f"buffer:{n}": b.detach().clone() for n, b in moe.named_buffers()})
    train_step(kit, name, moe, cfg, tokenizer)
    after = dict(moe.named_parameters())
    after.update({f"buffer:{n}": b for n, b in moe.named_buffers()})
    params = dict(moe.named_parameters())
    changed = {n for n, t in after.items() if n in before and not torch.equal(t.detach().to(before[n].dtype), before[n])}
    undeclared = sorted(n for n in changed if n.startswith("buffer:") or not params[n].requires_grad)
    if undeclared:
        _fail(name, "trains_declared", f"a training step changed {undeclared[:3]}, which it does not train")
    if not changed:
        _fail(name, "trains_declared", "a training step changed none of the parameters it trains")


def check_device_dtype(kit: Kit, name: str) -> None:
    m = get_method(name)
    moe, cfg, tokenizer = built(kit, name)
    device = torch.device(kit.device)
    for key, t in moe.moe_state_dict().items():
        if t.device.type != device.type:
            _fail(name, "device_dtype", f"tensor {key} is on {t.device}, the model on {kit.device}")
    out = moe(**{k: v for k, v in kit.batch(tokenizer).items() if k != "labels"}).logits
    if out.dtype != kit.dtype or out.device.type != device.type:
        _fail(name, "device_dtype", f"logits are {out.dtype} on {out.device}, the model {kit.dtype} on {kit.device}")
    if m.trains:
        train_step(kit, name, moe, cfg, tokenizer)
        wrong = [n for n, p in moe.named_parameters() if p.requires_grad and p.dtype != torch.float32]
        if wrong:
            _fail(name, "device_dtype", f"trained parameters {wrong[:3]} are not float32 after upcast_trainables")


def check_deterministic(kit: Kit, name: str) -> None:
    states, outs = [], []
    for global_seed in (123, 456):  # the global random state must not matter
        torch.manual_seed(global_seed)
        moe, _, tokenizer = built(kit, name)
        states.append({k: v.cpu() for k, v in moe.moe_state_dict().items()})
        outs.append(logits(moe, kit.batch(tokenizer)))
    if set(states[0]) != set(states[1]):
        _fail(name, "deterministic", "two builds hold different tensors")
    for key in states[0]:
        if not torch.equal(states[0][key], states[1][key]):
            _fail(name, "deterministic", f"tensor {key} differs between two builds with the same seed")
    _close(name, "deterministic", outs[1], outs[0], kit.same, "two builds with the same seed")


def _peft_with(kit: Kit, expert, modules: list[str], model):
    """`model` with PEFT's LoRA layers holding `expert` on `modules` (written as a PEFT folder)."""
    from peft import PeftModel

    from loraocean.moe.export import write_lora

    folder = kit.root / "degenerate" / f"{expert.name}-{len(modules)}"
    if not (folder / "adapter_config.json").is_file():
        folder.mkdir(parents=True, exist_ok=True)
        write_lora(folder, {m: expert.A[m] for m in modules}, {m: expert.B[m] for m in modules},
                   {m: expert.scale[m] for m in modules})
    return PeftModel.from_pretrained(model, str(folder)).eval()


def check_degenerates(kit: Kit, name: str) -> None:
    m = get_method(name)
    for case in m.degenerates:
        model, tokenizer = kit.load()
        batch = kit.batch(tokenizer)
        if case == "base":
            want = logits(kit.load()[0], batch)
            moe, _ = make(kit, name, model, tokenizer, [])
            _close(name, "degenerates", logits(moe, batch), want, kit.same, "built without experts vs the base model")
            continue
        expert = kit.experts(model, n=1)[0]
        moe, _ = make(kit, name, model, tokenizer, [copy.deepcopy(expert)])
        adapted = [n for n, layer in moe.layers().items() if any(layer.ranks)]
        modules = [n for n in adapted if n in expert.A]
        if not modules:
            _fail(name, "degenerates", "built on one LoRA it adapts none of that LoRA's modules")
        want = logits(_peft_with(kit, expert, modules, kit.load()[0]), batch)
        _close(name, "degenerates", logits(moe, batch), want, kit.tolerance,
               f"built on one LoRA vs PEFT with that LoRA on the {len(modules)} modules it adapts")


def check_export(kit: Kit, name: str) -> None:
    from loraocean.moe.checkpoint import load_checkpoint, save_checkpoint
    from loraocean.moe.export import export_peft

    m = get_method(name)
    if m.export is None:
        return
    moe, _, tokenizer = built(kit, name)
    perturb(moe, kit.seed)
    folder = kit.root / "checkpoints" / f"{name}-export"
    save_checkpoint(moe, folder, overwrite=True)
    ours = load_checkpoint(folder, kit.load()[0])
    export = export_peft(folder, kit.root / "exports" / name, overwrite=True)
    if export is not m.export:
        _fail(name, "export", "export_peft did not use the method's own Export")
    theirs = m.export.load(kit.load()[0], kit.root / "exports" / name)
    batch = kit.batch(tokenizer)
    _close(name, "export", logits(theirs, batch), logits(ours, batch), kit.tolerance,
           f"the exported {m.export.what} vs the checkpoint")


CHECKS: dict[str, Callable[[Kit, str], None]] = {
    "builds": check_builds, "save_load": check_save_load, "trains_declared": check_trains_declared,
    "device_dtype": check_device_dtype, "deterministic": check_deterministic,
    "degenerates": check_degenerates, "export": check_export}


def check_method(name: str, kit: Kit | None = None, checks=None) -> list[str]:
    """Run `checks` (default: all of `CHECKS`) on method `name`; raises `ConformanceError` listing
    every failure, returns the names of the checks passed."""
    kit = kit or Kit()
    failures, passed = [], []
    for check in checks or CHECKS:
        try:
            CHECKS[check](kit, name)
            passed.append(check)
        except ConformanceError as err:
            failures.append(str(err))
        except Exception as err:  # noqa: BLE001  (a crash is that check's failure, said in one line)
            failures.append(f"{name} fails {check}: {type(err).__name__}: {err}")
    if failures:
        raise ConformanceError("; ".join(failures))
    return passed
