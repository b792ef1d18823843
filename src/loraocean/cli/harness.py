"""`loraocean lm-eval`: lm-evaluation-harness's own command line with the `loraocean` model
registered, so base models, LoRAs and MoE checkpoints run on lm-eval's tasks (stock ones, or ours
written by `loraocean tasks export --to lm-eval DIR` and found with `--include_path DIR`)."""

from __future__ import annotations

import typer

HELP = """Run lm-eval with the `loraocean` model registered; every argument goes to lm-eval.

    loraocean lm-eval --model loraocean --model_args model=smollm2-135m,adapter=DIR --tasks arc_easy

`adapter` is a LoRA folder or an MoE checkpoint; `--help` prints lm-eval's own help."""


def lm_eval_command(ctx: typer.Context) -> None:
    from loraocean.bridges.lm_eval_bridge import run_cli  # MissingPackageError without lm-eval

    run_cli(list(ctx.args))


def register(app: typer.Typer) -> None:
    app.command("lm-eval", help=HELP, add_help_option=False,
                context_settings={"allow_extra_args": True, "ignore_unknown_options": True})(lm_eval_command)
