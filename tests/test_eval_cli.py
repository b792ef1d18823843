"""`loraocean eval` and `attach`: outputs, adapters, and bad input (one line, exit 2, nothing written)."""

from __future__ import annotations

import json

import pytest
import torch

from conftest import DEVICE, bigbench_task
from loraocean.cli import main
from loraocean.errors import AdapterMismatchError
from loraocean.checkpoints import attach
from loraocean.models import load
from loraocean.library.card import write_card


def run(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    out = capsys.readouterr()
    return exit_info.value.code, out.out, out.err


def ok(argv, capsys):
    code, out, err = run(argv, capsys)
    assert code in (0, None), err
    return out


@pytest.fixture(scope="module")
def lora_dir(tmp_path_factory):
    """A LoRA on tiny-llama with non-zero weights, saved by PEFT, with a card naming its base."""
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(0)
    model, _ = load("tiny-llama")
    peft = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"],
                                            init_lora_weights=False))
    out = tmp_path_factory.mktemp("lora") / "adapter"
    peft.save_pretrained(out)
    write_card(out, {"model": "tiny-llama", "task": "bb_intent_recognition"})
    return out


def test_attach_gives_the_peft_models_logits(lora_dir):
    from peft import PeftModel

    ids = torch.tensor([[5, 9, 77, 3, 120]], device=DEVICE)
    base, _ = load("tiny-llama")
    with torch.no_grad():
        plain = base(input_ids=ids).logits
        ours = attach(base, lora_dir)(input_ids=ids).logits
        ref = PeftModel.from_pretrained(load("tiny-llama")[0], str(lora_dir))(input_ids=ids).logits
    assert torch.equal(ours, ref)
    assert not torch.allclose(ours, plain)  # the adapter does change the model


def test_attach_refuses_an_adapter_of_another_base(lora_dir):
    other, _ = load("tiny-llama")
    other.config.loraocean_name = "smollm2-135m"
    with pytest.raises(AdapterMismatchError, match="'tiny-llama'.*'smollm2-135m'"):
        attach(other, lora_dir)


def test_eval_prints_ci_and_writes_json(tmp_path, capsys, lora_dir):
    task = bigbench_task("intent_recognition")
    path = tmp_path / "out.json"
    out = ok(["eval", "--model", "tiny-llama", "--task", task, "--limit", "12", "--convention", "both",
              "--adapter", str(lora_dir), "--json", str(path), "--batch-size", "5"], capsys)
    assert "lm-eval acc = " in out and "95% CI" in out and "n=12" in out and "majority-label rate" in out
    assert "opencompass ppl" in out
    data = json.loads(path.read_text())
    s = data["summary"]
    assert s["n"] == 12 and s["metric"] == "lm-eval acc" and s["convention"] == "both"
    assert s["ci_low"] <= s["value"] <= s["ci_high"]
    assert len(data["predictions"]) == 12
    assert s["value"] == pytest.approx(sum(p["correct"] for p in data["predictions"]) / 12)


def test_bad_input_one_line_exit_2_nothing_written(tmp_path, capsys, lora_dir):
    task = bigbench_task("intent_recognition")
    path = tmp_path / "never.json"
    one = tmp_path / "one" / "task.json"
    one.parent.mkdir()
    one.write_text(json.dumps({"examples": [{"input": "q", "target_scores": {"a": 1, "b": 0}}]}))
    cases = [
        (["--model", "tiny-lama", "--task", task], "did you mean 'llama'"),
        (["--model", "smolm2-135m", "--task", task], "unknown model 'smolm2-135m'"),
        (["--model", "tiny-llama", "--task", "bb_intent_recogniton"], "did you mean 'bb_intent_recognition'"),
        (["--model", "tiny-llama", "--task", task, "--limit", "0"], "--limit must be at least 1"),
        (["--model", "tiny-llama", "--task", f"bigbench:{one.parent}", "--split", "dev"], "empty dev split"),
        (["--model", "tiny-llama", "--task", task, "--convention", "helm"], "--convention"),
        (["--model", "tiny-llama", "--task", task, "--adapter", str(tmp_path)], "neither a PEFT adapter"),
    ]
    mismatch = tmp_path / "mismatch"
    mismatch.mkdir()
    for f in lora_dir.iterdir():
        (mismatch / f.name).write_bytes(f.read_bytes())
    write_card(mismatch, {"model": "smollm2-135m"})
    cases.append((["--model", "tiny-llama", "--task", task, "--adapter", str(mismatch), "--limit", "2"],
                  "trained for base model 'smollm2-135m', but the model given is 'tiny-llama'"))
    for args, message in cases:
        code, out, err = run(["eval", *args, "--json", str(path)], capsys)
        assert code == 2, (args, err)
        assert message in err and err.startswith("error: ") and err.count("\n") == 1, err
        assert "Traceback" not in err
        assert not path.exists()
