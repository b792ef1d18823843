"""MoE overhead, as ratios measured in one process (never asserted; run: python bench/moe_overhead.py).

1. LoRAMoE (E=8, r=4, FFN, dense routers) training step / one LoRA (r=4, same FFN modules, PEFT)
   training step, on the embedded SmolLM2-135M (goal <= 1.5); and beside it the same ratio for
   MixLoRA, MoLA and HydraLoRA at their reference defaults (fresh experts), each against one PEFT
   LoRA on the modules it adapts with its rank, and each ratio over LoRAMoE's (goal <= 1.5). All
   steps of part 1 run in turns (one step of each per round) on copies of the model.
2. The stacked multi-expert Linear vs a per-expert loop of the same maths (r=4 and r=8), forward+backward on one
   SmolLM2-sized MLP projection, for each way gates arise in a step (GATE_CASES) (goal >= 3x).
3. X-LoRA greedy generation of 64 tokens: ours (one KV cache per pass) vs PEFT XLoraModel.generate
   (no cache), same output tokens (goal >= 5x); and ours with static caches and (on CUDA, or with
   --compile yes) the per-token step captured by torch.compile, against one plain cached decode of
   the base (goal <= 2.5x on a GPU).

Options: --model NAME (default smollm2-135m) or --shape tiny|llama-1b|llama-8b, --device cpu|cuda,
--length L (tokens per row of the 8-row training batch, default 128; the GPU goal is stated at 512),
--layer smollm2|llama-8b (the projection of part 2; llama-8b is Llama-3-8B's MLP up-projection,
4096 -> 14336 over 8192 tokens, r=8 only, too large for a CPU), --quick (fewer repeats),
--skip-xlora, --skip-layer, --train-methods a,b (default loramoe,mixlora,mola,hydralora), --compile auto|yes|no,
--threads N. On CUDA each timed call is synchronised and the layer runs in bf16.
Each figure is printed as wall-clock and as CPU time of this process (steadier when the machine
is shared with other jobs).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from _common import add_device_args, model_from_args, synchronize
from loraocean import models
from loraocean.batching import pad_batch, Encoded
from loraocean.moe import get_method, load_adapter
from loraocean.moe.layer import MoELinear, SoftmaxRouter


DEVICE = "cpu"  # where the layer bench's tensors live; main() sets the models' device


class Time(float):
    """A wall-clock median that also carries the median CPU time of this process (`.cpu`):
    on a machine shared with other jobs, the CPU-time ratio is the steadier of the two."""

    cpu: float


def timed(fn, repeats: int, warmup: int = 1) -> Time:
    return timed_interleaved([fn], repeats, warmup)[0]


def timed_interleaved(fns: list, repeats: int, warmup: int = 1) -> list[Time]:
    """Median wall and CPU time of each function, run in turns (one call of each per round), so
    that all of them see the same machine and allocator state rather than one after the other."""
    for _ in range(warmup):
        for fn in fns:
            fn()
    wall, cpu = [[] for _ in fns], [[] for _ in fns]
    for _ in range(repeats):
        for i, fn in enumerate(fns):
            synchronize(DEVICE)
            start, start_cpu = time.perf_counter(), time.process_time()
            fn()
            synchronize(DEVICE)
            wall[i].append(time.perf_counter() - start)
            cpu[i].append(time.process_time() - start_cpu)
    out = []
    for w, c in zip(wall, cpu):
        t = Time(statistics.median(w))
        t.cpu = statistics.median(c)
        out.append(t)
    return out


def once(fn) -> Time:
    return timed(fn, 1, warmup=0)


def batch(vocab: int, n: int = 8, length: int = 128) -> dict:
    g = torch.Generator().manual_seed(0)
    items = [Encoded(ids := torch.randint(0, vocab, (length,), generator=g).tolist(), ids) for _ in range(n)]
    return {k: v.to(DEVICE) for k, v in pad_batch(items, 0).items()}


def train_step_fn(model, data, aux=None):
    """forward, backward and an AdamW step (what `loraocean.trainer.train` does per step)."""
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4)

    def step():
        loss = model(**data).loss
        extra = aux() if aux is not None else None  # the method's balance loss, as in training
        if extra is not None:
            loss = loss + extra
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return step


# Method -> (its options: the reference defaults, fresh experts; the part of the model it adapts;
# its rank): the baseline of each is one PEFT LoRA (dropout 0.05) on that part with that rank.
TRAIN_CASES = {"loramoe": ({"n_experts": 8, "r": 4}, "mlp", 4),
               "mixlora": ({"init": "fresh"}, "all", 8),       # E=8, top-2, r=8, MLP experts + attention LoRA
               "mola": ({"init": "fresh"}, "all", 8),          # 2-4-6-8 experts, top-2, r=8, every projection
               "hydralora": ({"init": "fresh"}, "mlp", 4)}     # 4 heads over one A, r=4, MLP projections


def bench_training(name: str, repeats: int, length: int = 128,
                   methods: tuple[str, ...] = tuple(TRAIN_CASES)) -> dict[str, tuple[Time, Time]]:
    """{method: (its step, the step of its baseline LoRA)}, every step timed in turns."""
    from peft import LoraConfig, get_peft_model

    data = None
    steps: dict[str, object] = {}
    for part, r in sorted({TRAIN_CASES[m][1:] for m in methods}):
        base, _ = models.load(name)
        data = data if data is not None else batch(base.config.vocab_size, length=length)
        single = get_peft_model(base, LoraConfig(r=r, lora_alpha=32 if r == 4 else 16, lora_dropout=0.05,
                                                 target_modules=models.targets(base, part)))
        single.train()
        steps[f"lora-{part}-{r}"] = train_step_fn(single, data)
    for method_name in methods:
        options = TRAIN_CASES[method_name][0]
        base, tok = models.load(name)
        method = get_method(method_name)
        cfg = method.make_config(options)
        experts = method.prepare(base, tok, [], cfg, None) if method.prepare is not None else []
        moe = method.build(base, experts, cfg)
        moe.train()
        aux = (lambda moe=moe, cfg=cfg, method=method: method.aux_loss(moe, cfg)) if method.aux_loss else None
        steps[method_name] = train_step_fn(moe, data, aux=aux)
    times = dict(zip(steps, timed_interleaved(list(steps.values()), repeats)))
    return {m: (times[m], times["lora-{}-{}".format(*TRAIN_CASES[m][1:])]) for m in methods}


class LoopMoE(nn.Module):
    """The same maths with one (A_e, B_e) pair per expert and a Python loop (the baseline), written
    as LoRAMoE's reference layer is: each expert's output scaled by its gate and added."""

    def __init__(self, base, As, Bs, scales):
        super().__init__()
        self.base = base
        self.A = nn.ParameterList([nn.Parameter(a.clone()) for a in As])
        self.B = nn.ParameterList([nn.Parameter(b.clone()) for b in Bs])
        self.scales = scales

    def forward(self, x, gates):
        y = self.base(x)
        for e, (A, B) in enumerate(zip(self.A, self.B)):
            y = y + gates[..., e:e + 1] * self.scales[e] * ((x @ A.T) @ B.T)
        return y


# How the gates arise in a training step, and who trains: LoRAMoE and Rocket train a router and
# the experts; X-LoRA, MoLE and Rocket's router-only option train the gates over frozen experts
# (the loop then does the least extra work, so stacking gains least); fixed gates with trained
# experts is no method's step (no gate gradient, which the loop pays once per expert on
# output-sized tensors).
GATE_CASES = {"router+experts": (True, True), "router, frozen experts": (True, False),
              "fixed gates": (False, True)}


# One MLP projection, as (d_in, d_out, tokens): SmolLM2-135M's over a batch of 8 x 256, and
# Llama-3-8B's up-projection over 8192 tokens (the GPU goal: stacked <= 1.2x the base product).
LAYERS = {"smollm2": (576, 1536, 2048), "llama-8b": (4096, 14336, 8192)}
N_EXP = 8


def extra_work(r: int, case: str, layer: str = "smollm2") -> float:
    """Multiply-adds of the experts (and router) over those of the frozen base product, forward +
    backward: what no implementation of the maths avoids. At the base product's FLOP rate the
    stacked layer costs (1 + this) x base, so loop / stacked <= (loop / base) / (1 + this)."""
    routed, train_experts = GATE_CASES[case]
    rank_sum = N_EXP * r
    d_in, d_out, _ = LAYERS[layer]
    base = 2 * d_in * d_out                                   # y = W0 x, and dx = W0^T dy
    experts = 2 * rank_sum * (d_in + d_out)                   # h = A x, y += B h; dh, dx += A^T dh
    experts += rank_sum * (d_in + d_out) if train_experts else 0  # dA, dB
    router = 3 * N_EXP * d_in if routed else 0                # logits, dx, dW_g
    return (experts + router) / base


def bench_layer(repeats: int, r: int, case: str, layer: str = "smollm2") -> tuple[Time, Time, Time]:
    """forward + backward of one layer, the output gradient a dense tensor as inside a network.
    A GPU runs it in bf16 (the dtype of a model there), a CPU in float32; the router computes its
    softmax in float32 in both implementations."""
    torch.manual_seed(0)
    (d_in, d_out, tokens), n_exp = LAYERS[layer], N_EXP
    routed, train_experts = GATE_CASES[case]
    dtype = torch.bfloat16 if str(DEVICE).startswith("cuda") else torch.float32
    kw = dict(device=DEVICE, dtype=dtype)
    base = nn.Linear(d_in, d_out, bias=False, **kw)
    As = [torch.randn(r, d_in, **kw) * 0.02 for _ in range(n_exp)]
    Bs = [torch.randn(d_out, r, **kw) * 0.02 for _ in range(n_exp)]
    scales = [2.0] * n_exp
    stacked = MoELinear(base, As, Bs, scales)
    loop = LoopMoE(base, As, Bs, scales)
    for p in (stacked.lora_A, stacked.lora_B, *loop.A, *loop.B):
        p.requires_grad_(train_experts)
    x = torch.randn(tokens, d_in, **kw, requires_grad=True)
    grad = torch.randn(tokens, d_out, **kw)
    if routed:  # LoRAMoE's router: softmax(W_g x), W_g trained; the same weights in both
        stacked.router = SoftmaxRouter(d_in, n_exp).to(DEVICE)
        w_g = nn.Parameter(stacked.router.weight.detach().clone())
        loop_gates = lambda: F.linear(x.float(), w_g).softmax(-1).to(dtype)  # noqa: E731
    else:
        stacked.external_gates = fixed = torch.rand(tokens, n_exp, device=DEVICE).softmax(-1)
        loop_gates = lambda: fixed.to(dtype)  # noqa: E731
    with torch.no_grad():
        tol = 1e-4 if dtype == torch.float32 else 3e-2
        assert torch.allclose(stacked(x), loop(x, loop_gates()), atol=tol, rtol=tol)

    def run_stacked():
        stacked(x).backward(grad)

    def run_loop():
        loop(x, loop_gates()).backward(grad)

    def run_base():
        base(x).backward(grad)

    return tuple(timed_interleaved([run_stacked, run_loop, run_base], repeats))


def make_adapters(name: str, root: Path, n: int = 3) -> list[Path]:
    from peft import LoraConfig, get_peft_model

    from loraocean.library.card import write_card

    paths = []
    for i in range(n):
        base, _ = models.load(name)
        torch.manual_seed(i)
        peft_model = get_peft_model(base, LoraConfig(r=8, lora_alpha=16, init_lora_weights=False,
                                                     target_modules=models.targets(base, "all")))
        paths.append(root / f"a{i}")
        peft_model.save_pretrained(paths[-1])
        write_card(paths[-1], {"model": name, "task": f"bench{i}"})  # sealed, as library adapters are
    return paths


def prompts(tok) -> dict[str, str]:
    """A short question, and a real generation-task prompt (a GSM8K test question as the
    evaluation renders it) as used in generation-mode evaluation."""
    from loraocean.tasks import load_split, render

    gsm8k = load_split("gsm8k", "test", limit=1)[0]
    return {"short": "Question: Which planet is known as the red planet? Explain briefly.\nAnswer:",
            "gsm8k": render(gsm8k, tok).prompt}


def bench_xlora(name: str, new_tokens: int = 64, compile: bool | None = None) -> list[dict]:
    """Per prompt: ours with dynamic caches, ours with static caches (captured when `compile`;
    default: on CUDA), PEFT's XLoraModel.generate, and one plain cached decode of the base."""
    from peft import XLoraConfig, get_peft_model

    with tempfile.TemporaryDirectory() as tmp:
        paths = make_adapters(name, Path(tmp))
        base, tok = models.load(name)
        method = get_method("xlora")
        ours = method.build(base, [load_adapter(p) for p in paths], method.make_config({"depth": 2, "hidden": 64}))
        ref_base, _ = models.load(name)
        ref_base.config.use_cache = False
        ref = get_peft_model(ref_base, XLoraConfig(task_type="CAUSAL_LM", hidden_size=ref_base.config.hidden_size,
                                                   adapters={str(i): str(p) for i, p in enumerate(paths)},
                                                   xlora_depth=2, xlora_size=64))
        ref.base_model.internal_xlora_classifier.layers.load_state_dict(ours.classifier.state_dict())
        ref.eval()
        # No end-of-sequence stop: both produce exactly `new_tokens` tokens (same amount of work).
        ref_base.generation_config.eos_token_id = None
        rows = []
        plain, _ = models.load(name)
        plain.generation_config.eos_token_id = None
        for label, text in prompts(tok).items():
            prompt = tok(text, return_tensors="pt", add_special_tokens=False).to(DEVICE)
            kw = dict(input_ids=prompt.input_ids, attention_mask=prompt.attention_mask,
                      max_new_tokens=new_tokens, do_sample=False, pad_token_id=tok.pad_token_id)
            static = dict(kw, cache_implementation="static", compile=compile)
            out = {}
            t_ours = once(lambda: out.update(ours=ours.generate(**kw)))
            t_warm = once(lambda: ours.generate(**static))  # the caches; the captured step's compilation
            t_static = once(lambda: out.update(static=ours.generate(**static)))
            with torch.no_grad():
                t_ref = once(lambda: out.update(ref=ref.generate(**kw)))
            # One plain cached decode of the base model: X-LoRA runs two such passes per token, and
            # at batch 1 on CPU each pass is bound by reading the weights, so 2x this is the floor.
            with torch.no_grad():
                t_plain = once(lambda: plain.generate(**kw))
            got, want = out["ours"], out["ref"]
            n_prompt = prompt.input_ids.shape[1]
            rows.append(dict(label=label, n_prompt=n_prompt, n_new=got.shape[1] - n_prompt, ours=t_ours,
                             ref=t_ref, plain=t_plain, static=t_static, warm=t_warm,
                             same=got.shape == want.shape and torch.equal(got, want),
                             same_static=torch.equal(out["static"], got)))
        return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--skip-xlora", action="store_true")
    parser.add_argument("--skip-layer", action="store_true", help="skip part 2 (the layer against a loop)")
    parser.add_argument("--train-methods", default=",".join(TRAIN_CASES),
                        help="methods of part 1, comma-separated (their ratio is printed over LoRAMoE's)")
    parser.add_argument("--compile", choices=("auto", "yes", "no"), default="auto",
                        help="capture X-LoRA's static-cache decoding step (auto: on CUDA)")
    parser.add_argument("--length", type=int, default=128, help="tokens per row of the training batch")
    parser.add_argument("--layer", choices=sorted(LAYERS), default="smollm2", help="the projection of [layer]")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    add_device_args(parser)
    args = parser.parse_args()
    args.model = model_from_args(args)
    global DEVICE
    DEVICE = models.default_device()
    if args.threads:
        torch.set_num_threads(args.threads)
    repeats = 2 if args.quick else 5
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, model {args.model} on {DEVICE}, "
          f"load average {' '.join(f'{x:.1f}' for x in __import__('os').getloadavg())}")

    # r=4 is LoRAMoE's reference default (as in [train] below); r=8 a common library rank.
    d_in, d_out, tokens = LAYERS[args.layer]
    if not args.skip_layer:
        print(f"[layer] one {args.layer} MLP projection ({tokens} tokens, {d_in}->{d_out}, E={N_EXP}), "
              "forward+backward; goals: per-expert loop / stacked >= 3, stacked / base <= 1.2 (GPU, llama-8b)")
    for case in GATE_CASES if not args.skip_layer else ():
        for r in ((4, 8) if args.layer == "smollm2" else (8,)):
            t_stacked, t_loop, t_base = bench_layer(repeats * 4, r, case, args.layer)
            # The frozen W0 x product is the same in both; the experts' part is what stacking changes.
            extra = extra_work(r, case, args.layer)
            print(f"[layer] {case}, r={r}: base {t_base * 1e3:.1f} ms, stacked {t_stacked * 1e3:.1f} ms, "
                  f"loop {t_loop * 1e3:.1f} ms; stacked / base = {t_stacked / t_base:.2f}x wall; "
                  f"loop / stacked = {t_loop / t_stacked:.2f}x wall "
                  f"({t_loop.cpu / t_stacked.cpu:.2f}x CPU); experts' part alone "
                  f"{(t_loop - t_base) / (t_stacked - t_base):.1f}x; bound: {t_loop / t_base:.2f}x if the "
                  f"experts cost nothing, {t_loop / t_base / (1 + extra):.2f}x if they ran at "
                  f"the base product's FLOP rate (+{100 * extra:.0f}% work)")

    methods = tuple(m.strip() for m in args.train_methods.split(",") if m.strip())
    trained = bench_training(args.model, repeats, args.length, tuple(dict.fromkeys(("loramoe",) + methods)))
    t_moe, t_single = trained["loramoe"]
    print(f"[train] batch 8x{args.length}: LoRAMoE E=8 step {t_moe:.2f} s, single LoRA step {t_single:.2f} s; "
          f"ratio {t_moe / t_single:.2f} wall, {t_moe.cpu / t_single.cpu:.2f} CPU time "
          "(goals: <= 1.5 on the embedded model; <= 1.15 on a GPU at the 1B shape, 8 x 512)")
    for m in methods:
        if m == "loramoe":
            continue
        t_m, t_base = trained[m]
        _, part, r = TRAIN_CASES[m]
        print(f"[train] {m} (reference defaults) step {t_m:.2f} s, one LoRA on the {part} projections r={r} "
              f"{t_base:.2f} s; ratio {t_m / t_base:.2f} wall, {t_m.cpu / t_base.cpu:.2f} CPU time; over LoRAMoE's "
              f"ratio {(t_m / t_base) / (t_moe / t_single):.2f} wall, "
              f"{(t_m.cpu / t_base.cpu) / (t_moe.cpu / t_single.cpu):.2f} CPU time (goal <= 1.5)")

    if not args.skip_xlora:
        compile = {"auto": DEVICE.startswith("cuda"), "yes": True, "no": False}[args.compile]
        for row in bench_xlora(args.model, compile=compile):
            t_ours, t_ref, t_plain, t_static = row["ours"], row["ref"], row["plain"], row["static"]
            print(f"[xlora] greedy generation, {row['label']} prompt ({row['n_prompt']} tokens), {row['n_new']} "
                  f"new tokens: ours {t_ours:.2f} s, PEFT XLoraModel.generate {t_ref:.2f} s; speed-up "
                  f"{t_ref / t_ours:.1f}x wall, {t_ref.cpu / t_ours.cpu:.1f}x CPU time (goal >= 5), same tokens: "
                  f"{row['same']}; floor (2 plain cached base decodes, {2 * t_plain:.2f} s) caps it at "
                  f"{t_ref / (2 * t_plain):.1f}x; ours / one plain cached decode = {t_ours / t_plain:.2f}x")
            print(f"[xlora] static caches{', captured step' if compile else ''}, {row['label']} prompt: "
                  f"{t_static:.2f} s (first call {row['warm']:.1f} s), same tokens as the dynamic caches: "
                  f"{row['same_static']}; static / dynamic = {t_static / t_ours:.2f}x; static / one plain "
                  f"cached decode = {t_static / t_plain:.2f}x (goal <= 2.5 on a GPU)")

if __name__ == "__main__":
    main()
