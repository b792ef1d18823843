"""Choice scoring speed: our shared-prefix scorer vs lm-eval's HFLM, same model, adapter and task.

    python bench/eval_speed.py [--model smollm2-135m] [--task bb_intent_recognition] [--split test]
                               [--limit N] [--adapter DIR] [--batch-size 16] [--device D] [--shape S]

Both score every (context, choice) pair of the split's examples in the lm-eval convention (sum of
the choice's token log-probabilities): ours with `loraocean.evaluation.evaluate` (one context pass
per question, choices continue from its KV cache), lm-eval with `HFLM.loglikelihood` over the same
requests (one full sequence per pair; lm-eval's own batching and sorting), after a short warm-up
of each. Checks that the per-example predictions are identical and prints wall-clock and
process-CPU times and their ratios (CPU time is less disturbed by other processes on a shared
machine). Never asserts on time. `--batch-size` is questions per pass for ours and sequences per
pass for HFLM.
"""

from __future__ import annotations

import argparse
import sys

from _common import Clock, add_device_args, model_from_args, use_shared_bigbench


def hflm_predictions(hflm, examples, tokenizer):
    from lm_eval.api.instance import Instance

    from loraocean.tasks import render

    requests, owner = [], []
    for i, ex in enumerate(examples):
        r = render(ex, tokenizer)
        for c in r.choices:
            requests.append(Instance(request_type="loglikelihood", doc={}, arguments=(r.prompt, c),
                                     idx=len(owner)))
            owner.append(i)
    results = hflm.loglikelihood(requests, disable_tqdm=True)
    lls = [[] for _ in examples]
    for i, (ll, _) in zip(owner, results):
        lls[i].append(ll)
    return [max(range(len(x)), key=lambda k: (x[k], -k)) for x in lls], lls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--task", default="bb_intent_recognition")
    parser.add_argument("--split", default="test")
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--adapter", default=None)
    parser.add_argument("--batch-size", type=int, default=16)
    add_device_args(parser)
    args = parser.parse_args()
    args.model = model_from_args(args)
    use_shared_bigbench()

    import torch
    from lm_eval.models.huggingface import HFLM

    from loraocean.checkpoints import attach
    from loraocean.evaluation import evaluate
    from loraocean.models import load
    from loraocean.tasks import get_task, load_split

    torch.manual_seed(0)
    model, tokenizer = load(args.model)
    if args.adapter:
        model = attach(model, args.adapter)
    spec = get_task(args.task)
    examples = load_split(spec, args.split, limit=args.limit)
    hflm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=args.batch_size)
    n_pairs = sum(len(ex.choices) for ex in examples)
    print(f"{args.model}{' + ' + args.adapter if args.adapter else ''} on {spec.name} {args.split}: "
          f"{len(examples)} examples, {n_pairs} (context, choice) pairs, torch threads "
          f"{torch.get_num_threads()}")

    evaluate(model, tokenizer, spec, examples[:4], batch_size=args.batch_size)  # warm-up
    hflm_predictions(hflm, examples[:4], tokenizer)
    with Clock(model.device) as ours_t:
        ours = evaluate(model, tokenizer, spec, examples, convention="lm-eval", batch_size=args.batch_size)
    with Clock(model.device) as theirs_t:
        preds, lls = hflm_predictions(hflm, examples, tokenizer)
    our_preds = [p["prediction"] for p in ours.predictions]
    same = sum(a == b for a, b in zip(our_preds, preds))
    diff = max(abs(a - b) for p, x in zip(ours.predictions, lls) for a, b in zip(p["logprobs"], x))
    acc_theirs = sum(p == ex.label for p, ex in zip(preds, examples)) / len(examples)
    print(f"identical predictions: {same}/{len(examples)}; max |log-prob difference| {diff:.2e}")
    print(f"accuracy (lm-eval acc): ours {ours.value:.4f}, HFLM {acc_theirs:.4f}")
    print(f"{'':22}{'wall s':>10}{'cpu s':>10}")
    print(f"{'HFLM (baseline)':22}{theirs_t.wall:>10.2f}{theirs_t.cpu:>10.2f}")
    print(f"{'loraocean scorer':22}{ours_t.wall:>10.2f}{ours_t.cpu:>10.2f}")
    print(f"speed-up: {theirs_t.wall / ours_t.wall:.2f}x wall, {theirs_t.cpu / ours_t.cpu:.2f}x cpu; "
          f"peak memory ours {ours_t.peak_mib:.0f} MiB, HFLM {theirs_t.peak_mib:.0f} MiB")
    if same != len(examples):
        sys.exit(1)


if __name__ == "__main__":
    main()
