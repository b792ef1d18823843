"""Expert selection: ppl against a hand computation, random reproducibility, candidates, the saved
Selection, and the CLI's errors and `--strategy all` table."""

from __future__ import annotations

import json
import math

import pytest
import torch

from conftest import DEVICE
from loraocean.errors import LoraOceanError
from loraocean.selection import ModelRef, Selection, overlap, select
from loraocean.library.card import write_card

TARGET = "bb_intent_recognition"
OTHERS = ["bb_snarks", "bb_emoji_movie", "bb_social_iqa", "bb_winowhy", "bb_ruin_names"]


def make_lora(model, folder, task, seed, r=4, model_name="tiny-llama"):
    """A random PEFT LoRA (A and B both random, so it changes the outputs) + a library card."""
    from peft import LoraConfig, get_peft_model

    from loraocean.models import targets

    torch.manual_seed(seed)
    config = LoraConfig(r=r, lora_alpha=2 * r, target_modules=targets(model), init_lora_weights=False)
    peft = get_peft_model(model, config)
    with torch.no_grad():
        for name, p in peft.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.2)
    peft.save_pretrained(folder)
    peft.unload()
    write_card(folder, {"model": model_name, "task": task})


@pytest.fixture(scope="module")
def library(tmp_path_factory, tiny_llama):
    model, _ = tiny_llama
    root = tmp_path_factory.mktemp("lib")
    for i, task in enumerate([TARGET] + OTHERS):
        make_lora(model, root / "tiny-llama" / task, task, seed=i, r=2 if task == "bb_winowhy" else 4)
    return root


def hand_ppl(model, tokenizer, folder, examples):
    """Rocket's reference reasoning perplexity, one unpadded example at a time with PEFT's own
    loader and the model's own loss: per example exp(mean CE over the output tokens and the end
    token, prompt labels -100), then the mean over the examples."""
    from peft import PeftModel

    from loraocean.tasks import render
    from loraocean.tasks.prompts import end_of_answer

    peft = PeftModel.from_pretrained(model, str(folder))
    per_example = []
    with torch.no_grad():
        for ex in examples:
            r = render(ex, tokenizer)
            prompt = tokenizer(r.prompt, add_special_tokens=False).input_ids
            answer = tokenizer(r.target + end_of_answer(tokenizer), add_special_tokens=False).input_ids
            ids = torch.tensor([prompt + answer], device=DEVICE)
            labels = torch.tensor([[-100] * len(prompt) + answer], device=DEVICE)
            logits = peft(input_ids=ids).logits.double()
            loss = torch.nn.functional.cross_entropy(logits[0, :-1], labels[0, 1:], ignore_index=-100)
            per_example.append(math.exp(float(loss)))
    peft.unload()
    return sum(per_example) / len(per_example)


@pytest.mark.parametrize("swap", ["merge", "peft"])
@pytest.mark.min_versions
def test_ppl_equals_hand_computation(library, tiny_llama, swap):
    from loraocean.tasks import data_hash, load_split

    model, tokenizer = tiny_llama
    probe = torch.tensor([[5, 6, 7, 8]], device=DEVICE)
    with torch.no_grad():
        before = model(input_ids=probe).logits.clone()
    sel = select(TARGET, library, ModelRef.of(model, tokenizer), k=3, strategy="ppl", shots=6, seed=1,
                 swap=swap)
    examples = load_split(TARGET, "train", limit=6, seed=1)
    assert sel.data_hash == data_hash(examples) and sel.shots == 6
    assert TARGET not in [c.task for c in sel.ranking]          # own LoRA excluded by default
    assert sorted(c.task for c in sel.ranking) == sorted(OTHERS)
    for choice in sel.ranking:
        expected = hand_ppl(model, tokenizer, library / "tiny-llama" / choice.task, examples)
        assert choice.score == pytest.approx(expected, rel=2e-6), choice.task
    scores = [c.score for c in sel.ranking]
    assert scores == sorted(scores) and len(set(scores)) == len(scores)
    assert sel.chosen == [c.task for c in sel.ranking[:3]]
    # the base model comes back without LoRA layers and with its own outputs
    with torch.no_grad():
        assert torch.equal(model(input_ids=probe).logits, before)
    assert not any("lora" in n for n, _ in model.named_modules())
    # the scorer behind ppl (evaluation.answer_nll, also behind target_logprobs) on the base model,
    # with and without the shared-prefix cache, against the unbatched hand computation
    from loraocean.batching import encode
    from loraocean.evaluation.answer_nll import answer_nll, prepare, shared_prefix

    encoded = [encode(ex, tokenizer, add_eos=False) for ex in examples]
    assert shared_prefix(encoded) > 20  # the task instruction is shared: its cache is reused
    assert prepare(encoded, 0, 4).prefix == encoded[0].input_ids[:shared_prefix(encoded)]
    expected = []
    with torch.no_grad():
        for e in encoded:
            logp = torch.log_softmax(model(input_ids=torch.tensor([e.input_ids], device=DEVICE)).logits[0].double(), -1)
            answer = [j for j, x in enumerate(e.labels) if x >= 0]
            expected.append((-sum(float(logp[j - 1, e.input_ids[j]]) for j in answer), len(answer)))
    for share in (True, False):
        mine = answer_nll(model, tokenizer, examples, batch_size=4, share_prefix=share)
        for (nll, n), (want, m) in zip(mine, expected):
            assert n == m and nll == pytest.approx(want, rel=1e-5)


def test_include_target_and_save_roundtrip(library, tiny_llama, tmp_path):
    model, tokenizer = tiny_llama
    ref = ModelRef.of(model, tokenizer)
    sel = select(TARGET, library, ref, k=2, strategy="random", seed=3, include_target=True)
    assert TARGET in [c.task for c in sel.ranking] and len(sel.ranking) == 6
    path = sel.save(tmp_path / "sel.json")
    back = Selection.load(path)
    assert back.chosen == sel.chosen and back.seed == 3 and back.strategy == "random"
    assert json.loads(path.read_text())["chosen"] == sel.chosen
    assert back.options["include_target"] is True


def test_random_reproducible_and_seed_dependent(library, tiny_llama):
    ref = ModelRef.of(*tiny_llama)
    orders = {seed: [c.task for c in select(TARGET, library, ref, k=2, strategy="random", seed=seed).ranking]
              for seed in (0, 1, 2)}
    again = [c.task for c in select(TARGET, library, ref, k=2, strategy="random", seed=0).ranking]
    assert orders[0] == again
    assert len({tuple(o) for o in orders.values()}) == 3
    assert all(sorted(o) == sorted(OTHERS) for o in orders.values())


def test_bad_input_errors(library, tiny_llama, tmp_path):
    ref = ModelRef.of(*tiny_llama)
    with pytest.raises(LoraOceanError, match="unknown selection strategy 'pll'"):
        select(TARGET, library, ref, k=2, strategy="pll")
    with pytest.raises(LoraOceanError, match="larger than the 5 candidate"):
        select(TARGET, library, ref, k=6, strategy="random")
    with pytest.raises(LoraOceanError, match="no adapters for model 'tiny-gpt2'"):
        select(TARGET, library, "tiny-gpt2", k=2, strategy="random")
    with pytest.raises(LoraOceanError, match="unknown task"):
        select("bb_no_such_task", library, ref, k=2, strategy="random")


def test_overlap_counts_shared_experts():
    def sel(name, tasks):
        from loraocean.selection import Choice

        return Selection(name, "t", "m", 3, 0, 0, "", [Choice(t, 0.0, "") for t in tasks], True)

    got = overlap({"a": sel("a", ["x", "y", "z"]), "b": sel("b", ["y", "x", "q"]), "c": sel("c", ["q", "z"])})
    assert got == {("a", "b"): 2, ("a", "c"): 1, ("b", "c"): 1}


def test_cli_errors_exit_2(library, capsys, tmp_path):
    from loraocean.cli import main

    bad_map = tmp_path / "map.yaml"
    bad_map.write_text(f"{TARGET}:\n  bb_snarks: fine\n  not_a_task: made up\n")
    cases = [
        (["--strategy", "nope"], "unknown selection strategy"),
        (["--k", "9"], "larger than the 5 candidate"),
        (["--strategy", "manual", "--map", str(bad_map)], "'not_a_task' (line 3"),
        (["--model", "tiny-gpt2"], "no adapters for model"),
    ]
    for extra, message in cases:
        argv = ["select", "--target", TARGET, "--model", "tiny-llama", "--library", str(library),
                "--k", "2", "--strategy", "random", *extra]
        with pytest.raises(SystemExit) as exit_info:
            main(argv)
        err = capsys.readouterr().err
        assert exit_info.value.code == 2, err
        assert message in err and err.count("\n") == 1 and "Traceback" not in err


def test_cli_all_strategies_side_by_side(library, capsys, tmp_path):
    from loraocean.cli import main

    out_json = tmp_path / "all.json"
    with pytest.raises(SystemExit) as exit_info:  # typer's standalone mode always exits
        main(["select", "--target", TARGET, "--model", "tiny-llama", "--library", str(library), "--k", "2",
              "--strategy", "all", "--shots", "4", "--dev-limit", "4", "--json", str(out_json),
              "--against-oracle"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for name in ("manual", "random", "embedding", "ppl", "diversity", "rocket", "oracle"):
        assert name in text
    assert "overlap" in text and "uses target labels" in text and "against the oracle" in text
    saved = json.loads(out_json.read_text())
    assert set(saved["selections"]) == {"manual", "random", "embedding", "ppl", "diversity", "rocket", "oracle"}
    from loraocean.selection.oracle import against_oracle

    oracle = Selection.from_dict(saved["selections"]["oracle"])
    scored = {r["strategy"]: r for r in saved["against_oracle"]}
    assert set(scored) == set(saved["selections"]) - {"oracle"}
    for name, row in scored.items():
        want = against_oracle(Selection.from_dict(saved["selections"][name]), oracle)
        assert row["chosen"] == want["chosen"] == saved["selections"][name]["chosen"]
        for key in ("regret", "precision_at_k", "spearman", "kendall"):
            assert row[key] == (None if want[key] is None else pytest.approx(want[key]))
    assert saved["selections"]["oracle"]["uses_target_labels"] is True
    # of these candidates the shipped map relates only bb_snarks to intent recognition
    assert saved["selections"]["manual"]["chosen"][0] == "bb_snarks"
    ppl = Selection.from_dict(saved["selections"]["ppl"])
    assert ppl.chosen == select(TARGET, library, "tiny-llama", k=2, strategy="ppl", shots=4).chosen


def test_tasks_sharing_the_targets_data_are_excluded_like_its_own_lora(tiny_llama, tmp_path):
    """BIG-bench's social_iqa is drawn from Social IQa (catalog task siqa): a siqa LoRA has seen
    bb_social_iqa's questions, so it is no cross-task expert for it (and vice versa)."""
    from loraocean.selection.candidates import candidates
    from loraocean.tasks import same_data

    model, _ = tiny_llama
    for i, task in enumerate(["bb_social_iqa", "siqa", "bb_snarks"]):
        make_lora(model, tmp_path / "tiny-llama" / task, task, seed=i)
    assert same_data("bb_social_iqa") == {"siqa"} and same_data("siqa") == {"bb_social_iqa"}
    assert same_data("bb_snarks") == set()
    assert [e.task for e in candidates(tmp_path, "tiny-llama", "bb_social_iqa")] == ["bb_snarks"]
    assert [e.task for e in candidates(tmp_path, "tiny-llama", "siqa")] == ["bb_snarks"]
    assert [e.task for e in candidates(tmp_path, "tiny-llama", "bb_snarks")] == ["bb_social_iqa", "siqa"]
    everything = candidates(tmp_path, "tiny-llama", "bb_social_iqa", include_target=True)
    assert [e.task for e in everything] == ["bb_snarks", "bb_social_iqa", "siqa"]
