"""Atomic writes and hashing (loraocean.artifacts)."""

from __future__ import annotations

import hashlib
import json
import os

import pytest

from loraocean.artifacts import atomic_dir, hash_obj, sha256_file, write_json_atomic


def test_atomic_dir_crash_leaves_nothing_finished(tmp_path):
    final = tmp_path / "adapter"
    with pytest.raises(RuntimeError):
        with atomic_dir(final) as tmp:
            (tmp / "adapter_model.safetensors").write_bytes(b"half")
            raise RuntimeError("simulated crash mid-save")
    assert not final.exists()
    assert [p.name for p in tmp_path.iterdir()] == []


def test_atomic_dir_success_and_overwrite(tmp_path):
    final = tmp_path / "x"
    with atomic_dir(final) as tmp:
        (tmp / "a.txt").write_text("one")
    assert (final / "a.txt").read_text() == "one"
    with pytest.raises(FileExistsError):
        with atomic_dir(final) as tmp:
            (tmp / "a.txt").write_text("two")
    assert (final / "a.txt").read_text() == "one"
    with atomic_dir(final, overwrite=True) as tmp:
        (tmp / "a.txt").write_text("two")
    assert (final / "a.txt").read_text() == "two"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x"]


def test_write_json_atomic_and_hashes(tmp_path):
    path = write_json_atomic(tmp_path / "sub" / "card.json", {"b": 1, "a": [1, 2]})
    assert json.loads(path.read_text()) == {"a": [1, 2], "b": 1}
    assert sha256_file(path) == hashlib.sha256(path.read_bytes()).hexdigest()
    assert hash_obj({"a": 1, "b": 2}) == hash_obj({"b": 2, "a": 1})
    assert hash_obj({"a": 1}) != hash_obj({"a": 2})
    assert not [p for p in os.listdir(tmp_path / "sub") if p.endswith(".tmp")]
