"""Writes docs/CLI.md from the click commands themselves, so the reference shows the flags and
defaults that ``--help`` shows. Run ``python docs/make_cli_md.py`` after changing a command;
tests/test_docs.py fails while the file and the commands disagree.

Only click is imported from each CLI module (torch is imported inside the commands), so this
runs in a runtime-only install too.
"""

from __future__ import annotations

import inspect
import sys
from pathlib import Path

import click

CLI_MD = Path(__file__).resolve().parent / "CLI.md"

HEADER = """\
# Command-line reference

Generated from the commands by `python docs/make_cli_md.py`; a test fails when this file and the
commands disagree. `bird-gen` comes with `pip install .`; `vae-train`, `vae-eval` and
`vae-export` need the training extra (`pip install '.[train]'`). Every command takes `-h`/`--help`.

A mistake in what a command is given (a path, a flag, a damaged file) ends it with one `error:`
line and status 2 (1 for an export step that failed or running out of memory, 130 for Ctrl-C,
143 for SIGTERM); `BIRDVAE_TRACEBACK=1` in the environment prints where it came from as well, for
a bug report. Anything else is a bug in bird-vae and prints its traceback.
"""


def _commands() -> list[tuple[str, click.Command]]:
    from birdvae.export.cli import main as export_main
    from birdvae.runtime.cli import main as bird_gen
    from birdvae.training.cli import eval_command, train_command

    return [
        ("bird-gen", bird_gen),
        ("vae-train", train_command),
        ("vae-eval", eval_command),
        ("vae-export", export_main),
    ]


def _markdown(help_text: str) -> str:
    """A command's help as Markdown: a paragraph click keeps as written (``\\b``) is code."""
    paragraphs = help_text.split("\n\n")
    return "\n\n".join(f"```\n{p[2:]}\n```" if p.startswith("\b\n") else p for p in paragraphs)


def _section(name: str, command: click.Command, parent: click.Context | None, level: int) -> str:
    ctx = click.Context(
        command, info_name=name.split()[-1], parent=parent, **command.context_settings
    )
    usage = " ".join([ctx.command_path, *command.collect_usage_pieces(ctx)])
    lines = [f"{'#' * level} `{name}`", "", f"```\n{usage}\n```", ""]
    if command.help:
        lines += [_markdown(inspect.cleandoc(command.help).split("\f")[0].strip()), ""]
    records = [p.get_help_record(ctx) for p in command.get_params(ctx)]
    for flags, text in (r for r in records if r is not None):
        text = " ".join(text.split())
        lines.append(f"- `{flags}`" + (f": {text}" if text else ""))
    lines.append("")
    if isinstance(command, click.Group):
        for sub_name in command.list_commands(ctx):
            sub = command.get_command(ctx, sub_name)
            if sub is not None and not sub.hidden:
                lines.append(_section(f"{name} {sub_name}", sub, ctx, level + 1))
    return "\n".join(lines)


def render() -> str:
    """The whole of docs/CLI.md, as the installed commands describe themselves."""
    sections = [_section(name, command, None, 2) for name, command in _commands()]
    return HEADER + "\n" + "\n".join(sections).rstrip() + "\n"


if __name__ == "__main__":
    CLI_MD.write_text(render(), encoding="utf-8")
    print(f"wrote {CLI_MD}", file=sys.stderr)
