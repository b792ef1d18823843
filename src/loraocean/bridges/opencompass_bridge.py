"""Bridge to OpenCompass: `LoraOceanModel`, an OpenCompass model over any loraocean model.

OpenCompass pins old numpy / scikit-learn, so it lives in its own virtual environment
(`make opencompass-check` builds it, see integrations/opencompass/README.md); this module imports it only when present. When it
is, `LoraOceanModel` subclasses `opencompass.models.base.BaseModel` and is registered in
OpenCompass's MODELS registry as `LoraOceanModel`, so a config names it with
`type='LoraOceanModel'` (or the class itself). Without OpenCompass the same class works as a plain
object, which is how our tests check it.

- `get_ppl(inputs, mask_length=None)`: per filled prompt, the cross-entropy summed over its
  predicted tokens divided by its number of tokens (OpenCompass's HuggingFace convention); with
  `mask_length` the first `mask_length[i]` tokens are excluded and the divisor is the rest.
- `generate(inputs, max_out_len)`: greedy, batched with left padding (our `generate_texts`).
- `get_token_len(prompt)`: number of tokens (no special tokens added, as we score).
"""

from __future__ import annotations

try:  # OpenCompass's own environment
    from opencompass.models.base import BaseModel as _Base
    from opencompass.registry import MODELS
except ImportError:  # the main environment: a plain class
    _Base, MODELS = object, None

import numpy as np

from loraocean.evaluation.choice import pad_id_of, score_tokens
from loraocean.evaluation.generate import generate_texts


class LoraOceanModel(_Base):
    """`path`: a loraocean model name (smollm2-135m, tiny-llama, a local folder, a hub id);
    `adapter`: a LoRA folder or MoE checkpoint (`loraocean.checkpoints.attach`). `model` and
    `tokenizer` objects may be given instead of `path` (used by tests)."""

    def __init__(self, path: str = "smollm2-135m", adapter: str | None = None, max_seq_len: int = 2048,
                 batch_size: int = 8, tokenizer_only: bool = False, meta_template: dict | None = None,
                 generation_kwargs: dict | None = None, model=None, tokenizer=None, **kwargs):
        if _Base is not object:
            super().__init__(path=path, max_seq_len=max_seq_len, tokenizer_only=tokenizer_only,
                             meta_template=meta_template, generation_kwargs=generation_kwargs or {})
        self.path, self.max_seq_len, self.batch_size = path, max_seq_len, batch_size
        if model is None:
            from loraocean.models import load

            model, tokenizer = load(path)
        if adapter:
            from loraocean.checkpoints import attach  # the harness names the adapter (see bridges/__init__)

            model = attach(model, adapter)
        self.model, self.tokenizer = model, tokenizer
        self.eos_token_id = tokenizer.eos_token_id

    def _ids(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False).input_ids[-self.max_seq_len:]

    def get_token_len(self, prompt: str) -> int:
        return len(self._ids(prompt))

    def get_ppl(self, inputs: list[str], mask_length: list[int] | None = None):
        """Per input its cross-entropy per token (a numpy array, as OpenCompass's inferencer expects)."""
        # Reuses the choice scorer: the first token (or the masked prefix) is the "context" and the
        # rest the "continuation" whose summed log-probability is minus its cross-entropy.
        requests, divisors, scored = [], [], []
        for i, text in enumerate(inputs):
            ids = self._ids(text)
            cut = max(1, mask_length[i]) if mask_length is not None else 1
            if len(ids) > cut:  # nothing to predict: cross-entropy 0, as OpenCompass gets
                requests.append((ids[:cut], [ids[cut:]]))
                divisors.append(len(ids) - mask_length[i] if mask_length is not None else len(ids))
                scored.append(i)
        scores = score_tokens(self.model, requests, pad_id_of(self.tokenizer), self.batch_size,
                              context_nll=False)
        out = [0.0] * len(inputs)
        for i, s, d in zip(scored, scores, divisors):
            out[i] = -s.logprobs[0] / d
        return np.array(out)

    def generate(self, inputs: list[str], max_out_len: int, stopping_criteria=(), **kwargs) -> list[str]:
        return generate_texts(self.model, self.tokenizer, list(inputs), max_out_len,
                              tuple(stopping_criteria or ()), self.batch_size)


if MODELS is not None:
    MODELS.register_module(name="LoraOceanModel", module=LoraOceanModel, force=True)


CONFIG = '''# OpenCompass config written by loraocean.bridges.opencompass_bridge.write_opencompass_task.
# Run in the OpenCompass environment:  opencompass THIS_FILE -w OUTPUT_DIR
from opencompass.datasets import JsonlDataset  # noqa: E402  (plain JSONL rows)
from opencompass.openicl.icl_evaluator import AccEvaluator
from opencompass.openicl.icl_inferencer import PPLInferencer
from opencompass.openicl.icl_prompt_template import PromptTemplate
from opencompass.openicl.icl_retriever import ZeroRetriever

from loraocean.bridges.opencompass_bridge import LoraOceanModel

# One template per label: our rendered prompt, the separator, the choice text.
_templates = {TEMPLATES}

datasets = [dict(
    abbr={NAME!r}, type=JsonlDataset, path={DATA!r},
    reader_cfg=dict(input_columns=["prompt", {COLUMNS}], output_column="label"),
    infer_cfg=dict(prompt_template=dict(type=PromptTemplate, template=_templates),
                   retriever=dict(type=ZeroRetriever), inferencer=dict(type=PPLInferencer)),
    eval_cfg=dict(evaluator=dict(type=AccEvaluator)),
)]

models = [dict(
    abbr={MODEL_ABBR!r}, type=LoraOceanModel, path={MODEL!r}, adapter={ADAPTER!r},
    max_seq_len=2048, batch_size=8, run_cfg=dict(num_gpus=0),
)]
'''


def write_opencompass_task(spec, examples, tokenizer, out_dir, model_name: str = "smollm2-135m",
                           adapter: str | None = None, template: str = "auto"):
    """Write `<task>.jsonl` and `<task>_opencompass.py` (an OpenCompass PPL config over it with our
    `LoraOceanModel`) into `out_dir`; returns (jsonl path, config path). Choice tasks with the
    same number of choices in every example only (OpenCompass's PPL templates are per label)."""
    import json
    from pathlib import Path

    from loraocean.artifacts import write_text_atomic
    from loraocean.errors import ConfigError
    from loraocean.tasks.prompts import render

    counts = {len(ex.choices or []) for ex in examples}
    if spec.mode != "choice" or len(counts) != 1:
        raise ConfigError(f"task {spec.name!r}: the OpenCompass export needs a choice task whose "
                          "examples all have the same number of choices")
    k = counts.pop()
    out_dir = Path(out_dir)
    rows, sep = [], " "
    for ex in examples:
        r = render(ex, tokenizer, template)
        sep = r.choices[0][:len(r.choices[0]) - len(ex.choices[0])]
        rows.append({"prompt": r.prompt, **{f"c{i}": c for i, c in enumerate(ex.choices)},
                     "label": str(ex.label)})
    data = write_text_atomic(out_dir / f"{spec.name}.jsonl",
                             "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))
    templates = {str(i): "{prompt}" + sep + "{c%d}" % i for i in range(k)}
    text = (CONFIG.replace("{TEMPLATES}", repr(templates)).replace("{NAME!r}", repr(spec.name))
            .replace("{DATA!r}", repr(str(data.resolve())))
            .replace("{COLUMNS}", ", ".join(repr(f"c{i}") for i in range(k)))
            .replace("{MODEL_ABBR!r}", repr(model_name + ("+adapter" if adapter else "")))
            .replace("{MODEL!r}", repr(model_name)).replace("{ADAPTER!r}", repr(adapter)))
    config = write_text_atomic(out_dir / f"{spec.name}_opencompass.py", text)
    return data, config
