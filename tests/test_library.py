"""The library store and its build: manifest, verify, get, import/export, skip finished pairs, a
NaN pair failing alone, kill -9 and resume with a real subprocess, Ray = local executor."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time

import pytest
import torch

from conftest import bigbench_task
from loraocean.artifacts import sha256_file
from loraocean.errors import AdapterMismatchError, IntegrityError, LoraOceanError
from loraocean.library import Library, build, export_adapter, import_adapter, train_lora
from loraocean.library.build import failure_log
from loraocean.library.card import seal_card
from loraocean.library.presets import PRESETS
from loraocean.library.store import MANIFEST
from loraocean.library.train import CARD, WEIGHTS
from loraocean.models import load

SMOKE = PRESETS["smoke"]
TASKS = ["bb_intent_recognition", "bb_sports_understanding", "bb_snarks", "bb_winowhy",
         "bb_implicatures", "bb_causal_judgment"]


@pytest.fixture(autouse=True)
def _bigbench():
    bigbench_task("intent_recognition")


@pytest.fixture()
def small_lib(tmp_path, tiny_llama):
    model, tok = tiny_llama
    lib = Library(tmp_path / "lib")
    for task in TASKS[:2]:
        train_lora("tiny-llama", task, "smoke", out=lib.path("tiny-llama", task), model=model,
                   tokenizer=tok)
    lib.rebuild_manifest()
    return lib


def test_list_get_manifest(small_lib):
    entries = small_lib.list()
    assert [(e.model, e.task) for e in entries] == [("tiny-llama", t) for t in sorted(TASKS[:2])]
    rows = json.loads((small_lib.root / MANIFEST).read_text())["adapters"]
    assert [r["path"] for r in rows] == ["tiny-llama/" + t for t in sorted(TASKS[:2])]
    for row, e in zip(rows, entries):
        assert row["sha256"] == sha256_file(e.path / WEIGHTS) and row["preset"] == "smoke"
        assert row["data_hash"] == e.card["data_hash"]
    # the manifest is derived from the cards: deleting it loses nothing
    (small_lib.root / MANIFEST).unlink()
    assert small_lib.rebuild_manifest()["adapters"] == rows
    assert small_lib.get("tiny-llama", TASKS[0]).card["task"] == TASKS[0]
    with pytest.raises(LoraOceanError, match="no adapter for model 'tiny-llama' and task 'bb_snarks'"):
        small_lib.get("tiny-llama", "bb_snarks")


def test_verify_reports_every_kind_of_problem(small_lib):
    assert small_lib.verify().clean
    a, b = (small_lib.path("tiny-llama", t) for t in TASKS[:2])
    # corrupt: flip one byte of the weights; get() refuses it
    data = bytearray((a / WEIGHTS).read_bytes())
    data[-1] ^= 0xFF
    (a / WEIGHTS).write_bytes(bytes(data))
    with pytest.raises(IntegrityError, match="does not match the card"):
        small_lib.get("tiny-llama", TASKS[0])
    # stale: the card's lite preset differs from today's lite preset
    card = json.loads((b / CARD).read_text())
    card["preset"] = {**PRESETS["lite"].to_dict(), "lr": 0.123}
    seal_card(b, card)  # as written by a build under the old preset values
    # orphaned: an adapter folder without card; missing: a manifest row whose folder is gone
    orphan = small_lib.root / "tiny-llama" / "bb_orphan"
    orphan.mkdir()
    (orphan / WEIGHTS).write_bytes(b"x")
    manifest = json.loads((small_lib.root / MANIFEST).read_text())
    manifest["adapters"].append({**manifest["adapters"][0], "path": "tiny-llama/bb_gone"})
    (small_lib.root / MANIFEST).write_text(json.dumps(manifest))
    leftover = small_lib.root / "tiny-llama" / ".tmp-bb_x-123"
    leftover.mkdir()
    rep = small_lib.verify()
    assert not rep.clean and rep.ok == []
    assert len(rep.corrupt) == 1 and rep.corrupt[0].startswith(f"tiny-llama/{TASKS[0]}")
    assert rep.stale == [f"tiny-llama/{TASKS[1]} (preset 'lite' changed)"]
    assert rep.orphaned == ["tiny-llama/bb_orphan (no card.json)"]
    assert rep.missing == ["tiny-llama/bb_gone"]
    assert rep.leftovers == [str(leftover)]


def test_verify_catches_an_edited_config_value_and_the_entry_is_refused(small_lib):
    a = small_lib.path("tiny-llama", TASKS[0])
    config = json.loads((a / "adapter_config.json").read_text())
    assert config["lora_alpha"] == PRESETS["smoke"].alpha
    config["lora_alpha"] = 100 * config["lora_alpha"]
    (a / "adapter_config.json").write_text(json.dumps(config))
    rep = small_lib.verify()
    assert [c.split(":")[0] for c in rep.corrupt] == [f"tiny-llama/{TASKS[0]}"]
    assert "adapter_config.json: " in rep.corrupt[0] and "changed or damaged" in rep.corrupt[0]
    entry = next(e for e in small_lib.list() if e.task == TASKS[0])
    with pytest.raises(IntegrityError, match="adapter_config.json"):
        Library.check(entry)
    with pytest.raises(IntegrityError, match="adapter_config.json"):
        small_lib.get("tiny-llama", TASKS[0])
    (a / "adapter_config.json").unlink()  # deleted: reported as corrupt too, with the file named
    assert "adapter_config.json is missing" in small_lib.verify().corrupt[0]
    Library.check(next(e for e in small_lib.list() if e.task == TASKS[1]))  # the other one is fine


def test_verify_of_a_missing_root_is_an_error(tmp_path):
    with pytest.raises(LoraOceanError, match="does not exist"):
        Library(tmp_path / "nope").verify()


def test_import_checks_fit_and_export_writes_model_card(small_lib, tmp_path, tiny_llama):
    model, _ = tiny_llama
    src = small_lib.path("tiny-llama", TASKS[0])
    plain = tmp_path / "downloaded"
    plain.mkdir()
    for name in ("adapter_config.json", WEIGHTS):
        (plain / name).write_bytes((src / name).read_bytes())
    entry = import_adapter(small_lib, plain, "tiny-llama", "my_task", model=model)
    assert entry.card["preset"]["name"] == "imported" and entry.card["adapted_modules"] == 14
    assert small_lib.get("tiny-llama", "my_task").card["weights_sha256"] == sha256_file(src / WEIGHTS)
    assert small_lib.verify().clean
    gpt2, _ = load("tiny-gpt2")
    with pytest.raises(AdapterMismatchError, match="does not have; it was trained for another model"):
        import_adapter(small_lib, plain, "tiny-gpt2", "x", model=gpt2)
    out = export_adapter(small_lib, "tiny-llama", TASKS[0], tmp_path / "export")
    readme = (out / "README.md").read_text()
    assert "base_model:" not in readme  # a tiny test model has no hub id
    assert 'model = PeftModel.from_pretrained(base, "export")' in readme
    assert 'base, _ = loraocean.models.load("tiny-llama")' in readme
    assert f"| r | {SMOKE.r} |" in readme
    config = json.loads((out / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] is None  # not the local folder it was trained from
    assert sha256_file(out / WEIGHTS) == sha256_file(src / WEIGHTS)
    # an exported folder (PEFT files + card) adds to another library as is
    other = Library(tmp_path / "lib2")
    other.add(out)
    record = ("files", "card_sha256")  # the exported config is the portable one: its own record
    added, kept = other.get("tiny-llama", TASKS[0]).card, small_lib.get("tiny-llama", TASKS[0]).card
    assert {k: v for k, v in added.items() if k not in record} == \
        {k: v for k, v in kept.items() if k not in record}
    assert added["files"]["adapter_config.json"]["sha256"] == sha256_file(out / "adapter_config.json")
    assert other.verify().clean
    assert other.verify().clean
    with pytest.raises(LoraOceanError, match="already exists"):
        other.add(out)


def test_cards_of_the_embedded_base_name_its_hub_original():
    from loraocean.library.share import model_card, public_card

    card = {"model": "smollm2-135m", "task": "bb_snarks", "preset": {"name": "lite", "r": 8},
            "imported_from": {"path": "/home/me/adapters/snarks"},
            "base_model_in_adapter": "/home/me/.cache/loraocean/models/smollm2-135m"}
    readme = model_card(card, "me/loras", subfolder="smollm2-135m/bb_snarks")
    assert "base_model: HuggingFaceTB/SmolLM2-135M-Instruct" in readme
    assert "de-quantized" in readme and "Q4_1" in readme
    assert 'AutoModelForCausalLM.from_pretrained("HuggingFaceTB/SmolLM2-135M-Instruct")' in readme
    assert 'PeftModel.from_pretrained(base, "me/loras", subfolder="smollm2-135m/bb_snarks")' in readme
    assert "/home/me" not in readme and "/home/me" not in json.dumps(public_card(card))


def test_import_refuses_shape_mismatch(tmp_path, tiny_llama):
    from transformers import AutoConfig, AutoModelForCausalLM

    model, _ = tiny_llama
    lib = Library(tmp_path / "lib")
    # a llama with another width: same module names, other shapes
    wide = AutoModelForCausalLM.from_config(AutoConfig.for_model(
        "llama", hidden_size=96, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, vocab_size=259))
    wide.config.loraocean_name = "wide-llama"
    train_lora("tiny-llama", TASKS[0], "smoke", out=tmp_path / "a", model=model, tokenizer=tiny_llama[1])
    with pytest.raises(AdapterMismatchError, match="has 64 features but .* has 96"):
        import_adapter(lib, tmp_path / "a", "wide-llama", "t", model=wide)
    assert not lib.root.exists() or lib.list() == []


def _nan_model(path):
    model, tok = load("tiny-llama")
    with torch.no_grad():
        model.model.embed_tokens.weight[:, 0] = float("nan")
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return str(path)


def test_build_skips_finished_and_a_nan_pair_fails_alone(tmp_path):
    root = tmp_path / "lib"
    bad = _nan_model(tmp_path / "nan-llama")
    results = build(root, ["tiny-llama", bad], TASKS[:2], "smoke")
    status = {(r.model, r.task): r.status for r in results}
    assert status == {("tiny-llama", TASKS[0]): "trained", ("tiny-llama", TASKS[1]): "trained",
                      (bad, TASKS[0]): "failed", (bad, TASKS[1]): "failed"}
    failed = [r for r in results if r.status == "failed"]
    assert all("loss became nan at step 1" in r.error for r in failed)
    log = failure_log(root, bad, TASKS[0])
    assert "loss became nan" in log.read_text()
    assert not Library(root).path(bad, TASKS[0]).exists()  # no card-carrying folder for it
    assert Library(root).verify().clean
    shas = {e.task: e.card["weights_sha256"] for e in Library(root).list()}
    # rerun: nothing is trained again
    again = build(root, ["tiny-llama"], TASKS[:2], "smoke")
    assert [r.status for r in again] == ["skipped", "skipped"]
    assert {e.task: e.card["weights_sha256"] for e in Library(root).list()} == shas
    # a damaged entry (one weight byte flipped) is retrained, never skipped
    weights = Library(root).path("tiny-llama", TASKS[1]) / WEIGHTS
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0x01
    weights.write_bytes(bytes(data))
    assert not Library(root).verify().clean
    again = build(root, ["tiny-llama"], TASKS[:2], "smoke")
    assert [r.status for r in again] == ["skipped", "trained"]
    assert Library(root).verify().clean
    assert {e.task: e.card["weights_sha256"] for e in Library(root).list()} == shas  # same seed, same bytes
    # another preset makes the pairs stale: skipped unless asked, retrained when asked
    other = SMOKE.with_train(lr=2e-3)
    assert [r.status for r in build(root, ["tiny-llama"], TASKS[:1], other)] == ["stale"]
    assert [r.status for r in build(root, ["tiny-llama"], TASKS[:1], other, retrain_stale=True)] == ["trained"]
    assert Library(root).get("tiny-llama", TASKS[0]).card["preset"]["lr"] == 2e-3


def _cli_cmd(*args):
    return [sys.executable, "-c", "from loraocean.cli import main; main()", *args]


def test_kill_9_mid_build_then_rerun_finishes(tmp_path):
    root = tmp_path / "lib"
    args = ("library", "build", "--models", "tiny-llama", "--tasks", ",".join(TASKS),
            "--preset", "smoke", "--root", str(root))
    seed = random.randrange(1 << 30)
    delay = random.Random(seed).uniform(0.0, 0.4)
    proc = subprocess.Popen(_cli_cmd(*args), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            start_new_session=True)
    deadline = time.time() + 300
    while not list(root.glob("*/*/card.json")) and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    time.sleep(delay)
    os.kill(proc.pid, signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL, f"the build ended before the kill (seed {seed})"
    before = {p.parent.name: p.read_text() for p in root.glob("*/*/card.json")}
    assert before, f"no adapter finished before the kill (seed {seed})"
    rerun = subprocess.run(_cli_cmd(*args), capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stderr
    lib = Library(root)
    assert sorted(e.task for e in lib.list()) == sorted(TASKS)
    for task, text in before.items():  # finished adapters were reused, not retrained
        assert (lib.path("tiny-llama", task) / CARD).read_text() == text
    assert f"{len(before)} skipped" in rerun.stdout
    rep = lib.verify()
    assert rep.clean, (seed, rep)


def test_ray_builds_the_same_library_as_the_local_executor(tmp_path):
    local = build(tmp_path / "local", ["tiny-llama"], TASKS[:2], "smoke", workers=2)
    ray_ = build(tmp_path / "ray", ["tiny-llama"], TASKS[:2], "smoke", executor="ray", workers=2)
    assert [r.status for r in local] == [r.status for r in ray_] == ["trained", "trained"]
    sha = lambda root: {e.task: e.card["weights_sha256"] for e in Library(root).list()}  # noqa: E731
    assert sha(tmp_path / "local") == sha(tmp_path / "ray")
    assert len(sha(tmp_path / "ray")) == 2
    assert Library(tmp_path / "ray").verify().clean


def test_build_eval_records_the_evaluation_rooms_metric(tmp_path):
    from peft import PeftModel

    from loraocean.cli import main
    from loraocean.evaluation import evaluate
    from loraocean.tasks import get_task, load_split

    root = tmp_path / "lib"
    with pytest.raises(SystemExit) as done:
        main(["library", "build", "--models", "tiny-llama", "--tasks", TASKS[2], "--preset", "smoke",
              "--root", str(root), "--eval", "--eval-limit", "12"])
    assert done.value.code in (0, None)
    test = Library(root).get("tiny-llama", TASKS[2]).card["metrics"]["test"]
    base, tok = load("tiny-llama")
    model = PeftModel.from_pretrained(base, Library(root).path("tiny-llama", TASKS[2])).eval()
    spec = get_task(TASKS[2])
    want = evaluate(model, tok, spec, load_split(spec, "test", limit=12))
    assert test["metric"] == want.metric == "lm-eval acc" and test["n"] == 12
    assert test["value"] == pytest.approx(want.value)
    assert json.loads((root / MANIFEST).read_text())["adapters"][0]["metrics"]["test"]["value"] == test["value"]


def _main(*args) -> int:
    from loraocean.cli import main

    try:
        main(list(args))
    except SystemExit as exit_:
        return exit_.code or 0
    return 0


def test_library_cli(small_lib, tmp_path, capsys):
    root = str(small_lib.root)
    assert _main("library", "ls", "--root", root) == 0
    assert "tiny-llama" in capsys.readouterr().out
    assert _main("library", "ls", "--root", root, "--json") == 0
    rows = json.loads(capsys.readouterr().out)
    assert rows == json.loads((small_lib.root / MANIFEST).read_text())["adapters"]
    assert _main("library", "show", "tiny-llama", TASKS[1], "--root", root) == 0
    shown = capsys.readouterr().out
    assert json.loads(shown[shown.index("{"):])["task"] == TASKS[1]
    assert _main("library", "verify", "--root", root) == 0 and "clean" in capsys.readouterr().out
    assert _main("library", "export", "tiny-llama", TASKS[1], "--out", str(tmp_path / "hub"), "--root", root) == 0
    assert (tmp_path / "hub" / "README.md").is_file()
    # importing the exported llama adapter onto a GPT-2 base: one-line error, exit 2, nothing added
    code = _main("library", "import", str(tmp_path / "hub"), "--model", "tiny-gpt2", "--task", "t", "--root", root)
    err = capsys.readouterr().err
    assert code == 2 and "'tiny-gpt2' does not have" in err and "Traceback" not in err
    assert not (small_lib.root / "tiny-gpt2").exists()
    weights = small_lib.path("tiny-llama", TASKS[1]) / WEIGHTS
    weights.write_bytes(weights.read_bytes()[:-1] + b"\0")
    assert _main("library", "verify", "--root", root) == 1
    assert "corrupt: tiny-llama/" + TASKS[1] in capsys.readouterr().out
    assert _main("library", "show", "tiny-llama", TASKS[1], "--root", root) == 2
    assert "does not match the card" in capsys.readouterr().err


def test_adapter_patterns_plain_ones_pass_backtracking_ones_are_refused(tmp_path):
    import re

    from loraocean.errors import DataError
    from loraocean.library.adapter import check_pattern

    plain = [r".*\.(q_proj|v_proj)", r"model\.layers\.\d+\.self_attn\.(q|k|v|o)_proj", r"^q_proj$",
             r".*decoder.*(SelfAttention|EncDecAttention).*(q|v)$", r"[a-z_]+\.c_attn", "q_proj"]
    for pattern in plain:
        check_pattern(pattern, tmp_path, "target_modules")
        re.compile(pattern)
    for pattern in [r"((\w|\.)+)+!", r"(a+)+$", r"(q)\1_proj", r"(?=q)q_proj", r"(x|x)*y", "(" * 5 + ")" * 5 + "(",
                    "x" * 2000]:
        with pytest.raises(DataError, match="target_modules"):
            check_pattern(pattern, tmp_path, "target_modules")
