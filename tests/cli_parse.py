"""Parsing a ``headcount`` command line with the real CLI without running it."""

from __future__ import annotations

import click

from headcount.cli import cli


def parse_command(args: list[str]) -> click.Context:
    """Resolve the subcommand chain and parse each level's options without
    running anything; click.UsageError for an unknown command or option."""
    ctx = cli.make_context("headcount", list(args))
    command: click.Command = cli
    while isinstance(command, click.Group):
        protected = getattr(ctx, "_protected_args", None)
        rest = [*(ctx.protected_args if protected is None else protected), *ctx.args]
        name, sub, sub_args = command.resolve_command(ctx, rest)
        assert name is not None and sub is not None
        ctx = sub.make_context(name, sub_args, parent=ctx)
        command = sub
    return ctx
