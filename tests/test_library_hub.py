"""`library pull` / `library push` against a local hub: huggingface_hub's own cache layout
(`models--ORG--NAME/refs/main` + `snapshots/<commit>/...`) read by the real `snapshot_download`
in offline mode (HF_HUB_OFFLINE, as a user without network gets it), and `push` through an
injected HfApi stand-in whose `upload_folder` commits into that same layout. No network."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest

from loraocean.artifacts import sha256_file
from loraocean.cli import main
from loraocean.errors import LoraOceanError
from loraocean.library import Library
from loraocean.library.hub import pull, push
from test_moe_layer import SPECS, make_adapters

MAP = """lora_a: bb_snarks
lora_b: bb_winowhy
nested/lora_c: {task: bb_implicatures, model: tiny-llama}
"""


def commit_to_cache(cache: Path, repo_id: str, folder: Path) -> str:
    """Commit `folder` as the new main of `repo_id` in the hub cache layout; returns the commit id."""
    digest = hashlib.sha1()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(folder)).encode() + path.read_bytes())
    commit = digest.hexdigest()
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    shutil.copytree(folder, repo / "snapshots" / commit)
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(commit)
    return commit


class LocalHubApi:
    """The two HfApi methods `push` calls, committing into the local cache layout."""

    def __init__(self, cache: Path):
        self.cache, self.calls = cache, []

    def create_repo(self, repo_id, private=False, exist_ok=False):
        self.calls.append(("create_repo", repo_id, private, exist_ok))

    def upload_folder(self, repo_id, folder_path, revision=None, commit_message=None):
        self.calls.append(("upload_folder", repo_id, revision, commit_message))

        class Info:
            oid = commit_to_cache(self.cache, repo_id, Path(folder_path))
        return Info()


@pytest.fixture()
def hub(tmp_path, monkeypatch):
    import huggingface_hub.constants as constants

    cache = tmp_path / "hub"
    cache.mkdir()
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    # a collection of four adapters in folders that are not our task names; one is not mapped
    source = tmp_path / "collection"
    for name, path in zip(["lora_a", "lora_b", "nested/lora_c", "lora_skip"],
                          make_adapters(tmp_path / "made", SPECS + SPECS[:1])):
        shutil.copytree(path, source / name, ignore=shutil.ignore_patterns("card.json"))
    (source / "README.md").write_text("a collection\n")
    commit = commit_to_cache(cache, "loralib/collection", source)
    (tmp_path / "map.yaml").write_text(MAP)
    return cache, commit, source


def test_pull_verify_push_pull_gives_identical_bytes(tmp_path, hub):
    cache, commit, source = hub
    pulled = pull("loralib/collection", tmp_path / "lib", mapping=tmp_path / "map.yaml", model="tiny-llama")
    assert [(p.path_in_repo, p.task) for p in pulled] == [
        ("lora_a", "bb_snarks"), ("lora_b", "bb_winowhy"), ("nested/lora_c", "bb_implicatures")]
    lib = Library(tmp_path / "lib")
    assert lib.verify().clean and len(lib.verify().ok) == 3
    card = lib.get("tiny-llama", "bb_snarks").card
    assert card["imported_from"] == {"repo_id": "loralib/collection", "revision": commit,
                                     "path_in_repo": "lora_a"}
    for p in pulled:
        assert sha256_file(p.entry.path / "adapter_model.safetensors") == \
            sha256_file(source / p.path_in_repo / "adapter_model.safetensors")

    api = LocalHubApi(cache)
    oid = push(lib, "me/my-loras", api=api)
    assert api.calls[0] == ("create_repo", "me/my-loras", False, True)
    pushed = cache / "models--me--my-loras" / "snapshots" / oid
    assert sorted(str(p.relative_to(pushed)) for p in pushed.rglob("*") if p.is_file()) == sorted(
        [f"tiny-llama/{t}/{f}" for t in ("bb_implicatures", "bb_snarks", "bb_winowhy")
         for f in ("README.md", "adapter_config.json", "adapter_model.safetensors", "card.json")] + ["README.md"])
    for path in pushed.rglob("*"):  # no local absolute path leaves the machine
        if path.is_file() and path.suffix in (".json", ".md"):
            assert str(tmp_path) not in path.read_text() and "/tmp" not in path.read_text()
    readme = (pushed / "tiny-llama" / "bb_snarks" / "README.md").read_text()
    assert 'PeftModel.from_pretrained(base, "me/my-loras", subfolder="tiny-llama/bb_snarks")' in readme
    assert "<" not in readme.split("## How to load")[1]  # no placeholder

    again = pull("me/my-loras", tmp_path / "lib2")  # our cards name the model: no map needed
    assert [(p.model, p.task) for p in again] == [("tiny-llama", t) for t in
                                                   ("bb_implicatures", "bb_snarks", "bb_winowhy")]
    for p in again:
        first = lib.path(p.model, p.task)
        assert (p.entry.path / "adapter_model.safetensors").read_bytes() == \
            (first / "adapter_model.safetensors").read_bytes()
        assert (p.entry.path / "adapter_config.json").read_bytes() == \
            (pushed / p.path_in_repo / "adapter_config.json").read_bytes()
        assert p.entry.card["imported_from"]["revision"] == oid
    assert Library(tmp_path / "lib2").verify().clean


def test_pull_names_what_is_wrong(tmp_path, hub):
    with pytest.raises(LoraOceanError, match="which base model is it for"):
        pull("loralib/collection", tmp_path / "lib")
    (tmp_path / "bad.yaml").write_text("lora_a: bb_snarks\nlora_zz: bb_winowhy\n")
    with pytest.raises(LoraOceanError, match="no adapter folder 'lora_zz'"):
        pull("loralib/collection", tmp_path / "lib", mapping=tmp_path / "bad.yaml", model="tiny-llama")
    with pytest.raises(LoraOceanError, match="cannot download 'nobody/nothing'"):
        pull("nobody/nothing", tmp_path / "lib", model="tiny-llama")


def test_cli_pull_then_verify(tmp_path, hub, capsys):
    from test_moe_cli import run

    code, out, err = run(["library", "pull", "loralib/collection", "--map", str(tmp_path / "map.yaml"),
                          "--model", "tiny-llama", "--root", str(tmp_path / "lib")], capsys)
    assert code == 0, err
    assert "pulled 3 adapters from loralib/collection@" in out
    code, out, _ = run(["library", "verify", "--root", str(tmp_path / "lib")], capsys)
    assert code == 0 and "3 ok" in out
    code, _, err = run(["library", "pull", "loralib/collection", "--root", str(tmp_path / "x")], capsys)
    assert code == 2 and "pass --model" in err and len(err.strip().splitlines()) == 1
