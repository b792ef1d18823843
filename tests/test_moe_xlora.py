"""X-LoRA against PEFT's XLoraModel (same adapters, same classifier weights), and KV-cached
greedy generation against uncached generation."""

from __future__ import annotations

import pytest
import torch

from conftest import DEVICE
from loraocean.models import load, targets
from loraocean.models.architectures import FAMILIES
from loraocean.moe import get_method, load_adapter
from test_moe_layer import make_adapters

# `make test-min` runs this file at the lowest declared versions:
# our X-LoRA against PEFT's XLoraModel and transformers' caches.
pytestmark = pytest.mark.min_versions

CONFIGS = [dict(depth=1, layerwise=False),
           dict(depth=3, hidden=32, layerwise=True, temperature=0.7, top_k=2, softmax_topk=True),
           dict(depth=2, hidden=16, layerwise=True, top_k=2, global_scaling_weight=0.5),
           dict(depth=1, layerwise=False, scaling_pass_value=0.5)]  # pass 1 with the experts on


@pytest.fixture(scope="module")
def adapters(tmp_path_factory):
    return make_adapters(tmp_path_factory.mktemp("xlora"))


def ours(paths, model_name="tiny-llama", **options):
    method = get_method("xlora")
    base, _ = load(model_name)
    return method.build(base, [load_adapter(p) for p in paths], method.make_config(options))


def routing(model):
    """The model with its classifier's weights x8: clearly non-uniform scalings."""
    with torch.no_grad():
        for p in model.classifier.parameters():
            p.mul_(8)
    return model


def padded_prompt():
    """Two rows, the second left-padded: (input_ids, attention_mask)."""
    ids = torch.tensor([[5, 6, 7, 8, 9, 10], [0, 0, 11, 12, 13, 14]], device=DEVICE)
    mask = torch.tensor([[1] * 6, [0, 0, 1, 1, 1, 1]], device=DEVICE)
    return ids, mask


def peft_xlora(paths, model, options):
    from peft import XLoraConfig, get_peft_model

    base, _ = load("tiny-llama")
    base.config.use_cache = False  # PEFT's X-LoRA requires it
    cfg = XLoraConfig(task_type="CAUSAL_LM", hidden_size=base.config.hidden_size,
                      adapters={str(i): str(p) for i, p in enumerate(paths)},
                      xlora_depth=options.get("depth", 1), xlora_size=options.get("hidden", 2048),
                      xlora_dropout_p=0.2, layerwise_scalings=options.get("layerwise", False),
                      softmax_temperature=options.get("temperature", 1.0),
                      top_k_lora=options.get("top_k"), enable_softmax_topk=options.get("softmax_topk", False),
                      global_scaling_weight=options.get("global_scaling_weight", 1.0),
                      scaling_pass_value=options.get("scaling_pass_value", 0.0))
    peft_model = get_peft_model(base, cfg)
    classifier = peft_model.base_model.internal_xlora_classifier
    classifier.layers.load_state_dict(model.classifier.state_dict())
    return peft_model.eval()


@pytest.mark.parametrize("options", CONFIGS)
def test_logits_match_peft_xlora(adapters, options):
    model = routing(ours(adapters, **options).eval())
    ref_model = peft_xlora(adapters, model, options)
    torch.manual_seed(0)
    ids = torch.randint(0, 250, (2, 10)).to(DEVICE)
    mask = torch.ones_like(ids)
    mask[1, :3] = 0
    with torch.no_grad():
        got = model(input_ids=ids, attention_mask=mask).logits
        ref = ref_model(input_ids=ids, attention_mask=mask).logits
        scalings = model.last_scalings
    assert scalings.shape == (2, 10, len(model.moe), 3)
    assert scalings.std() > 1e-3  # the classifier really routes
    torch.testing.assert_close(got, ref, atol=1e-4, rtol=0)


def test_cached_generation_equals_uncached_and_peft(adapters):
    model = routing(ours(adapters, depth=2, hidden=16, layerwise=True).eval())
    ids, mask = padded_prompt()
    cached = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=8, pad_token_id=0)
    uncached = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=8, pad_token_id=0,
                              use_cache=False)
    assert cached.shape == (2, 14)
    assert torch.equal(cached, uncached)
    ref_model = peft_xlora(adapters, model, dict(depth=2, hidden=16, layerwise=True))
    with torch.no_grad():
        ref = ref_model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=8, do_sample=False,
                                 pad_token_id=0)
    assert torch.equal(cached, ref)


# Static caches: False runs the step eagerly; {"backend": "eager"} traces it with torch.compile's
# fullgraph=True, so a graph break fails the test (the capture a CUDA graph needs), without the
# minutes inductor takes on a CPU; on CUDA the default (None) compiles and replays a CUDA graph.
STATIC = [False, {"backend": "eager"}] + ([None] if torch.device(DEVICE).type == "cuda" else [])


@pytest.mark.parametrize("compile", STATIC, ids=lambda c: "eager" if c is False else "default" if c is None else "traced")
@pytest.mark.parametrize("options", [CONFIGS[1], CONFIGS[3]], ids=["layerwise-topk", "scaling-pass"])
def test_static_cache_generation_equals_dynamic_and_uncached(adapters, options, compile):
    """generate(cache_implementation="static"): fixed-size caches and one traced per-token step give
    the tokens of the dynamic caches and of uncached decoding (float32, left padding), again on a
    second call that reuses the caches (and the graph) with another prompt, and with rows ending
    at an end-of-sequence token."""
    from loraocean.errors import ConfigError

    model = routing(ours(adapters, **options).eval())
    ids, mask = padded_prompt()
    static = dict(max_new_tokens=10, pad_token_id=0, cache_implementation="static", compile=compile)
    for prompt, prompt_mask in ((ids, mask), ((ids * 7 + 3) % 250, mask)):
        dynamic = model.generate(input_ids=prompt, attention_mask=prompt_mask, max_new_tokens=10, pad_token_id=0)
        uncached = model.generate(input_ids=prompt, attention_mask=prompt_mask, max_new_tokens=10,
                                  pad_token_id=0, use_cache=False)
        got = model.generate(input_ids=prompt, attention_mask=prompt_mask, **static)
        assert got.shape == (2, 16) and len(set(got[0, 6:].tolist())) > 2  # not one token repeated
        assert torch.equal(got, dynamic) and torch.equal(got, uncached)
    eos = int(dynamic[0, 9])  # row 0's fourth new token ends it; row 1 goes on unless it meets it
    want = model.generate(input_ids=prompt, attention_mask=prompt_mask, max_new_tokens=10, pad_token_id=0,
                          eos_token_id=eos)
    got = model.generate(input_ids=prompt, attention_mask=prompt_mask, eos_token_id=eos, **static)
    assert torch.equal(got, want) and bool((got[0, 10:] == 0).all())
    assert all(layer.last_gates is None for layer in model.moe)  # nothing kept from the step's graph
    assert all(layer.external_gates is None and layer.external_columns is None and not layer.bypass
               for layer in model.moe)  # the gates are unset after decoding, as after a forward
    with pytest.raises(ConfigError, match="cache_implementation"):
        model.generate(input_ids=ids, attention_mask=mask, cache_implementation="paged")


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_static_cache_generation_in_every_family(family, tmp_path):
    """Every supported architecture decodes X-LoRA over static caches (transformers' StaticCache
    for that model) to the tokens of its dynamic caches, left padding included."""
    name = f"tiny-{family}"
    modules = targets(load(name)[0])
    paths = make_adapters(tmp_path, specs=[(2, 4, modules, 1), (4, 16, modules, 2)], model_name=name)
    model = routing(ours(paths, name, depth=2, hidden=16, layerwise=True).eval())
    ids, mask = padded_prompt()
    dynamic = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=8, pad_token_id=0)
    static = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=8, pad_token_id=0,
                            cache_implementation="static", compile=False)
    assert torch.equal(static, dynamic)


def test_only_the_classifier_trains(adapters):
    model = ours(adapters)
    assert not model.training  # follows the base model (eval after loading)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(n.startswith("classifier.") for n in trainable)


def test_choice_scoring_with_both_caches_equals_uncached(adapters):
    """The evaluation's cached choice scoring (context once, cache rows repeated per choice)
    works on X-LoRA's pair of caches: same log-likelihoods as one uncached forward per choice."""
    from loraocean.batching import split_encode
    from loraocean.evaluation import evaluate
    from loraocean.tasks import get_task, load_split, render

    model = ours(adapters, depth=2, hidden=16)
    _, tok = load("tiny-llama")
    spec = get_task("bb_snarks")
    examples = load_split(spec, "dev", limit=3)
    result = evaluate(model, tok, spec, examples, batch_size=4)
    for ex, pred in zip(examples, result.predictions):
        rendered = render(ex, tok)
        want = []
        for choice in rendered.choices:
            ctx, cont = split_encode(tok, rendered.prompt, choice)
            with torch.no_grad():
                logp = model(input_ids=torch.tensor([ctx + cont], device=DEVICE)).logits.log_softmax(-1)[0]
            want.append(sum(logp[len(ctx) - 1 + i, t].item() for i, t in enumerate(cont)))
        assert pred["logprobs"] == pytest.approx(want, abs=1e-4)


def test_generation_ends_rows_at_stop_strings(adapters):
    """With stop_strings (as transformers' generate takes them) a row ends once its decoded
    continuation holds one; the other rows go on exactly as without them."""
    from loraocean.errors import ConfigError

    model = ours(adapters, depth=2, hidden=16).eval()
    _, tok = load("tiny-llama")
    ids, mask = padded_prompt()
    full = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=10, pad_token_id=0)
    stop = tok.decode(full[0, 6:10], skip_special_tokens=True)  # row 0's first four new tokens
    assert stop.strip() and stop not in tok.decode(full[1, 6:], skip_special_tokens=True)
    got = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=10, pad_token_id=0,
                         stop_strings=[stop], tokenizer=tok)
    assert torch.equal(got[0, :10], full[0, :10]) and bool((got[0, 10:] == 0).all())
    assert torch.equal(got[1], full[1])
    alone = model.generate(input_ids=ids[:1], attention_mask=mask[:1], max_new_tokens=10, pad_token_id=0,
                           stop_strings=stop, tokenizer=tok)
    assert torch.equal(alone, full[:1, :10])  # decoding ended after the fourth token
    with pytest.raises(ConfigError, match="tokenizer"):
        model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=2, stop_strings=[stop])


def test_generation_tasks_pass_stop_strings_to_xlora(adapters, monkeypatch):
    """The evaluation's generate step hands its stop strings to an X-LoRA model (an MoE model
    counts as a transformers model through get_base_model) and gets the same texts as without."""
    from loraocean.evaluation.generate import generate_texts
    from loraocean.moe.methods.xlora import XLoRAModel

    model = ours(adapters, depth=2, hidden=16).eval()
    _, tok = load("tiny-llama")
    prompts = ["the cat sat", "a b c d e"]
    plain = generate_texts(model, tok, prompts, max_new_tokens=8)
    stop = plain[0][len(plain[0]) // 2:][:3]
    assert stop.strip()
    seen = {}
    original = XLoRAModel.generate

    def spy(self, *args, **kwargs):
        seen.update(kwargs)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(XLoRAModel, "generate", spy)
    cut = generate_texts(model, tok, prompts, max_new_tokens=8, stop=[stop])
    assert seen.get("stop_strings") == [stop] and seen.get("tokenizer") is tok
    assert cut == [t[:t.index(stop)] if stop in t else t for t in plain]


@pytest.mark.parametrize("layerwise", [False, True])
def test_layers_share_per_column_factors_and_logits_do_not_change(adapters, layerwise):
    """Pass 2 computes each distinct (gates, ranks, scalings) column factor once: shared gates give
    one tensor per layer signature for the whole model, layerwise gates one per layer. The logits
    are exactly those of every layer computing its own factors."""
    model = routing(ours(adapters, depth=1, layerwise=layerwise).eval())
    seen = []
    hooks = [layer.register_forward_pre_hook(lambda layer, args: seen.append(layer.external_columns))
             for layer in model.moe]
    ids = torch.randint(0, 250, (2, 7), generator=torch.Generator().manual_seed(0)).to(DEVICE)
    with torch.no_grad():
        shared = model(input_ids=ids).logits
    pass_2 = [c for c in seen if c is not None]
    assert len(pass_2) == len(model.moe)
    signatures = {layer.signature() for layer in model.moe}
    assert len({id(c) for c in pass_2}) == (len(model.moe) if layerwise else len(signatures))
    assert len(signatures) < len(model.moe)  # the fixture's layers do share signatures
    for h in hooks:
        h.remove()

    def own_factors(layer, args):
        layer.external_columns = None
    hooks = [layer.register_forward_pre_hook(own_factors) for layer in model.moe]
    with torch.no_grad():
        alone = model(input_ids=ids).logits
    for h in hooks:
        h.remove()
    assert torch.equal(shared, alone)
