"""Fetching public data once into the cache.

`bigbench`: downloads the `bigbench==1.0.0` source distribution from PyPI with pip (358 MB, once),
extracts only the `task.json` files of `bigbench/benchmark_tasks/` into
`$LORAOCEAN_HOME/data/bigbench/<task>/...`, then deletes the archive. Written atomically: an
interrupted fetch leaves no folder that looks complete.
"""

from __future__ import annotations

import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

from loraocean.artifacts import atomic_dir, write_json_atomic
from loraocean.errors import LoraOceanError
from loraocean.paths import cache_dir

BIGBENCH_SPEC = "bigbench==1.0.0"
TASKS_PREFIX = "bigbench/benchmark_tasks/"


def extract_bigbench(archive: Path, dest: Path) -> int:
    """Copy every benchmark_tasks/**/task.json of the sdist into `dest`; returns the count."""
    count = 0
    try:
        tar = tarfile.open(archive, "r:gz")
    except (tarfile.TarError, OSError) as err:
        raise LoraOceanError(f"{archive}: not a readable .tar.gz ({err}); download it again "
                             "or let `loraocean data fetch bigbench` download it") from None
    with tar:
        for member in tar:
            name = member.name
            if not (member.isfile() and name.endswith("/task.json") and TASKS_PREFIX in name):
                continue
            rel = Path(name.split(TASKS_PREFIX, 1)[1])
            if rel.is_absolute() or ".." in rel.parts:
                continue
            target = dest / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            with tar.extractfile(member) as src, open(target, "wb") as out:
                out.write(src.read())
            count += 1
    if count == 0:
        raise LoraOceanError(f"{archive}: holds no {TASKS_PREFIX}**/task.json; is it the bigbench "
                             "source distribution?")
    return count


def fetch_bigbench(force: bool = False, archive: Path | None = None) -> Path:
    final = cache_dir("data") / "bigbench"
    if (final / "FETCHED.json").is_file() and not force:
        return final
    with tempfile.TemporaryDirectory() as tmp:
        if archive is None:
            cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
                   "--no-build-isolation", "-d", tmp, BIGBENCH_SPEC]
            proc = subprocess.run(cmd, capture_output=True, text=True)
            found = sorted(Path(tmp).glob("bigbench-*.tar.gz"))
            if not found:
                raise LoraOceanError(f"could not download {BIGBENCH_SPEC} from PyPI "
                                     f"({proc.stderr.strip().splitlines()[-1:] or 'no output'}); "
                                     "check network access to PyPI, or set LORAOCEAN_BIGBENCH to a "
                                     "folder of BIG-bench task.json files")
            archive = found[0]
        with atomic_dir(final, overwrite=True) as out:
            count = extract_bigbench(archive, out)
            write_json_atomic(out / "FETCHED.json", {"source": BIGBENCH_SPEC, "task_files": count,
                                                     "license": "Apache-2.0"})
    return final


FETCHERS = {"bigbench": fetch_bigbench}
