"""Finding a study file by path or by name.

The shipped studies live in the repository's `studies/` folder (not inside the package, so users
read and copy them as plain files). A name like `lite` is looked up in `./studies/` first, then in
the `studies/` folder of the source checkout the package runs from (an editable install or a
clone). From a wheel install there is no such folder: pass a path to a YAML file.
"""

from __future__ import annotations

from pathlib import Path

from loraocean.errors import ConfigError

DEFAULT = "lite"


def shipped_dir() -> Path:
    """`studies/` beside `src/` of the checkout this package is imported from."""
    return Path(__file__).resolve().parents[3] / "studies"


def find_study(ref: str | None = None) -> Path:
    ref = ref or DEFAULT
    path = Path(ref).expanduser()
    if path.is_file():
        return path
    if path.suffix in (".yaml", ".yml") or "/" in ref:
        raise ConfigError(f"study config {ref} not found")
    folders = [Path.cwd() / "studies", shipped_dir()]
    for folder in folders:
        for suffix in (".yaml", ".yml"):
            if (folder / f"{ref}{suffix}").is_file():
                return folder / f"{ref}{suffix}"
    names = sorted({p.stem for f in folders if f.is_dir() for p in f.glob("*.y*ml")})
    raise ConfigError(f"no study named {ref!r} (looked in {', '.join(str(f) for f in folders)}; "
                      f"known: {', '.join(names) or 'none'}); give a path to a YAML file")
