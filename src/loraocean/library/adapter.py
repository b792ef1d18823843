"""A PEFT LoRA folder checked against itself before anything uses it: `adapter_config.json` is a
LoRA config with sane values, its regex patterns are plain module-name patterns, and the
safetensors file is readable and holds exactly the A/B pairs of the ranks the config declares.

PEFT trusts the config (a rank or alpha edited by hand silently changes the scaling; `peft_type:
IA3` over LoRA tensors scores another model with only a warning), and matches `target_modules`
strings with `re.fullmatch`, where a pattern such as `((\\w|\\.)+)+!` backtracks for hours. So
patterns may repeat only single characters or character classes (`.*`, `[a-z_]+`), never a group.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
import re._constants as sre
import re._parser as sre_parse
from pathlib import Path

from loraocean.artifacts import read_text
from loraocean.errors import AdapterMismatchError, DataError
from loraocean.models import name_of
from loraocean.models.architectures import linear_dims

CONFIG, WEIGHTS = "adapter_config.json", "adapter_model.safetensors"
MAX_RANK = 65536
MAX_PATTERN = 1000
_KEY = re.compile(r"(.+)\.lora_([AB])(?:\.[^.]+)?\.weight")
_PREFIX = "base_model.model."
_REPEATS = (sre.MAX_REPEAT, sre.MIN_REPEAT, sre.POSSESSIVE_REPEAT)
_PLAIN_IN_REPEAT = (sre.LITERAL, sre.NOT_LITERAL, sre.ANY, sre.IN, sre.CATEGORY)


def _plain(items, in_repeat: bool = False) -> bool:
    for op, av in items:
        if op in _REPEATS:
            if in_repeat or not all(o in _PLAIN_IN_REPEAT for o, _ in av[2]):
                return False
        elif op is sre.SUBPATTERN:
            if not _plain(av[3], in_repeat):
                return False
        elif op is sre.BRANCH:
            if not all(_plain(branch, in_repeat) for branch in av[1]):
                return False
        elif op in (sre.GROUPREF, sre.GROUPREF_EXISTS, sre.ASSERT, sre.ASSERT_NOT):
            return False
    return True


SET_FIELDS = ("target_modules", "exclude_modules")  # PEFT keeps these as sets: saved in any order


def stable_config(folder: str | Path) -> None:
    """Rewrite `folder`'s adapter_config.json so the same adapter gives the same bytes: PEFT saves
    `target_modules` from a set, in an order that changes with each process's string hashing."""
    import json

    from loraocean.artifacts import write_text_atomic

    path = Path(folder) / CONFIG
    config = json.loads(read_text(path))
    for key in SET_FIELDS:
        if isinstance(config.get(key), list):
            config[key] = sorted(config[key])
    # Top-level keys sorted; the order inside rank_pattern / alpha_pattern is kept: PEFT resolves
    # them by the first key that matches, so sorting them could change the ranks.
    write_text_atomic(path, json.dumps(dict(sorted(config.items())), indent=2) + "\n")


def check_pattern(pattern: str, path: Path, field: str) -> None:
    """Refuse a regex that is not a plain module-name pattern (see the module docstring)."""
    try:
        parsed = sre_parse.parse(pattern)
    except re.error as err:
        raise DataError(path, f"{pattern!r:.80} is not a valid regular expression ({err})", field=field) from None
    if len(pattern) > MAX_PATTERN or not _plain(parsed):
        raise DataError(path, f"{pattern!r:.80} is not a plain module-name pattern (a repeated group, "
                        "a back-reference or a look-around can make matching take hours)", field=field,
                        fix="list the module names, e.g. [\"q_proj\", \"v_proj\"], or use a pattern "
                            "like '.*\\.(q_proj|v_proj)'")


def _number(value, positive: bool = True) -> bool:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    return ok and (value > 0 if positive else True)


def _rank_ok(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= MAX_RANK


def read_config(folder: str | Path) -> dict:
    """The adapter's LoRA config, every value this project or PEFT relies on checked."""
    path = Path(folder) / CONFIG
    try:
        config = json.loads(read_text(path))
    except json.JSONDecodeError as err:
        raise DataError(path, f"not valid JSON ({err.msg})", line=err.lineno,
                        fix="the adapter folder is damaged; re-train or re-copy it") from None
    if not isinstance(config, dict):
        raise DataError(path, "is not a JSON object", fix="the adapter folder is damaged; re-train or re-copy it")
    if config.get("peft_type", "LORA") != "LORA":
        raise DataError(path, f"peft_type is {config.get('peft_type')!r}; only LoRA adapters are used",
                        field="peft_type")
    if "r" in config and not _rank_ok(config["r"]):
        raise DataError(path, f"r is {config['r']!r}; a rank is an integer in 1..{MAX_RANK}", field="r")
    if "lora_alpha" in config and not _number(config["lora_alpha"]):
        raise DataError(path, f"lora_alpha is {config['lora_alpha']!r}; it must be a positive number",
                        field="lora_alpha")
    targets = config.get("target_modules")
    if isinstance(targets, str):
        check_pattern(targets, path, "target_modules")
    elif targets is not None and not (isinstance(targets, list) and all(isinstance(t, str) for t in targets)):
        raise DataError(path, "must be a list of module names or one pattern", field="target_modules")
    for name, ok, what in (("rank_pattern", _rank_ok, f"an integer rank in 1..{MAX_RANK}"),
                           ("alpha_pattern", _number, "a positive number")):
        pattern = config.get(name) or {}
        if not isinstance(pattern, dict):
            raise DataError(path, "must be an object {pattern: value}", field=name)
        for key, value in pattern.items():
            check_pattern(key, path, f"{name}.{key}")
            if not ok(value):
                raise DataError(path, f"{value!r} is not {what}", field=f"{name}.{key}")
    return config


def _pattern_value(module: str, pattern: dict, default):
    """PEFT's rank_pattern / alpha_pattern lookup (its own `get_pattern_key`): the first key that,
    as a regex, matches the end of the module name at a dot boundary (keys are checked plain by
    `read_config`)."""
    from peft.utils.other import get_pattern_key

    pattern = pattern or {}
    return pattern.get(get_pattern_key(pattern.keys(), module), default)


def rank_of(config: dict, module: str, default: int) -> int:
    return _pattern_value(module, config.get("rank_pattern"), config.get("r", default))


def alpha_of(config: dict, module: str, rank: int) -> float:
    return _pattern_value(module, config.get("alpha_pattern"), config.get("lora_alpha", rank))


def scaling(config: dict, module: str, rank: int) -> float:
    """The factor PEFT multiplies `module`'s B @ A by: alpha / r, or alpha / sqrt(r) with rsLoRA."""
    alpha = alpha_of(config, module, rank)
    return alpha / math.sqrt(rank) if config.get("use_rslora") else alpha / rank


@dataclass
class LoraWeights:
    """A PEFT LoRA folder as tensors: per adapted module (full name, e.g.
    `model.layers.0.mlp.up_proj`) A (r x d_in), B (d_out x r), in the file's dtype, and the scaling."""
    config: dict
    A: dict = field(default_factory=dict)
    B: dict = field(default_factory=dict)
    scale: dict = field(default_factory=dict)


def read_lora(folder: str | Path) -> LoraWeights:
    """The one reader of a LoRA's weights: `check_adapter`, then the tensors with their scaling
    (rank and alpha patterns and rsLoRA resolved as PEFT resolves them)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    config = check_adapter(folder)
    lora = LoraWeights(config)
    path = Path(folder) / WEIGHTS
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError) as err:
        raise DataError(path, f"not a readable safetensors file ({err})",
                        fix="the adapter folder is damaged; re-train or re-copy it") from None
    for key, value in tensors.items():
        match = _KEY.fullmatch(key)
        module = match.group(1).removeprefix(_PREFIX)
        (lora.A if match.group(2) == "A" else lora.B)[module] = value
    for module, a in lora.A.items():
        lora.scale[module] = scaling(config, module, a.shape[0])
    return lora


def check_fits(folder: str | Path, model) -> list[str]:
    """Check every LoRA matrix of the adapter at `folder` against the base model's layer shapes
    (from the safetensors header: no tensor data read; the folder has passed `check_adapter`).
    Returns the adapted module names; raises AdapterMismatchError naming the first misfit. (PEFT
    would only warn about missing keys and fail later with a shape error, so we check first.)"""
    folder = Path(folder)
    modules = dict(model.named_modules())
    base = name_of(model)
    adapted = tensor_shapes(folder)
    for name, shapes in sorted(adapted.items()):
        module = modules.get(name)
        if module is None:
            raise AdapterMismatchError(f"{folder}: the adapter adapts {name!r}, which base model "
                                       f"{base!r} does not have; it was trained for another model")
        dims = linear_dims(getattr(module, "base", module))  # an MoE layer keeps the Linear as `base`
        if dims is None:
            raise AdapterMismatchError(f"{folder}: {name!r} in {base!r} is a {type(module).__name__}, "
                                       "not a Linear layer; the adapter was trained for another model")
        for part, want, have in (("A", shapes["A"][1], dims[0]), ("B", shapes["B"][0], dims[1])):
            if want != have:
                raise AdapterMismatchError(
                    f"{folder}: lora_{part} of {name} has {want} features but {name!r} of base model "
                    f"{base!r} has {have}; the adapter was trained for another base model")
    return sorted(adapted)


def tensor_shapes(folder: str | Path) -> dict[str, dict[str, list[int]]]:
    """module -> {"A": shape, "B": shape} from the safetensors header (no tensor data read)."""
    from safetensors import SafetensorError, safe_open

    path = Path(folder) / WEIGHTS
    out: dict[str, dict[str, list[int]]] = {}
    try:
        with safe_open(str(path), framework="pt") as fh:
            for key in fh.keys():
                match = _KEY.fullmatch(key)
                if not match:
                    raise DataError(path, f"unexpected tensor {key!r} (only lora_A / lora_B weights "
                                    "are supported)")
                module = match.group(1).removeprefix(_PREFIX)
                out.setdefault(module, {})[match.group(2)] = list(fh.get_slice(key).get_shape())
    except (SafetensorError, OSError) as err:
        raise DataError(path, f"not a readable safetensors file ({err})",
                        fix="the adapter folder is damaged; re-train or re-copy it") from None
    return out


def check_adapter(folder: str | Path) -> dict:
    """Check the config and the tensors of a PEFT LoRA folder against each other; returns the config."""
    folder = Path(folder)
    config = read_config(folder)
    shapes = tensor_shapes(folder)
    weights = folder / WEIGHTS
    if not shapes:
        raise DataError(weights, "holds no LoRA weights")
    for module, ab in sorted(shapes.items()):
        if set(ab) != {"A", "B"}:
            raise DataError(weights, f"{module} has lora_{''.join(ab)} but not both lora_A and lora_B")
        a, b = ab["A"], ab["B"]
        if len(a) != 2 or len(b) != 2 or a[0] != b[1]:
            raise DataError(weights, f"{module}: lora_A {a} and lora_B {b} are not a rank-r pair")
        want = rank_of(config, module, a[0])
        if a[0] != want:
            raise DataError(folder / CONFIG, f"declares rank {want} for {module}, but its tensors have "
                            f"rank {a[0]}", field="r", fix="the config does not belong to these weights; "
                            "re-copy the adapter folder")
    return config
