"""A library to and from the Hugging Face Hub (through huggingface_hub).

    pull("org/loras", root, model="smollm2-135m", mapping="map.yaml")   # snapshot -> import each
    push(Library(root), "me/my-loras")                                   # model cards included

A hub collection is any repo holding PEFT adapter folders (`adapter_config.json` +
`adapter_model.safetensors`) at any depth. `pull` downloads only those files (allow-patterns; with
a map, only the mapped folders), at one revision, and records the commit it got in each card. A
map is a YAML (or JSON) file from a folder in the repo to our task name, or to `{task, model}`:

    lora_sst2: bb_snarks
    flan/anli_r1: {task: anli, model: smollm2-135m}

Without a map every adapter folder is pulled and named after its last path component. `push`
uploads `<model>/<task>/` folders (portable adapter config, public card, model card README.md)
and a README.md indexing them, in one commit.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path

from loraocean import models
from loraocean.errors import ConfigError, DataError, LoraOceanError
from loraocean.paths import NAME, NAME_RULE
from loraocean.library.share import import_adapter, write_shareable
from loraocean.library.store import ADAPTER_FILES, Entry, Library
from loraocean.library.train import CARD

FILES = (*ADAPTER_FILES, CARD)


@dataclass
class Pulled:
    path_in_repo: str
    model: str
    task: str
    entry: Entry


def read_map(path: str | Path) -> dict[str, dict]:
    """{folder in repo: {"task": ..., "model": ... (optional)}} from a map file."""
    import yaml

    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except OSError as err:
        raise LoraOceanError(f"cannot read the map file {path}: {err.strerror}") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        raise DataError(path, f"not valid YAML ({getattr(err, 'problem', err)})",
                        line=mark.line + 1 if mark else None) from None
    if not isinstance(raw, dict) or not raw:
        raise DataError(path, "expected a mapping from folder in the repo to task name",
                        fix="write lines like `lora_sst2: bb_snarks`")
    out = {}
    for folder, value in raw.items():
        value = {"task": value} if isinstance(value, str) else value
        if not isinstance(value, dict) or not isinstance(value.get("task"), str) or \
                set(value) - {"task", "model"}:
            raise DataError(path, f"entry {folder!r} must be a task name or {{task, model}}",
                            field=str(folder))
        if not NAME.fullmatch(value["task"]):
            raise DataError(path, f"task {value['task']!r} of entry {folder!r} cannot be a library folder "
                            f"name; {NAME_RULE}", field=str(folder))
        out[str(folder).strip("/")] = value
    return out


def check_repo_id(repo_id: str) -> str:
    """`repo_id` when it is `owner/name` with two `paths.NAME` parts, else a ConfigError."""
    parts = repo_id.split("/") if isinstance(repo_id, str) else []
    if len(parts) != 2 or not all(NAME.fullmatch(p) for p in parts):
        raise ConfigError(f"hub repository {repo_id!r} is not owner/name; in each part {NAME_RULE}")
    return repo_id


def _download(repo_id: str, revision: str | None, patterns: list[str]) -> Path:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    try:
        return Path(snapshot_download(repo_id, revision=revision, allow_patterns=patterns))
    except (HfHubHTTPError, LocalEntryNotFoundError, ValueError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise LoraOceanError(f"cannot download {repo_id!r} (revision {revision or 'main'}): {first}; "
                             "check the repo id, the revision and your network or HF_TOKEN") from None


def _adapter_folders(snapshot: Path) -> list[str]:
    return sorted(str(p.parent.relative_to(snapshot)) for p in snapshot.rglob(ADAPTER_FILES[0])
                  if (p.parent / ADAPTER_FILES[1]).is_file())


def pull(repo_id: str, root: str | Path, revision: str | None = None, mapping: str | Path | None = None,
         model: str | None = None, overwrite: bool = False) -> list[Pulled]:
    """Download the collection's adapters and import each into the library at `root`, checking
    every LoRA matrix against the base model's shapes. The base model is the map entry's `model`,
    else `model`, else the `model` of a card.json beside the adapter (ours, when we pushed it)."""
    check_repo_id(repo_id)
    wanted = read_map(mapping) if mapping else None
    patterns = [f"{folder}/{name}" for folder in wanted for name in FILES] if wanted else \
        [f"*{name}" for name in FILES]
    snapshot = _download(repo_id, revision, patterns)
    commit = snapshot.name  # the cache's snapshot folder is named by the commit it holds
    found = _adapter_folders(snapshot)
    if wanted:
        missing = sorted(set(wanted) - set(found))
        if missing:
            raise LoraOceanError(f"{repo_id}@{commit[:12]} has no adapter folder {missing[0]!r} "
                                 f"named in {mapping} (it has: {', '.join(found[:10]) or 'none'})")
        found = [f for f in found if f in wanted]
    if not found:
        raise LoraOceanError(f"{repo_id}@{commit[:12]} holds no PEFT adapter folder "
                             f"({' + '.join(ADAPTER_FILES)})")
    lib, bases, pulled = Library(root), {}, []
    for folder in found:  # every name is checked before the first import
        task = (wanted or {}).get(folder, {"task": Path(folder).name})["task"]
        if not NAME.fullmatch(task):
            raise LoraOceanError(f"{repo_id}@{commit[:12]}: folder {folder!r} gives the task name {task!r}, "
                                 f"which cannot be a library folder name ({NAME_RULE}); name its task "
                                 "in a map (--map)")
    for folder in found:
        entry = (wanted or {}).get(folder, {"task": Path(folder).name})
        card = snapshot / folder / CARD
        name = entry.get("model") or model or (json.loads(card.read_text()).get("model")
                                               if card.is_file() else None)
        if not name:
            raise LoraOceanError(f"{repo_id}/{folder}: which base model is it for? pass --model "
                                 "or name it in the map (`{folder}: {task: ..., model: ...}`)")
        if name not in bases:
            bases.clear()
            bases[name] = models.load(name)[0]
        source = {"repo_id": repo_id, "revision": commit, "path_in_repo": folder}
        imported = import_adapter(lib, snapshot / folder, name, entry["task"], model=bases[name],
                                  overwrite=overwrite, source=source)
        pulled.append(Pulled(folder, name, entry["task"], imported))
    return pulled


def index_card(repo_id: str, entries: list[Entry]) -> str:
    """The repo's README.md: what it holds and how to load one adapter."""
    hubs = sorted({h for e in entries if (h := models.hub_id(e.model))})
    meta = ["library_name: peft", "license: apache-2.0", "tags: [lora, loraocean]",
            *([f"base_model: {hubs[0]}"] if len(hubs) == 1 else
              [f"base_model: [{', '.join(hubs)}]"] if hubs else [])]
    rows = "\n".join(f"| `{models.slug(e.model)}/{e.task}` | {e.model} | {e.task} | "
                     f"{e.card.get('preset', {}).get('name')} |" for e in entries)
    first = entries[0]
    return f"""---
{chr(10).join(meta)}
---
# {repo_id}: {len(entries)} LoRA adapters made with LoRAOcean

Each folder is a PEFT LoRA adapter with its own model card (README.md) and `card.json`.

| folder | base model | task | preset |
| --- | --- | --- | --- |
{rows}

Load one (here `{models.slug(first.model)}/{first.task}`) as its model card shows, e.g.
`PeftModel.from_pretrained(base, "{repo_id}", subfolder="{models.slug(first.model)}/{first.task}")`,
or pull them all into a library with `loraocean library pull {repo_id} --root LIB`.
"""


def push(lib: Library, repo_id: str, entries: list[Entry] | None = None, private: bool = False,
         revision: str | None = None, api=None) -> str:
    """Upload `entries` (default: the whole library) to `repo_id` in one commit; returns the
    commit id. `api`: a `huggingface_hub.HfApi` (default: one with the user's login/HF_TOKEN)."""
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError

    check_repo_id(repo_id)
    entries = [lib.get(e.model, e.task) for e in (lib.list() if entries is None else entries)]  # checks weights
    if not entries:
        raise LoraOceanError(f"no adapter of {lib.root} to push (none there, or none matches the chosen "
                             "tasks/model); see `loraocean library ls`")
    api = api or HfApi()
    with tempfile.TemporaryDirectory(prefix="loraocean-push-") as tmp:
        stage = Path(tmp)
        for entry in entries:
            sub = f"{models.slug(entry.model)}/{entry.task}"
            (stage / sub).mkdir(parents=True)
            write_shareable(entry, stage / sub, repo_id, subfolder=sub)
        (stage / "README.md").write_text(index_card(repo_id, entries))
        try:
            api.create_repo(repo_id, private=private, exist_ok=True)
            info = api.upload_folder(repo_id=repo_id, folder_path=stage, revision=revision,
                                     commit_message=f"loraocean: {len(entries)} LoRA adapters")
        except HfHubHTTPError as err:
            raise LoraOceanError(f"cannot push to {repo_id!r}: {str(err).splitlines()[0]}; log in with "
                                 "`hf auth login` or set HF_TOKEN with write access") from None
    return info.oid
