"""Hugging Face datasets (`hf:<dataset id>[:<config>[,<config>...]]`), from the hub or from local
files in the data set's public layout.

Rows are read with `datasets.load_dataset`, so their fields and types are exactly what the hub
serves, then mapped to `Example`s by the task's converter (`loraocean.tasks.converters`).

Local layout (`--from PATH`): the files of a hub data set repository, e.g.
`PATH/ARC-Challenge/test-00000-of-00001.parquet` or `PATH/data/train-00000-of-00001.parquet`;
`<split>.jsonl` / `<split>.json` / `<split>.parquet` files directly in PATH work too.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path

from loraocean.artifacts import read_text
from loraocean.errors import DataError, LoraOceanError
from loraocean.tasks.converters import CONVERTERS, RowError
from loraocean.tasks.example import Example, TaskSpec
from loraocean.tasks.sources.base import reader

EXTENSIONS = ("parquet", "jsonl", "json")


@dataclass(frozen=True)
class HubSource:
    dataset: str
    configs: tuple[str | None, ...]


def parse(ref: str) -> HubSource:
    """`allenai/ai2_arc:ARC-Challenge` -> HubSource('allenai/ai2_arc', ('ARC-Challenge',))."""
    dataset, _, configs = ref.partition(":")
    return HubSource(dataset, tuple(c for c in configs.split(",") if c) or (None,))


def source_splits(spec: TaskSpec) -> list[str]:
    """The source splits a task reads, in order."""
    return list(dict.fromkeys(theirs for _, theirs in spec.split_policy.source_splits))


def split_files(root: Path, config: str | None, split: str) -> list[Path]:
    """Files of one split of one config in a local copy of a hub data set repository: the
    repository's own layout (`<config>/<split>-00000-of-00001.parquet`, `data/<split>-*.parquet`)
    or the hub's Parquet conversion (`<config or default>/<split>/0000.parquet`)."""
    folders = ([root / config, root / config / "data"] if config else [root / "default"])
    folders += [root / "data", root]
    for folder in folders:
        for ext in EXTENSIONS:
            found = sorted(folder.glob(f"{split}-*.{ext}")) + sorted(folder.glob(f"{split}.{ext}"))
            found = found or sorted((folder / split).glob(f"*.{ext}"))
            if found:
                return found
    return []


def read_file_rows(path: Path) -> list[dict]:
    """Rows of one local file. Parquet goes through `datasets` (the hub's own types); JSON Lines
    and JSON are parsed line by line so a malformed line is reported with its number."""
    path = Path(path)
    if path.suffix == ".parquet":
        import datasets
        import pyarrow
        import pyarrow.parquet

        try:
            pyarrow.parquet.ParquetFile(path).close()  # the footer, before datasets logs its own error
            with tempfile.TemporaryDirectory() as cache:
                return datasets.load_dataset("parquet", data_files=[str(path)], split="train",
                                             cache_dir=cache).to_list()
        except (pyarrow.ArrowException, datasets.exceptions.DatasetGenerationError) as err:
            raise DataError(path, f"not a readable Parquet file ({str(err).splitlines()[0]})",
                            fix="re-download it or give the data as JSON Lines") from None
    text = read_text(path)
    if path.suffix == ".json" and text.lstrip().startswith("["):
        try:
            rows = json.loads(text)
        except json.JSONDecodeError as err:
            raise DataError(path, f"malformed JSON ({err.msg})", line=err.lineno) from None
    else:
        rows = []
        for n, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as err:
                raise DataError(path, f"malformed JSON ({err.msg} at column {err.colno})",
                                line=n) from None
    for n, row in enumerate(rows, start=1):
        if not isinstance(row, dict):
            raise DataError(path, f"expected a JSON object per row, got {type(row).__name__}",
                            line=n)
    return rows


def load_rows(src: HubSource, config: str | None, split: str, revision: str = "main",
              from_path: str | Path | None = None) -> tuple[list[dict], str]:
    """(rows, where) for one split: `where` names the file or hub split in error messages."""
    if from_path is not None:
        root = Path(from_path)
        files = split_files(root, config, split) if root.is_dir() else []
        if not files:
            looked = f"{root}/{config + '/' if config else ''}{split}-*.parquet|jsonl|json"
            raise LoraOceanError(f"no files for split {split!r} of {src.dataset}"
                                 f"{':' + config if config else ''} in {root} (looked for {looked}); "
                                 "lay the files out as the hub repository does")
        if len(files) == 1:
            return read_file_rows(files[0]), str(files[0])
        # Several shards: rows numbered across the shards in file order.
        return [row for f in files for row in read_file_rows(f)], f"{files[0].parent}/{split}-*"
    import datasets

    try:
        ds = datasets.load_dataset(src.dataset, config, split=split, revision=revision)
    except Exception as err:  # network, missing data set, gated repository: all user-fixable
        raise LoraOceanError(
            f"could not load {src.dataset}{':' + config if config else ''} split {split!r} from the "
            f"Hugging Face hub ({type(err).__name__}: {str(err).splitlines()[0][:200] if str(err) else ''}); "
            "check the network, or download the data set's files and use `loraocean tasks prepare "
            "TASK --from PATH`") from None
    return ds.to_list(), f"hub:{src.dataset}{'/' + config if config else ''}/{split}"


def convert_rows(rows: list[dict], spec: TaskSpec, where: str, prefix: str) -> list[Example]:
    """Each row through the task's converter; a bad row -> DataError (where, row number, field)."""
    convert = CONVERTERS[spec.name]
    out = []
    for i, row in enumerate(rows):
        try:
            out.append(convert(row, f"{prefix}-{i:06d}", spec.name))
        except RowError as err:
            raise DataError(where, err.problem, line=i + 1, field=err.field,
                            fix=f"the {spec.name} converter expects the public schema of "
                                f"{spec.source.partition(':')[2]}") from None
    return out


def load_task(spec: TaskSpec, from_path: str | Path | None = None) -> dict[str, list[Example]]:
    """Every source split a task uses, converted: {source split: examples}."""
    src = parse(spec.source.partition(":")[2])
    out: dict[str, list[Example]] = {}
    for split in source_splits(spec):
        examples: list[Example] = []
        for config in src.configs:
            rows, where = load_rows(src, config, split, spec.revision, from_path)
            prefix = f"{spec.name}-{config + '-' if len(src.configs) > 1 else ''}{split}"
            examples += convert_rows(rows, spec, where, prefix)
        out[split] = examples
    return out


@reader("hf")
def read_hub(ref: str, spec, from_path: str | Path | None = None):
    return load_task(spec, from_path)
