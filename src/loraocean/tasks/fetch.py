"""Fetching public data once into the cache.

`bigbench`: downloads the `bigbench==1.0.0` source distribution from PyPI (358 MB, once),
checks its SHA-256, extracts only the `task.json` files of `bigbench/benchmark_tasks/` into
`$LORAOCEAN_HOME/data/bigbench/<task>/...`, then deletes the archive. Written atomically: an
interrupted fetch leaves no folder that looks complete.

Why not `pip download`: pip 24 and later refuse this sdist while preparing its metadata (it declares
a direct-URL dependency, bleurt), even with --no-deps. So the archive's address is read from the
package index's simple page (PEP 503, the page pip itself reads; `$PIP_INDEX_URL` when set) and
verified against the SHA-256 the index publishes.
"""

from __future__ import annotations

import hashlib
import os
import re
import tarfile
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from loraocean.artifacts import atomic_dir, write_json_atomic
from loraocean.errors import LoraOceanError
from loraocean.paths import cache_dir

BIGBENCH_SPEC = "bigbench==1.0.0"
BIGBENCH_SDIST = "bigbench-1.0.0.tar.gz"
# Published on PyPI for bigbench-1.0.0.tar.gz; used when an index page gives no hash.
BIGBENCH_SHA256 = "1bb398a5512c6d798cdebe0dfa0ac03f67f6033fa6b39c6ef71df978c7cbc5c2"
TASKS_PREFIX = "bigbench/benchmark_tasks/"


def index_url() -> str:
    return (os.environ.get("PIP_INDEX_URL") or "https://pypi.org/simple").rstrip("/")


def sdist_link(index: str, project: str, filename: str) -> tuple[str, str | None]:
    """(URL, sha256 or None) of `filename` on the index's simple page of `project`."""
    page = f"{index}/{project}/"
    if page.startswith("file:"):
        page += "index.html"
    with urllib.request.urlopen(page, timeout=60) as resp:
        html = resp.read().decode("utf-8", "replace")
    for href in re.findall(r'href="([^"]+)"', html):
        url, _, fragment = href.partition("#")
        if urllib.parse.urlparse(url).path.rsplit("/", 1)[-1] == filename:
            sha = fragment[len("sha256="):] if fragment.startswith("sha256=") else None
            return urllib.parse.urljoin(page, url), sha
    raise LoraOceanError(f"{page} lists no {filename}")


def download(url: str, dest: Path, sha256: str) -> Path:
    """Stream `url` into `dest` with a progress bar; refuse it when its SHA-256 differs."""
    from rich.progress import DownloadColumn, Progress, TransferSpeedColumn

    digest = hashlib.sha256()
    with urllib.request.urlopen(url, timeout=60) as resp, open(dest, "wb") as out, \
            Progress(*Progress.get_default_columns(), DownloadColumn(), TransferSpeedColumn(),
                     transient=True) as bar:
        task = bar.add_task(dest.name, total=int(resp.headers.get("Content-Length") or 0) or None)
        while block := resp.read(1 << 20):
            out.write(block)
            digest.update(block)
            bar.advance(task, len(block))
    if digest.hexdigest() != sha256:
        raise LoraOceanError(f"{url}: SHA-256 {digest.hexdigest()} differs from the published "
                             f"{sha256}; the download is corrupt, try again")
    return dest


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
            try:
                url, sha = sdist_link(index_url(), "bigbench", BIGBENCH_SDIST)
                archive = download(url, Path(tmp) / BIGBENCH_SDIST, sha or BIGBENCH_SHA256)
            except (urllib.error.URLError, OSError) as err:
                raise LoraOceanError(f"could not download {BIGBENCH_SPEC} from {index_url()} "
                                     f"({err}); check access to PyPI, or set LORAOCEAN_BIGBENCH to a "
                                     "folder of BIG-bench task.json files") from None
        with atomic_dir(final, overwrite=True) as out:
            count = extract_bigbench(archive, out)
            write_json_atomic(out / "FETCHED.json", {"source": BIGBENCH_SPEC, "task_files": count,
                                                     "license": "Apache-2.0"})
    return final


FETCHERS = {"bigbench": fetch_bigbench}
