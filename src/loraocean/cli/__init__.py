"""The `loraocean` command: one sub-command group per stage, each in its own module here.

Thin by design: parse options, call the library, print. Errors a user can cause
(`LoraOceanError`) are printed as one line and exit with code 2, without a traceback.
"""

from __future__ import annotations

import errno
import os
import sys

import typer

from loraocean.errors import LoraOceanError

app = typer.Typer(
    name="loraocean",
    help="LoRAOcean: build LoRA libraries, combine them with LoRA-MoE methods, evaluate, report.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


def _register() -> None:
    """Add every command group once (main() may be called many times in one process, e.g. by tests)."""
    if app.registered_groups:
        return
    from loraocean.cli import data, tasks

    app.add_typer(data.app, name="data")
    app.add_typer(tasks.app, name="tasks")
    for module in ("train", "evaluate", "library", "moe", "select", "atlas", "study", "leaderboard", "harness"):
        try:
            mod = __import__(f"loraocean.cli.{module}", fromlist=["register"])
        except ModuleNotFoundError as err:
            if err.name != f"loraocean.cli.{module}":
                raise
            continue
        mod.register(app)


def quiet_libraries() -> None:
    """Keep library progress bars and info logs out of our output."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
    except ImportError:
        pass


# Errors of the storage itself, not of the command: one line, exit 2. Every artifact is written
# atomically, so what was finished before stays; the same command run again completes it.
STORAGE_ERRORS = {errno.ENOSPC: "the disk is full", errno.EDQUOT: "the disk quota is used up",
                  errno.EROFS: "the file system is read-only"}


def storage_error(err: OSError) -> str | None:
    """The one line for a full or read-only disk (None for any other OSError)."""
    if err.errno not in STORAGE_ERRORS:
        return None
    where = f"cannot write {err.filename}" if err.filename else "cannot write"
    return (f"{where}: {STORAGE_ERRORS[err.errno]} ({errno.errorcode[err.errno]}); finished work is "
            "kept: free space (or use a writable folder) and run the same command again")


def main(argv: list[str] | None = None) -> None:
    quiet_libraries()
    _register()
    try:
        app(args=argv, standalone_mode=True)
    except LoraOceanError as err:
        typer.echo(f"error: {err}", err=True)
        sys.exit(2)
    except OSError as err:
        line = storage_error(err)
        if line is None:
            raise
        typer.echo(f"error: {line}", err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        sys.exit(130)


if __name__ == "__main__":
    main()
