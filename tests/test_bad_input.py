"""Hostile and damaged input over the CLI's entry points (issue 19).

Every case runs the `loraocean` command in this process (`cli.main`) on fixtures built once, and
asserts the promise to users: exit status 2, exactly one line on stderr that starts with
`error:` and names what is wrong (`expect`), no traceback, and no file created, changed or removed
anywhere under the fixture folder or the working folder. A few cases run as real subprocesses to
prove the exit status end to end.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch

from loraocean.cli import main
from loraocean.library.card import write_card

pytestmark = pytest.mark.filterwarnings("ignore")


@dataclass
class Case:
    id: str
    argv: list[str]           # "{W}" is replaced by the fixture folder
    expect: str               # text the one error line must contain
    env: dict = field(default_factory=dict)


# --- fixtures: written once, never changed by a case --------------------------------------------

def _task_json(n: int = 24) -> dict:
    """A small choice task of our own words (BIG-bench layout)."""
    colours = ["red", "green", "blue", "amber"]
    return {"name": "colours", "description": "Pick the colour named in the sentence.",
            "keywords": ["test"], "examples": [
                {"input": f"Sentence {i}: the lamp shines {colours[i % 4]}. Which colour?",
                 "target_scores": {c: int(c == colours[i % 4]) for c in colours}} for i in range(n)]}


def _bad_task_files() -> dict[str, tuple[bytes, str]]:
    """name -> (task.json bytes, text the error names)."""
    good = _task_json()
    def dump(obj) -> bytes:
        return json.dumps(obj).encode()
    scores_text = json.loads(json.dumps(good))
    scores_text["examples"][3]["target_scores"]["red"] = "high"
    scores_null = json.loads(json.dumps(good))
    scores_null["examples"][0]["target_scores"]["green"] = None
    scores_list = json.loads(json.dumps(good))
    scores_list["examples"][1]["target_scores"] = ["red", "green"]
    no_input = json.loads(json.dumps(good))
    del no_input["examples"][2]["input"]
    input_number = json.loads(json.dumps(good))
    input_number["examples"][2]["input"] = 7
    target_number = {**good, "examples": [{"input": "2+2?", "target": 4}]}
    example_text = {**good, "examples": ["just a string"]}
    return {
        "top_list": (dump([1, 2, 3]), "not an object"),
        "top_string": (dump("hello"), "not an object"),
        "top_null": (b"null", "not an object"),
        "examples_dict": (dump({**good, "examples": {"a": 1}}), "'examples'"),
        "examples_string": (dump({**good, "examples": "many"}), "'examples'"),
        "examples_empty": (dump({**good, "examples": []}), "no examples"),
        "score_text": (dump(scores_text), "not a number"),
        "score_null": (dump(scores_null), "not a number"),
        "scores_list": (dump(scores_list), "target_scores"),
        "no_input": (dump(no_input), "'input'"),
        "input_number": (dump(input_number), "'input'"),
        "target_number": (dump(target_number), "target"),
        "example_string": (dump(example_text), "'input'"),
        "prefix_number": (dump({**good, "task_prefix": 5}), "task_prefix"),
        "append_text": (dump({**good, "append_choices_to_input": "yes"}), "append_choices_to_input"),
        "not_utf8": (json.dumps(good).encode().replace(b"lamp", b"l\xff\xfemp"), "UTF-8"),
        "latin1": ("{\"examples\": [{\"input\": \"caf\u00e9\", \"target\": \"x\"}]}".encode("latin-1"), "UTF-8"),
        "truncated": (dump(good)[:200], "not valid JSON"),
        "empty_file": (b"", "not valid JSON"),
        "binary": (bytes(range(256)) * 4, "UTF-8"),
    }


def _write_adapter(folder: Path, model, r: int = 4, alpha: int = 8) -> None:
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(0)
    peft = get_peft_model(model, LoraConfig(r=r, lora_alpha=alpha, target_modules=["q_proj", "v_proj"],
                                            init_lora_weights=False))
    peft.save_pretrained(folder)
    peft.unload()


def _edit_json(path: Path, change) -> None:
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


STUDY = {"name": "bad", "models": ["tiny-llama"],
         "tasks": {"targets": ["bb_snarks"], "pool": ["bb_implicatures", "bb_winowhy", "bb_anachronisms"]},
         "methods": ["base", "loramoe"], "selection": {"strategies": ["random"], "k": 2},
         "executor": "local"}


def _study_variants() -> dict[str, tuple[str, str]]:
    """name -> (YAML text, text the error names)."""
    def y(**changes) -> str:
        import yaml

        return yaml.safe_dump({**STUDY, **changes}, sort_keys=False)
    base = y()
    bomb = "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{c}: &{c} [*{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}]\n"
        for p, c in zip("abcdefgh", "bcdefghi")) + base
    method = lambda **cfg: y(methods=["base", {"name": "loramoe", "config": cfg}])  # noqa: E731
    rocket = lambda **cfg: y(methods=[{"name": "rocket", "config": cfg}])  # noqa: E731
    return {
        "alias_bomb": (bomb, "expands to more than"),
        "alias_self": ("name: &a [*a]\n" + base.split("\n", 1)[1], "alias refers to a value that contains it"),
        "duplicate_key": (base + "seeds: [0]\nseeds: [1]\n", "duplicate key 'seeds'"),
        "duplicate_nested": (base.replace("selection:\n", "selection:\n  k: 1\n"), "duplicate key 'k'"),
        "deep_nesting": ("name: " + "[" * 500 + "]" * 500 + "\n", "nested deeper than"),
        "not_utf8": (None, "UTF-8"),
        "top_list": ("[1, 2]\n", "a study config is a mapping"),
        "preset_unknown": (y(library={"preset": "turbo"}), "library.preset"),
        "preset_number": (y(library={"preset": 5}), "library.preset"),
        "seed_huge": (y(seeds=[2**64]), "seeds[0]"),
        "seed_negative": (y(seeds=[-1]), "seeds[0]"),
        "library_seed_huge": (y(library={"preset": "lite", "seed": 10**30}), "library.seed"),
        "name_escape": (y(name="../../../x"), "name"),
        "name_slash": (y(name="a/b"), "name"),
        "name_dot": (y(name=".hidden"), "name"),
        "name_absolute": (y(name="/tmp/x"), "name"),
        "top_k_text": (rocket(top_k="two"), "methods[0].config.top_k"),
        "top_k_negative": (rocket(top_k=-2), "methods[0].config.top_k"),
        "top_k_over_k": (rocket(top_k=3), "at most the number of experts"),
        "top_k_float": (rocket(top_k=1.5), "methods[0].config.top_k"),
        "top_k_bool": (rocket(top_k=True), "methods[0].config.top_k"),
        "dropout_2": (method(dropout=2.0), "methods[1].config.dropout"),
        "r_negative": (method(r=-4), "methods[1].config.r"),
        "alpha_string": (method(alpha="1e38"), "methods[1].config.alpha"),
        "alpha_inf": (method(alpha=float("inf")), "methods[1].config.alpha"),
        "beta_text": (method(beta="lots"), "methods[1].config.beta"),
        "seed_option_huge": (method(seed=2**70), "methods[1].config.seed"),
        "unknown_option": (method(topk=2), "unknown option"),
        "xlora_dropout": (y(methods=[{"name": "xlora", "config": {"dropout": 1.0}}]), "dropout"),
        "merge_density": (y(methods=[{"name": "merge_ties", "config": {"density": 0}}]), "density"),
        "arrow_temperature": (y(methods=[{"name": "arrow", "config": {"temperature": -1}}]), "temperature"),
        "k_text": (y(selection={"strategies": ["random"], "k": "two"}), "selection.k"),
        "model_unknown": (y(models=["no-such-model"]), "models[0]"),
        "task_unknown": (y(tasks={"targets": ["bb_nope"], "pool": ["bb_snarks"]}), "tasks.targets[0]"),
        "method_unknown": (y(methods=["lorramoe"]), "methods[0].name"),
        "executor_unknown": (y(executor="slurm"), "executor.kind"),
        "bad_yaml": ("name: [unclosed\n", "not valid YAML"),
    }


@pytest.fixture(scope="module")
def world(tmp_path_factory, tiny_llama):
    W = tmp_path_factory.mktemp("bad-input")
    model, _ = tiny_llama
    # BIG-bench task files
    (W / "bb" / "good").mkdir(parents=True)
    (W / "bb" / "good" / "task.json").write_text(json.dumps(_task_json()))
    for name, (data, _) in _bad_task_files().items():
        (W / "bb" / name).mkdir(parents=True)
        (W / "bb" / name / "task.json").write_bytes(data)
    # study configs
    (W / "studies").mkdir()
    for name, (text, _) in _study_variants().items():
        path = W / "studies" / f"{name}.yaml"
        if text is None:
            path.write_bytes(b"name: caf\xe9\nmodels: [tiny-llama]\n")
        else:
            path.write_text(text)
    # a healthy library and damaged copies of it
    lib = W / "lib" / "ok"
    adapter = lib / "tiny-llama" / "bb_snarks"
    _write_adapter(adapter, model)
    write_card(adapter, {"model": "tiny-llama", "task": "bb_snarks", "preset": {"name": "imported"}})
    from loraocean.library import Library

    Library(lib).rebuild_manifest()
    damage = {
        "flip": lambda a, root: _flip(a / "adapter_model.safetensors"),
        "alpha": lambda a, root: _edit_json(a / "adapter_config.json", lambda c: c.update(lora_alpha=800)),
        "alpha_gone": lambda a, root: _edit_json(a / "adapter_config.json", lambda c: c.pop("lora_alpha")),
        "card_edit": lambda a, root: _edit_json(a / "card.json", lambda c: c.update(task="bb_other")),
        "card_garbage": lambda a, root: (a / "card.json").write_bytes(b"\x00\xff{"),
        "card_list": lambda a, root: (a / "card.json").write_text("[1, 2]"),
        "truncated": lambda a, root: _truncate(a / "adapter_model.safetensors"),
        "weights_gone": lambda a, root: (a / "adapter_model.safetensors").unlink(),
        "manifest_list": lambda a, root: (root / "manifest.json").write_text("[1, 2]"),
        "manifest_nopath": lambda a, root: (root / "manifest.json").write_text(
            json.dumps({"version": 1, "adapters": [{"model": "tiny-llama"}]})),
        "manifest_garbage": lambda a, root: (root / "manifest.json").write_text("{not json"),
    }
    for name, hurt in damage.items():
        root = W / "lib" / name
        shutil.copytree(lib, root)
        hurt(root / "tiny-llama" / "bb_snarks", root)
    # adapters whose config does not fit their tensors (for import / eval / moe fit)
    adapters = {
        "r_mismatch": lambda a: _edit_json(a / "adapter_config.json", lambda c: c.update(r=8)),
        "r_huge": lambda a: _edit_json(a / "adapter_config.json", lambda c: c.update(r=10**12)),
        "r_text": lambda a: _edit_json(a / "adapter_config.json", lambda c: c.update(r="four")),
        "ia3": lambda a: _edit_json(a / "adapter_config.json", lambda c: c.update(peft_type="IA3")),
        "redos": lambda a: _edit_json(a / "adapter_config.json",
                                      lambda c: c.update(target_modules="((\\w|\\.)+)+!")),
        "backref": lambda a: _edit_json(a / "adapter_config.json",
                                        lambda c: c.update(target_modules="(q)\\1_proj")),
        "rank_pattern_redos": lambda a: _edit_json(a / "adapter_config.json",
                                                   lambda c: c.update(rank_pattern={"(a+)+$": 4})),
        "alpha_text": lambda a: _edit_json(a / "adapter_config.json", lambda c: c.update(lora_alpha="8")),
        "config_list": lambda a: (a / "adapter_config.json").write_text("[]"),
        "config_garbage": lambda a: (a / "adapter_config.json").write_bytes(b"\xff\xfe"),
        "truncated": lambda a: _truncate(a / "adapter_model.safetensors"),
        "garbage": lambda a: (a / "adapter_model.safetensors").write_bytes(b"not safetensors" * 9),
        "huge_header": lambda a: (a / "adapter_model.safetensors").write_bytes((2**62).to_bytes(8, "little")),
        "flip": lambda a: _flip(a / "adapter_model.safetensors"),
        "card_edit": lambda a: _edit_json(a / "card.json", lambda c: c.update(model="tiny-llama ")),
    }
    for name, hurt in adapters.items():
        folder = W / "adapters" / name
        shutil.copytree(adapter, folder)
        hurt(folder)
    # a base model folder with only pickle weights
    pickled = W / "models" / "pickled"
    pickled.mkdir(parents=True)
    (pickled / "config.json").write_text(json.dumps(model.config.to_dict()))
    (pickled / "pytorch_model.bin").write_bytes(b"\x80\x04not really a pickle")
    # MoE checkpoints: a healthy one and damaged copies
    from loraocean.models import load
    from loraocean.moe import fit

    ckpt = W / "moe" / "ok"
    own, tokenizer = load("tiny-llama")  # fit injects MoE layers: never into the shared model
    fit("uniform", "tiny-llama", [str(adapter)], "bb_snarks", ckpt, preset="smoke", model=own,
        tokenizer=tokenizer)
    for name, hurt in {
        "flip": lambda c: _flip(c / "moe_model.safetensors"),
        "truncated": lambda c: _truncate(c / "moe_model.safetensors"),
        "config_list": lambda c: (c / "moe_config.json").write_text("[]"),
        "config_edit": lambda c: _edit_json(c / "moe_config.json", lambda x: x.update(method="mole")),
        "card_garbage": lambda c: (c / "card.json").write_bytes(b"\xff"),
    }.items():
        shutil.copytree(ckpt, W / "moe" / name)
        hurt(W / "moe" / name)
    # data files for `tasks prepare boolq --from`
    (W / "data" / "utf").mkdir(parents=True)
    (W / "data" / "utf" / "train.jsonl").write_bytes(b'{"question": "caf\xe9?", "answer": true}\n')
    (W / "data" / "parquet").mkdir(parents=True)
    (W / "data" / "parquet" / "train.parquet").write_bytes(os.urandom(300))
    (W / "data" / "jsonl_bad").mkdir(parents=True)
    (W / "data" / "jsonl_bad" / "train.jsonl").write_text('{"question": "a?", "answer": true}\n{oops\n')
    (W / "data" / "jsonl_list").mkdir(parents=True)
    (W / "data" / "jsonl_list" / "train.jsonl").write_text('[1, 2]\n')
    # damaged run folders
    for name in ("study_garbage", "study_list", "study_nojobs", "result_garbage", "result_list",
                 "result_fields", "predictions_garbage", "predictions_fields", "sqlite_garbage",
                 "study_not_utf8"):
        _run_folder(W / "runs" / name, name)
    # relevance maps
    (W / "maps").mkdir()
    (W / "maps" / "dup.yaml").write_text("bb_snarks:\n  bb_winowhy: a\n  bb_winowhy: b\n")
    (W / "maps" / "alias.yaml").write_text("bb_snarks: &a {bb_winowhy: *a}\n")
    (W / "maps" / "bytes.yaml").write_bytes(b"bb_snarks:\n  bb_winowhy: caf\xe9\n")
    # plain files to put outputs under
    (W / "a_file").write_text("I am a file")
    (W / "home_file").write_text("not a folder")
    (W / "out_dir").mkdir()
    return W


def _flip(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[-3] ^= 0x01
    path.write_bytes(bytes(data))


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:-40])


def _run_folder(run: Path, damage: str) -> None:
    (run / "jobs" / "eval-k1").mkdir(parents=True)
    study = {"name": "r", "config_hash": "h", "config": {}, "versions": {},
             "jobs": [{"key": "k1", "kind": "eval", "deps": [], "label": "eval",
                       "rows": [{"model": "tiny-llama", "target": "bb_snarks", "method": "base",
                                 "selection": "-", "seed": 0}]}]}
    result = {"scores": [{"convention": "lm-eval", "metric": "acc", "value": 0.5, "n": 2}],
              "seconds": 1.0, "created": "now"}
    preds = '{"convention": "lm-eval", "id": "a", "correct": true, "prediction": "x"}\n'
    texts = {"study.json": json.dumps(study), "jobs/eval-k1/result.json": json.dumps(result),
             "jobs/eval-k1/predictions.jsonl": preds}
    broken = {
        "study_garbage": ("study.json", "{\"name\": "), "study_list": ("study.json", "[]"),
        "study_nojobs": ("study.json", json.dumps({**study, "jobs": "all"})),
        "result_garbage": ("jobs/eval-k1/result.json", "{{"),
        "result_list": ("jobs/eval-k1/result.json", "[1]"),
        "result_fields": ("jobs/eval-k1/result.json", json.dumps({"scores": [{"value": 1}]})),
        "predictions_garbage": ("jobs/eval-k1/predictions.jsonl", "{oops\n"),
        "predictions_fields": ("jobs/eval-k1/predictions.jsonl", '{"id": "a"}\n'),
        "sqlite_garbage": ("results.sqlite", "SQLite format 3\x00" + "garbage" * 200),
        "study_not_utf8": ("study.json", None),
    }
    name, text = broken[damage]
    texts[name] = text
    for rel, content in texts.items():
        if content is None:
            (run / rel).write_bytes(b"{\"name\": \"caf\xe9\"}")
        else:
            (run / rel).write_text(content)


# --- the table ----------------------------------------------------------------------------------

def cases() -> list[Case]:
    out = []
    bb = "{W}/bb"
    # BIG-bench task files, through every command that reads a task
    for name, (_, expect) in _bad_task_files().items():
        ref = f"bigbench:{bb}/{name}"
        out += [
            Case(f"tasks-validate-{name}", ["tasks", "validate", f"{bb}/{name}/task.json"], expect),
            Case(f"tasks-show-{name}", ["tasks", "show", ref], expect),
            Case(f"tasks-prepare-{name}", ["tasks", "prepare", ref, "--out", "{W}/prepared"], expect),
            Case(f"train-{name}", ["train", "--model", "tiny-llama", "--task", ref, "--out", "{W}/adapter-out",
                                   "--preset", "smoke"], expect),
            Case(f"eval-{name}", ["eval", "--model", "tiny-llama", "--task", ref, "--limit", "2"], expect),
        ]
    # study configs
    for name, (_, expect) in _study_variants().items():
        out.append(Case(f"run-{name}", ["run", "{W}/studies/" + name + ".yaml", "--dry-run",
                                        "--run-dir", "{W}/runs/new"], expect))
    # MoE options on the command line
    fit = ["moe", "fit", "--model", "tiny-llama", "--task", "bb_snarks", "--library", "{W}/lib/ok",
           "--experts", "bb_snarks", "--out", "{W}/ckpt-out", "--preset", "smoke"]
    for method, option, expect in [
        ("rocket", "top_k=-2", "top_k"), ("rocket", "top_k=two", "top_k"), ("rocket", "top_k=99", "at most"),
        ("rocket", "top_k=1.5", "top_k"), ("loramoe", "dropout=2.0", "dropout"), ("loramoe", "r=-4", "--option r"),
        ("loramoe", "alpha=1e38", "alpha"), ("loramoe", "alpha=.inf", "alpha"), ("loramoe", "alpha=[1]", "alpha"),
        ("loramoe", "n_experts=0", "n_experts"), ("loramoe", "train_experts=maybe", "train_experts"),
        ("loramoe", "seed=-1", "seed"), ("xlora", "depth=0", "depth"), ("xlora", "hidden=two", "hidden"),
        ("xlora", "top_k=2", "at most"), ("arrow", "top_k=0", "top_k"), ("mole", "temperature=0", "temperature"),
        ("lorahub", "budget=-1", "budget"), ("merge_ties", "density=1.5", "density"),
        ("merge_svd", "majority_sign_method=most", "majority_sign_method"), ("rocket", "nope=1", "nope"),
        ("rocket", "top_k", "key=value"), ("rocket", "top_k=[unclosed", "YAML"),
        ("rocket", "targets=[1, 2]", "targets"),
    ]:
        out.append(Case(f"moe-option-{method}-{option}", [*fit[:2], "--method", method, *fit[2:],
                                                          "--option", option], expect))
    # damaged libraries
    # (an unreadable card makes the entry unlisted: select then finds no adapters for the model)
    for name, expect in [("flip", "sha256"), ("alpha", "adapter_config.json"), ("alpha_gone", "adapter_config.json"),
                         ("card_edit", "card was changed"), ("card_garbage", "card"),
                         ("card_list", "card"), ("truncated", "adapter_model.safetensors"),
                         ("weights_gone", "adapter_model.safetensors")]:
        lib = "{W}/lib/" + name
        out += [
            Case(f"library-show-{name}", ["library", "show", "tiny-llama", "bb_snarks", "--root", lib], expect),
            Case(f"library-export-{name}", ["library", "export", "tiny-llama", "bb_snarks", "--root", lib,
                                            "--out", "{W}/export-out"], expect),
            Case(f"select-{name}", ["select", "--target", "bb_winowhy", "--k", "1", "--strategy", "random",
                                    "--model", "tiny-llama", "--library", lib, "--include-target"], expect),
            Case(f"moe-fit-{name}", ["moe", "fit", "--method", "uniform", "--model", "tiny-llama", "--task",
                                     "bb_snarks", "--library", lib, "--experts", "bb_snarks", "--out",
                                     "{W}/ckpt-out", "--preset", "smoke"], expect),
            Case(f"eval-library-{name}", ["eval", "--model", "tiny-llama", "--task", "bb_snarks", "--limit", "2",
                                          "--adapter", lib + "/tiny-llama/bb_snarks"], expect),
        ]
    for name, expect in [("manifest_list", "--fix-manifest"), ("manifest_nopath", "--fix-manifest"),
                         ("manifest_garbage", "--fix-manifest")]:
        out.append(Case(f"library-verify-{name}", ["library", "verify", "--root", "{W}/lib/" + name], expect))
    out += [
        Case("library-verify-missing-root", ["library", "verify", "--root", "{W}/no-such-lib"], "does not exist"),
        Case("library-verify-file-root", ["library", "verify", "--root", "{W}/a_file"], "not a folder"),
        Case("library-ls-missing-root", ["library", "ls", "--root", "{W}/no-such-lib"], "does not exist"),
        Case("library-show-missing-root", ["library", "show", "tiny-llama", "x", "--root", "{W}/nope"], "does not exist"),
        Case("select-missing-library", ["select", "--target", "bb_snarks", "--library", "{W}/nope",
                                        "--model", "tiny-llama"], "does not exist"),
    ]
    # adapters that do not fit themselves, through every command that reads one
    for name, expect in [("r_mismatch", "declares rank 8"), ("r_huge", "'r'"), ("r_text", "'r'"),
                         ("ia3", "peft_type"), ("redos", "not a plain module-name pattern"),
                         ("backref", "not a plain module-name pattern"),
                         ("rank_pattern_redos", "not a plain module-name pattern"), ("alpha_text", "lora_alpha"),
                         ("config_list", "not a JSON object"), ("config_garbage", "UTF-8"),
                         ("truncated", "safetensors"), ("garbage", "safetensors"), ("huge_header", "safetensors"),
                         ("flip", "sha256"), ("card_edit", "card was changed")]:
        folder = "{W}/adapters/" + name
        out += [
            Case(f"import-{name}", ["library", "import", folder, "--model", "tiny-llama", "--task", "bb_x",
                                    "--root", "{W}/import-root"], expect),
            Case(f"eval-adapter-{name}", ["eval", "--model", "tiny-llama", "--task", "bb_snarks", "--limit", "2",
                                          "--adapter", folder], expect),
            Case(f"moe-fit-adapter-{name}", ["moe", "fit", "--method", "uniform", "--model", "tiny-llama",
                                             "--task", "bb_snarks", "--experts", folder, "--out", "{W}/ckpt-out",
                                             "--preset", "smoke"], expect),
        ]
    # MoE checkpoints
    for name, expect in [("flip", "sha256"), ("truncated", "bytes"), ("config_list", "not an MoE config"),
                         ("config_edit", "moe_config.json"), ("card_garbage", "unreadable card")]:
        ck = "{W}/moe/" + name
        out += [
            Case(f"eval-moe-{name}", ["eval", "--model", "tiny-llama", "--task", "bb_snarks", "--limit", "2",
                                      "--adapter", ck], expect),
            Case(f"moe-show-{name}", ["moe", "show", ck], expect),
        ]
    # base models with pickle weights only
    out += [
        Case("eval-pickle-model", ["eval", "--model", "{W}/models/pickled", "--task", "bb_snarks"],
             "LORAOCEAN_ALLOW_PICKLE"),
        Case("train-pickle-model", ["train", "--model", "{W}/models/pickled", "--task", "bb_snarks",
                                    "--out", "{W}/adapter-out"], "LORAOCEAN_ALLOW_PICKLE"),
    ]
    # source data for `tasks prepare`
    for name, expect in [("utf", "UTF-8"), ("parquet", "Parquet"), ("jsonl_bad", "malformed JSON"),
                         ("jsonl_list", "JSON object")]:
        out.append(Case(f"prepare-boolq-{name}", ["tasks", "prepare", "boolq", "--from", "{W}/data/" + name,
                                                   "--out", "{W}/prepared"], expect))
    # damaged run folders
    for name, expect in [("study_garbage", "study.json"), ("study_list", "study.json"),
                         ("study_nojobs", "jobs"), ("result_garbage", "result.json"),
                         ("result_list", "result.json"), ("result_fields", "result.json"),
                         ("predictions_garbage", "predictions.jsonl"), ("predictions_fields", "predictions.jsonl"),
                         ("sqlite_garbage", "results.sqlite"), ("study_not_utf8", "UTF-8")]:
        out.append(Case(f"results-{name}", ["results", "{W}/runs/" + name], expect))
    # relevance maps
    for name, expect in [("dup", "duplicate key"), ("alias", "alias"), ("bytes", "UTF-8")]:
        out.append(Case(f"select-map-{name}", ["select", "--target", "bb_snarks", "--strategy", "manual",
                                               "--library", "{W}/lib/ok", "--model", "tiny-llama",
                                               "--include-target", "--k", "1",
                                               "--map", "{W}/maps/" + name + ".yaml"], expect))
    # outputs that cannot be written, checked before any work
    good = "bigbench:{W}/bb/good"
    out += [
        Case("train-out-proc", ["train", "--model", "tiny-llama", "--task", good, "--out", "/proc/x"], "--out"),
        Case("train-out-under-file", ["train", "--model", "tiny-llama", "--task", good, "--out", "{W}/a_file/x"],
             "is a file"),
        Case("eval-json-dir", ["eval", "--model", "tiny-llama", "--task", good, "--json", "{W}/out_dir"], "--json"),
        Case("eval-json-proc", ["eval", "--model", "tiny-llama", "--task", good, "--json", "/proc/x.json"], "--json"),
        Case("eval-json-under-file", ["eval", "--model", "tiny-llama", "--task", good, "--json",
                                      "{W}/a_file/x.json"], "--json"),
        Case("build-root-under-file", ["library", "build", "--models", "tiny-llama", "--tasks", "bb_snarks",
                                       "--root", "{W}/a_file/lib"], "--root"),
        Case("build-root-proc", ["library", "build", "--models", "tiny-llama", "--tasks", "bb_snarks",
                                 "--root", "/proc/lib"], "--root"),
        Case("import-root-proc", ["library", "import", "{W}/lib/ok/tiny-llama/bb_snarks", "--model", "tiny-llama",
                                  "--task", "bb_x", "--root", "/proc/lib"], "--root"),
        Case("export-out-proc", ["library", "export", "tiny-llama", "bb_snarks", "--root", "{W}/lib/ok",
                                 "--out", "/proc/x"], "--out"),
        Case("export-out-file", ["library", "export", "tiny-llama", "bb_snarks", "--root", "{W}/lib/ok",
                                 "--out", "{W}/a_file"], "is a file"),
        Case("moe-fit-out-proc", ["moe", "fit", "--method", "uniform", "--model", "tiny-llama", "--task",
                                  "bb_snarks", "--library", "{W}/lib/ok", "--experts", "bb_snarks",
                                  "--out", "/proc/ckpt"], "--out"),
        Case("select-json-dir", ["select", "--target", "bb_winowhy", "--strategy", "random", "--library",
                                 "{W}/lib/ok", "--model", "tiny-llama", "--json", "{W}/out_dir"], "--json"),
        Case("results-csv-proc", ["results", "{W}/runs/result_garbage", "--csv", "/proc/x.csv"], "--csv"),
        Case("results-csv-dir", ["results", "{W}/runs/result_garbage", "--csv", "{W}/out_dir"], "--csv"),
        Case("run-dir-proc", ["run", str(Path(__file__).parents[1] / "studies" / "ci.yaml"), "--run-dir",
                              "/proc/run"], "--run-dir"),
        Case("run-dir-under-file", ["run", str(Path(__file__).parents[1] / "studies" / "ci.yaml"),
                                    "--run-dir", "{W}/a_file/run"], "--run-dir"),
        Case("prepare-out-proc", ["tasks", "prepare", good, "--out", "/proc/prepared"], "--out"),
        Case("home-is-a-file", ["tasks", "prepare", good], "LORAOCEAN_HOME",
             env={"LORAOCEAN_HOME": "{W}/home_file"}),
        Case("home-under-file", ["tasks", "prepare", good], "LORAOCEAN_HOME",
             env={"LORAOCEAN_HOME": "{W}/home_file/sub"}),
        Case("home-under-proc", ["tasks", "prepare", good], "LORAOCEAN_HOME",
             env={"LORAOCEAN_HOME": "/proc/loraocean"}),
    ]
    return out


CASES = cases()


def _snapshot(*roots: Path) -> dict:
    out = {}
    for root in roots:
        for path in sorted(root.rglob("*")):
            out[str(path)] = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else "dir"
    return out


def test_the_table_covers_at_least_200_cases():
    assert len(CASES) >= 200 and len({c.id for c in CASES}) == len(CASES)


# Cases whose wording comes through PEFT (adapter configs and weights) or datasets (source files):
# `make test-min` runs them at the lowest declared versions.
LIBRARY_WORDED = ("import-", "eval-adapter-", "moe-fit-adapter-", "prepare-boolq-")


@pytest.mark.parametrize("case", [pytest.param(c, id=c.id, marks=[pytest.mark.min_versions] * c.id.startswith(LIBRARY_WORDED))
                                  for c in CASES])
def test_bad_input_is_one_line_and_exit_2(case, world, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    for key, value in case.env.items():
        monkeypatch.setenv(key, value.replace("{W}", str(world)))
    before = _snapshot(world, tmp_path)
    argv = [a.replace("{W}", str(world)) for a in case.argv]
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    err = capsys.readouterr().err
    assert exit_.value.code == 2, err
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    assert case.expect in err, err
    assert _snapshot(world, tmp_path) == before


@pytest.mark.parametrize("args", [
    ["run", "{W}/studies/alias_bomb.yaml", "--dry-run"],
    ["tasks", "validate", "{W}/bb/top_list/task.json"],
])
def test_exit_status_end_to_end(args, world, tmp_path):
    argv = [a.replace("{W}", str(world)) for a in args]
    proc = subprocess.run([sys.executable, "-c", "from loraocean.cli import main; main()", *argv],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith("error: ") and proc.stderr.count("\n") == 1, proc.stderr
