"""Base models by name: the embedded default, tiny test models, hub ids and local folders.

    model, tokenizer = loraocean.models.load("smollm2-135m")
    model, tokenizer = loraocean.models.load("tiny-llama")        # random, for tests
    model, tokenizer = loraocean.models.load("/path/to/hf/folder")
    model, tokenizer = loraocean.models.load("HuggingFaceTB/SmolLM2-360M")  # hub (needs network)
    model, tokenizer = loraocean.models.load("meta-llama/Llama-3.1-8B", quantize="4bit")  # QLoRA-style

`quantize` ("4bit": NF4 with double quantisation, "8bit": LLM.int8) loads the base's Linear
weights through bitsandbytes (CUDA only; `pip install bitsandbytes`), computing in `dtype`.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import re
from pathlib import Path

import torch

from loraocean.errors import ConfigError, LoraOceanError, MissingPackageError, UnknownNameError
from loraocean.models import embedded
from loraocean.models.architectures import FAMILIES, targets

TINY_PREFIX = "tiny-"
HUB_ID_PATTERN = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")


def known_names() -> list[str]:
    return [embedded.NAME] + [TINY_PREFIX + f for f in FAMILIES]


def slug(name: str) -> str:
    """A folder-safe name for a model: `org/Model-1B` -> `org--Model-1B`. Always a name under
    `paths.check_name`'s rule (whatever the model reference holds: a local path, `..`, control
    or bidirectional characters): other characters become `-`, leading dots go, and a long
    name keeps its end and gains a hash of the whole."""
    import hashlib

    out = re.sub(r"[^A-Za-z0-9._-]+", "-", name.strip("/").replace("/", "--")).lstrip(".-_")
    if len(out) > 100:
        out = hashlib.sha256(name.encode("utf-8", "surrogatepass")).hexdigest()[:12] + "-" + out[-87:].lstrip(".-_")
    return out or "model-" + hashlib.sha256(name.encode("utf-8", "surrogatepass")).hexdigest()[:12]


def name_of(model) -> str | None:
    """The name a base model is known by: the one `load` recorded on its config
    (`loraocean_name`), else the hub id or folder transformers recorded (`name_or_path`), else
    None (a model built from a config)."""
    config = getattr(model, "config", None)
    return getattr(config, "loraocean_name", None) or getattr(config, "name_or_path", None) or None


def default_device() -> str:
    """$LORAOCEAN_DEVICE when set (e.g. `cpu` on a GPU machine, `cuda:1`), else cuda when
    available, else cpu."""
    return os.environ.get("LORAOCEAN_DEVICE") or ("cuda" if torch.cuda.is_available() else "cpu")


def default_dtype(device: str) -> torch.dtype:
    """$LORAOCEAN_DTYPE when set (a torch dtype name: bfloat16, float32, ...), else bf16 on GPU,
    fp32 on CPU."""
    name = os.environ.get("LORAOCEAN_DTYPE")
    if name:
        dtype = getattr(torch, name, None)
        if not isinstance(dtype, torch.dtype):
            raise LoraOceanError(f"LORAOCEAN_DTYPE={name!r} is not a torch dtype; use e.g. "
                                 "bfloat16, float16 or float32")
        return dtype
    return torch.bfloat16 if device.startswith("cuda") else torch.float32


ALLOW_PICKLE = "LORAOCEAN_ALLOW_PICKLE"


def pickle_allowed() -> bool:
    """Whether the user opted in to base-model weights that are not safetensors."""
    return os.environ.get(ALLOW_PICKLE) == "1"


def resolve(name: str) -> tuple[str, str]:
    """(kind, location): kind is embedded, tiny, local or hub."""
    if name == embedded.NAME:
        return "embedded", name
    if name.startswith(TINY_PREFIX):
        family = name[len(TINY_PREFIX):]
        if family not in FAMILIES:
            raise UnknownNameError("tiny model family", family, FAMILIES)
        return "tiny", family
    path = Path(name).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise LoraOceanError(f"{path} is not a Hugging Face model folder (no config.json)")
        if not any(path.glob("*.safetensors")) and not pickle_allowed():
            found = sorted(p.name for p in path.iterdir() if p.suffix in (".bin", ".pt", ".pth", ".ckpt"))
            raise LoraOceanError(
                f"{path} has no *.safetensors weights ({', '.join(found) or 'no weight files'}); weights "
                "are read from safetensors only, since pickle files can run code when loaded. Re-save "
                f"the model with save_pretrained (safetensors is its default), or set {ALLOW_PICKLE}=1 "
                "to load the pickle with torch.load(weights_only=True)")
        return "local", str(path)
    if HUB_ID_PATTERN.fullmatch(name):
        return "hub", name
    raise UnknownNameError("model", name, known_names(),
                           hint="or give a local model folder or a hub id like org/name")


def hub_id(name: str | None) -> str | None:
    """The hub id of a model name where one exists (the embedded default: its original, of which
    ours is a de-quantized Q4_1 copy); None for tiny test models and local folders."""
    if not name:
        return None
    if name == embedded.NAME:
        return embedded.HUB_ID
    if name.startswith(TINY_PREFIX) or Path(name).expanduser().exists():
        return None
    return name if HUB_ID_PATTERN.fullmatch(name) else None


@contextlib.contextmanager
def quiet_loading():
    """transformers' per-load progress bars ("Loading weights") off for the block: a study loads
    local models many times and its own progress display is what matters. (The one-time GGUF
    conversion of the embedded model still shows its bar: transformers draws it with tqdm
    directly, not through this switch.)"""
    from transformers.utils import logging as hf_logging

    was_on = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_on:
            hf_logging.enable_progress_bar()


QUANTIZE = ("4bit", "8bit")


def quantization_config(quantize: str, kind: str, device: str, dtype: torch.dtype):
    """transformers' BitsAndBytesConfig for `quantize`, or a LoraOceanError saying why this
    model, device or installation cannot have it."""
    if quantize not in QUANTIZE:
        raise ConfigError(f"quantize = {quantize!r}: choose one of {', '.join(QUANTIZE)}")
    if kind == "tiny":
        raise ConfigError("quantized loading is for pretrained models, not the random tiny-* ones")
    if not device.startswith("cuda") or not torch.cuda.is_available():
        raise ConfigError(f"{quantize} loading needs a CUDA GPU (bitsandbytes), but the device is "
                          f"{device!r}" + ("" if torch.cuda.is_available() else " and none is available")
                          + "; load the base unquantized (leave --quantize unset)")
    if importlib.util.find_spec("bitsandbytes") is None:
        raise MissingPackageError(f"bitsandbytes (needed for {quantize} loading)", "pip install bitsandbytes")
    from transformers import BitsAndBytesConfig

    if quantize == "8bit":
        return BitsAndBytesConfig(load_in_8bit=True)
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                              bnb_4bit_use_double_quant=True, bnb_4bit_compute_dtype=dtype)


def dtype_names(tensors) -> str:
    """The distinct dtypes of `tensors`, e.g. `float32` or `bfloat16,float32` (`none` if empty)."""
    return ",".join(sorted({str(t.dtype).removeprefix("torch.") for t in tensors})) or "none"


def precision(model) -> str:
    """The base model's weights as a card records them: `bfloat16`, or `4bit (bfloat16 compute)`."""
    dtype = str(model.get_input_embeddings().weight.dtype).removeprefix("torch.")
    quantize = getattr(model.config, "loraocean_quantize", None)
    return f"{quantize} ({dtype} compute)" if quantize else dtype


def load(name: str, *, device: str | None = None, dtype: torch.dtype | None = None,
         trust_remote_code: bool = False, quantize: str | None = None):
    """(model, tokenizer) in eval mode on `device` (default: cuda when available, else cpu).
    `quantize`: "4bit" or "8bit" (see the module docstring)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    kind, where = resolve(name)
    device = device or default_device()
    dtype = dtype or default_dtype(device)
    quantized = {}
    if quantize is not None:
        quantized = {"quantization_config": quantization_config(quantize, kind, device, dtype),
                     "device_map": {"": device}}  # placed while loading; bitsandbytes models cannot .to()
    if kind == "tiny":
        from loraocean.models.tiny import build_tiny

        model, tokenizer = build_tiny(where)
        model = model.to(device=device, dtype=dtype)
    else:
        try:
            # hub loads keep their bars: a download's progress is worth seeing
            with quiet_loading() if kind != "hub" else contextlib.nullcontext():
                path = str(embedded.folder()) if kind == "embedded" else where
                tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
                model = AutoModelForCausalLM.from_pretrained(
                    path, dtype=dtype, trust_remote_code=trust_remote_code,
                    use_safetensors=None if pickle_allowed() else True, **quantized)
        except OSError as err:
            raise LoraOceanError(f"could not load model {name!r}: {str(err).splitlines()[0]} (weights are "
                                 f"read from safetensors only unless {ALLOW_PICKLE}=1)") from None
        if not quantized:
            model = model.to(device)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model.eval()
    model.config.loraocean_name = name
    if quantize is not None:
        model.config.loraocean_quantize = quantize
    return model, tokenizer


__all__ = ["load", "name_of", "resolve", "slug", "targets", "known_names", "default_device", "default_dtype",
           "dtype_names", "precision", "QUANTIZE"]
