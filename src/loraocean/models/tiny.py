"""Tiny random-initialised models for tests, built offline from a config (seeded, so the same
name always gives the same weights), with a byte-level tokenizer that needs no download."""

from __future__ import annotations

import torch

TINY_DIMS = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, max_position_embeddings=512)

# Config fields of the tiny test model of a family (`models.architectures.FAMILIES`), beyond the
# shared TINY_DIMS.
_TINY_EXTRA: dict[str, dict] = {
    "qwen3": {"head_dim": 16},
    "gemma": {"head_dim": 16},
    "gemma2": {"head_dim": 16},
    "gemma3_text": {"head_dim": 16},
    "opt": {"ffn_dim": 128, "word_embed_proj_dim": 64},
    "gpt2": {"n_inner": 128},
    "falcon": {"ffn_hidden_size": 128},
    "bloom": {"n_head": 4},
}


def tiny_config_kwargs(family: str, vocab_size: int) -> dict:
    return dict(TINY_DIMS, vocab_size=vocab_size, **_TINY_EXTRA.get(family, {}))


def byte_tokenizer():
    """A 256-byte-level BPE tokenizer with no merges plus <pad>, <s>, </s>: encodes any text."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {ch: i for i, ch in enumerate(sorted(alphabet))}
    for special in ("<pad>", "<s>", "</s>"):
        vocab[special] = len(vocab)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", bos_token="<s>",
                                   eos_token="</s>")
    fast.padding_side = "right"
    return fast


def tiny_config(family: str, vocab_size: int, **special_ids):
    """A small config of `family` (a transformers model_type). Families whose configs use other
    field names are mapped in `_TINY_EXTRA`."""
    from transformers import AutoConfig

    kwargs = tiny_config_kwargs(family, vocab_size)
    return AutoConfig.for_model(family, **kwargs, **special_ids)


def build_tiny(family: str = "llama", seed: int = 0):
    from transformers import AutoModelForCausalLM

    tokenizer = byte_tokenizer()
    config = tiny_config(family, vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(config)
    model.eval()
    return model, tokenizer
