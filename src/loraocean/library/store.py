"""The on-disk library: `<root>/<model-slug>/<task>/` is a PEFT adapter folder plus card.json;
`<root>/manifest.json` indexes them (one row per adapter) and is always rebuildable from the cards.

An entry binds its place: its sealed card names its model, its task and the folder it belongs in
(`folder`, `<model-slug>/<task>`), and every reader checks that the folder it found the card in is
that one (`check_place`), so an entry moved into another entry's folder is refused, never used
under the other's name. Task names and model slugs are `paths.check_name` names, and every entry
path resolves inside the root (`paths.inside`).

Writers (a local build, Ray workers on a shared filesystem) only ever create whole adapter folders
atomically; the manifest is re-derived from the cards and replaced atomically, so concurrent
writers never corrupt it. Folders whose names start with `.` or `_` are ours (temp folders,
failure logs) and are not adapters.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

from loraocean import models
from loraocean.artifacts import atomic_dir, remove_stale, write_json_atomic
from loraocean.errors import IntegrityError, LoraOceanError
from loraocean.library.adapter import WEIGHTS
from loraocean.library.card import (ADAPTER_FILES, CARD, REBUILD, check_card, check_replaceable, read_card,
                                    seal_card)
from loraocean.paths import NAME, NAME_RULE, inside
from loraocean.library.presets import is_stale

MANIFEST = "manifest.json"
FAILURES = "_failures"
FIX_MANIFEST = "rebuild it from the cards with `loraocean library verify --root ROOT --fix-manifest`"


@dataclass
class Entry:
    model: str
    task: str
    path: Path
    card: dict

    def row(self, root: Path) -> dict:
        c = self.card
        return {"model": self.model, "task": self.task, "preset": c.get("preset", {}).get("name"),
                "data_hash": c.get("data_hash"), "metrics": c.get("metrics", {}),
                "sha256": c.get("weights_sha256"), "path": str(self.path.relative_to(root)),
                "created": c.get("created")}


@dataclass
class Report:
    """What `verify` found. Clean when every list is empty."""
    ok: list[str]
    missing: list[str]    # manifest rows whose folder or weights are gone
    corrupt: list[str]    # files or cards that differ from the card's integrity record, unreadable cards
    misplaced: list[str]  # entries found in another entry's folder (their card names another place)
    orphaned: list[str]   # adapter folders without a card, or cards the manifest does not list
    stale: list[str]      # trained with a preset whose values have changed since
    leftovers: list[str]  # temp folders of interrupted writes

    @property
    def clean(self) -> bool:
        return not (self.missing or self.corrupt or self.misplaced or self.orphaned or self.stale
                    or self.leftovers)


def _hidden(name: str) -> bool:
    return name.startswith((".", "_"))


def folder_of(model: str, task: str) -> str:
    """The place of an entry relative to the library root: `<model-slug>/<task>`."""
    return f"{models.slug(model)}/{task}"


def check_place(folder: str | Path, card: dict) -> None:
    """Raise IntegrityError unless `folder` is the place the entry's card names: its last two
    parts are the card's `folder` (`<model-slug>/<task>`, derived from `model` and `task` for
    cards written before the field)."""
    folder = Path(folder)
    model, task = card.get("model"), card.get("task")
    if not isinstance(model, str) or not isinstance(task, str):
        raise IntegrityError(f"{folder / CARD}: no model or task recorded; {REBUILD}")
    if not NAME.fullmatch(task):
        raise IntegrityError(f"{folder / CARD}: its task {task!r} cannot be a folder name ({NAME_RULE}); "
                             f"{REBUILD}")
    want = folder_of(model, task)
    if card.get("folder", want) != want:
        raise IntegrityError(f"{folder / CARD}: its folder {card.get('folder')!r} is not that of its model "
                             f"and task ({want}); {REBUILD}")
    have = f"{folder.parent.name}/{folder.name}"
    if have != want:
        raise IntegrityError(f"{folder} holds the adapter of {model} / {task} (its sealed card says so), "
                             f"which belongs in {want}: the folders were moved or swapped; move it back "
                             f"to {want} (or remove it and rebuild), it is never used as {have}")


def in_library(folder: str | Path) -> bool:
    """Whether `folder` sits where a library keeps entries (its grandparent holds a manifest)."""
    return (Path(folder).parent.parent / MANIFEST).is_file()


def check_entry_folder(folder: str | Path) -> None:
    """`check_place` for an adapter folder given by path, when it sits in a library."""
    folder = Path(folder)
    if in_library(folder) and (folder / CARD).is_file():
        check_place(folder, read_card(folder))


class Library:
    def __init__(self, root: str | Path):
        self.root = Path(root)

    def require(self) -> "Library":
        """This library, when its root is a folder (raises a LoraOceanError naming it otherwise)."""
        if not self.root.is_dir():
            what = "is not a folder" if self.root.exists() else "does not exist"
            raise LoraOceanError(f"library root {self.root} {what}; give the folder a library was "
                                 "built in (`loraocean library build --root ...`)")
        return self

    # ---- layout -----------------------------------------------------------------------------
    def path(self, model: str, task: str) -> Path:
        """The folder of (model, task): a `paths.check_name` task name under the model's slug,
        resolved inside the root."""
        return inside(self.root, models.slug(model), task, what="task")

    def _folders(self):
        """Every candidate adapter folder (two levels under the root, not hidden)."""
        if not self.root.is_dir():
            return
        for mdir in sorted(p for p in self.root.iterdir() if p.is_dir() and not _hidden(p.name)):
            for tdir in sorted(p for p in mdir.iterdir() if p.is_dir() and not _hidden(p.name)):
                yield tdir

    # ---- reading ----------------------------------------------------------------------------
    def list(self) -> list[Entry]:
        """Finished adapters (a folder with a readable card), sorted by model then task."""
        out = []
        for folder in self._folders():
            if not (folder / CARD).is_file():
                continue
            try:
                card = read_card(folder)
            except IntegrityError:
                continue
            out.append(Entry(card.get("model", folder.parent.name), card.get("task", folder.name),
                             folder, card))
        return out

    def find(self, model: str, task: str) -> Entry | None:
        """The entry when a finished adapter is there (no checksum), else None. The entry is
        the one its card names (which `check` holds against the folder)."""
        folder = self.path(model, task)
        if not (folder / CARD).is_file():
            return None
        card = read_card(folder)
        named = card.get("model"), card.get("task")
        if not all(isinstance(n, str) for n in named) or folder_of(*named) != folder_of(model, task):
            named = model, task  # `check` says what is wrong
        return Entry(*named, folder, card)

    def get(self, model: str, task: str) -> Entry:
        """The entry, after `check` (its files and card against the card's integrity record)."""
        entry = self.find(model, task)
        if entry is None:
            have = sorted(f"{e.model}/{e.task}" for e in self.list())
            raise LoraOceanError(f"no adapter for model {model!r} and task {task!r} in {self.root}"
                                 f" (have: {', '.join(have[:10]) or 'none'}); build it with "
                                 "`loraocean library build`")
        self.check(entry)
        return entry

    @staticmethod
    def check(entry: Entry) -> None:
        """Raise IntegrityError unless the entry's card, adapter config and weights are exactly what
        was written (the card's seal, and each file's size and full sha256; see `library.card`)
        and the entry is in the folder its card names (`check_place`). Call it before using an
        entry found with `find` or `list`."""
        check_card(entry.path, entry.card)
        check_place(entry.path, entry.card)

    def manifest(self) -> dict:
        path = self.root / MANIFEST
        if not path.is_file():
            return {"version": 1, "adapters": []}
        try:
            manifest = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            raise IntegrityError(f"{path}: unreadable ({err}); {FIX_MANIFEST}") from None
        rows = manifest.get("adapters") if isinstance(manifest, dict) else None
        if not isinstance(rows, list) or not all(isinstance(r, dict) and isinstance(r.get("path"), str)
                                                 for r in rows):
            raise IntegrityError(f"{path}: not a manifest (an object whose 'adapters' lists rows with a "
                                 f"'path'); {FIX_MANIFEST}")
        return manifest

    # ---- writing ----------------------------------------------------------------------------
    def rebuild_manifest(self) -> dict:
        """Re-derive the manifest from the cards and replace it atomically."""
        manifest = {"version": 1, "adapters": [e.row(self.root) for e in self.list()]}
        self.root.mkdir(parents=True, exist_ok=True)
        write_json_atomic(self.root / MANIFEST, manifest)
        return manifest

    def add(self, folder: str | Path, overwrite: bool = False) -> Entry:
        """Copy a finished adapter folder (PEFT files + card.json) into the library, atomically."""
        folder = Path(folder)
        for name in (*ADAPTER_FILES, CARD):
            if not (folder / name).is_file():
                raise LoraOceanError(f"{folder} has no {name}; an adapter folder needs "
                                     f"{', '.join(ADAPTER_FILES)} and {CARD}")
        card = check_card(folder)
        for key in ("model", "task"):
            if not isinstance(card.get(key), str):
                raise IntegrityError(f"{folder / CARD}: field {key!r} is missing; re-create the adapter "
                                     "folder with `loraocean train` or `loraocean library import`")
        dest = inside(self.root, models.slug(card["model"]), card["task"], what=f"task in {folder / CARD}")
        check_place(dest, card)
        if dest.exists() and not overwrite:
            raise LoraOceanError(f"{dest} already exists; remove it first or pass overwrite")
        check_replaceable(dest, "overwrite")
        with atomic_dir(dest, overwrite=overwrite) as tmp:
            for item in folder.iterdir():
                if item.is_file():
                    shutil.copy2(item, tmp / item.name)
        self.rebuild_manifest()
        return Entry(card["model"], card["task"], dest, card)

    def remove(self, model: str, task: str) -> None:
        folder = self.path(model, task)
        if not folder.exists():
            raise LoraOceanError(f"no adapter for model {model!r} and task {task!r} in {self.root}")
        check_replaceable(folder, "remove")
        shutil.rmtree(folder)
        self.rebuild_manifest()

    def set_metrics(self, model: str, task: str, metrics: dict) -> None:
        """Record evaluation metrics in a card (atomic rewrite) and the manifest."""
        folder = self.path(model, task)
        card = check_card(folder)
        check_place(folder, card)
        card.setdefault("metrics", {}).update(metrics)
        seal_card(folder, card)
        self.rebuild_manifest()

    def clean_leftovers(self) -> list[Path]:
        """Remove temp folders left by interrupted writes of dead writers (a live writer's stay)."""
        return remove_stale(self._leftovers())

    def _leftovers(self) -> list[Path]:
        if not self.root.is_dir():
            return []
        found = list(self.root.glob(".tmp-*")) + list(self.root.glob("*/.tmp-*")) + \
            list(self.root.glob("*/.old-*"))
        return sorted(p for p in found if p.is_dir())

    # ---- checking ---------------------------------------------------------------------------
    def verify(self) -> Report:
        """Check every adapter in full (see `check`), the manifest against the folders, presets and
        leftovers. A root that is not a folder is an error, not an empty clean library."""
        self.require()
        report = Report([], [], [], [], [], [], [str(p) for p in self._leftovers()])
        listed = {}
        for row in self.manifest().get("adapters", []):
            listed[row["path"]] = row
            folder = self.root / row["path"]
            if not (folder / WEIGHTS).is_file() or not (folder / CARD).is_file():
                report.missing.append(row["path"])
        for folder in self._folders():
            rel = str(folder.relative_to(self.root))
            if not (folder / CARD).is_file():
                report.orphaned.append(f"{rel} (no {CARD})")
                continue
            try:
                card = check_card(folder)
            except IntegrityError as err:
                report.corrupt.append(f"{rel}: {err}")
                continue
            try:
                check_place(folder, card)
            except IntegrityError as err:
                report.misplaced.append(f"{rel}: {err}")
                continue
            if rel not in listed:
                report.orphaned.append(f"{rel} (not in {MANIFEST})")
            if is_stale(card.get("preset", {})):
                report.stale.append(f"{rel} (preset {card['preset'].get('name')!r} changed)")
            else:
                report.ok.append(rel)
        return report

