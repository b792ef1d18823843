"""An adapter's `card.json` and the integrity record it carries.

`write_card` records the size and sha256 of every adapter file (`files`) and seals the card with
the sha256 of its own canonical JSON (`card_sha256`, over every other field). `check_card` redoes
both, so a changed `lora_alpha` in adapter_config.json, one flipped byte of the weights or an
edited card value is caught before the adapter is used. This guards against damage and stray
edits; it is not a signature (whoever can rewrite the folder can rewrite the record too).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from loraocean.artifacts import sha256_file, to_json, write_json_atomic
from loraocean.errors import IntegrityError, LoraOceanError
from loraocean.library.adapter import CONFIG, WEIGHTS

CARD = "card.json"
CARD_VERSION = 2  # 2: `files` and `card_sha256` (integrity of the config, the weights and the card)
ADAPTER_FILES = (CONFIG, WEIGHTS)
REBUILD = "remove the folder and rebuild (or re-import) the adapter"


def _seal(card: dict) -> str:
    body = {k: v for k, v in card.items() if k != "card_sha256"}
    return hashlib.sha256(to_json(body).encode("utf-8")).hexdigest()


def seal_card(folder: str | Path, card: dict) -> dict:
    """Seal `card` (its `files` already recorded) and write it into `folder` atomically."""
    card["card_sha256"] = _seal(card)
    write_json_atomic(Path(folder) / CARD, card)
    return card


def write_card(folder: str | Path, card: dict, names: tuple[str, ...] = ADAPTER_FILES) -> dict:
    """Record the files `names` of `folder` (the weights last) in `card`, seal it and write it
    (returns the card). MoE checkpoints use it with their own file names."""
    folder = Path(folder)
    card["card_version"] = CARD_VERSION
    card["files"] = {name: {"size": (folder / name).stat().st_size, "sha256": sha256_file(folder / name)}
                     for name in names}
    card["weights_sha256"] = card["files"][names[-1]]["sha256"]
    return seal_card(folder, card)


def made_by_loraocean(folder: str | Path) -> bool:
    """Whether `folder` is a real folder (not a link) holding a card.json whose seal holds: an
    artifact loraocean wrote (a library entry, an exported adapter, an MoE checkpoint)."""
    folder = Path(folder)
    if folder.is_symlink() or not folder.is_dir() or not (folder / CARD).is_file():
        return False
    try:
        card = read_card(folder)
    except IntegrityError:
        return False
    return isinstance(card.get("card_sha256"), str) and card["card_sha256"] == _seal(card)


def check_replaceable(path: str | Path, option: str = "--overwrite") -> None:
    """Raise unless `path` is missing or an artifact loraocean wrote (`made_by_loraocean`):
    overwriting never removes a folder or file of the user's."""
    path = Path(path)
    if (path.exists() or path.is_symlink()) and not made_by_loraocean(path):
        raise LoraOceanError(f"{path} exists and is not a folder loraocean wrote (no sealed {CARD}); "
                             f"{option} only replaces loraocean's own adapters and checkpoints: "
                             "remove it yourself or choose another path")


def read_card(folder: str | Path) -> dict:
    path = Path(folder) / CARD
    try:
        card = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise IntegrityError(f"{path}: unreadable card ({err}); {REBUILD}") from None
    if not isinstance(card, dict):
        raise IntegrityError(f"{path}: a card is a JSON object, this is a {type(card).__name__}; {REBUILD}")
    return card


def check_card(folder: str | Path, card: dict | None = None,
               names: tuple[str, ...] = ADAPTER_FILES) -> dict:
    """The folder's card after checking its seal and the files `names` against their records (size
    and full sha256); raises IntegrityError naming what differs."""
    folder = Path(folder)
    card = read_card(folder) if card is None else card
    path = folder / CARD
    if "card_sha256" not in card or not isinstance(card.get("files"), dict):
        raise IntegrityError(f"{path}: no integrity record (written by an older loraocean, or not by "
                             f"loraocean at all); {REBUILD}")
    if card["card_sha256"] != _seal(card):
        raise IntegrityError(f"{path}: the card was changed after it was written (its card_sha256 does "
                             f"not match); {REBUILD}")
    for name in names:
        record, file = card["files"].get(name), folder / name
        if not isinstance(record, dict):
            raise IntegrityError(f"{path}: files.{name} is not recorded; {REBUILD}")
        if not file.is_file():
            raise IntegrityError(f"{file} is missing; {REBUILD}")
        if file.stat().st_size != record.get("size"):
            raise IntegrityError(f"{file}: {file.stat().st_size} bytes, but the card recorded "
                                 f"{record.get('size')}; the file was changed or damaged: {REBUILD}")
        actual = sha256_file(file)
        if actual != record.get("sha256"):
            raise IntegrityError(f"{file}: sha256 {actual[:12]}... does not match the card's "
                                 f"{str(record.get('sha256'))[:12]}...; the file was changed or "
                                 f"damaged: {REBUILD}")
    return card
