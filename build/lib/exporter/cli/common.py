"""Shared CLI plumbing: typed errors → exit codes and one-line messages, never a traceback."""

from __future__ import annotations

import functools
import sys

import click

from exporter.errors import CheckFailed, UserError


def handle_errors(func):
    """Run a command; UserError → exit 2, CheckFailed → exit 1, each with one line on stderr."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except UserError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(exc.exit_code)
        except CheckFailed as exc:
            click.echo(f"check failed: {exc}", err=True)
            sys.exit(exc.exit_code)
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            sys.exit(130)

    return wrapper


class OneLineErrors(click.Group):
    """A click group whose usage errors (bad option value, missing file argument) are one line, exit 2.

    Click's own format is three lines (usage, hint, error); the toolkit promises one line naming the problem.
    """

    def main(self, *args, standalone_mode: bool = True, **kwargs):
        if not standalone_mode:
            return super().main(*args, standalone_mode=False, **kwargs)
        try:
            value = super().main(*args, standalone_mode=False, **kwargs)
        except click.exceptions.NoArgsIsHelpError as exc:  # a bare group: its help, as click prints it
            click.echo(exc.format_message(), err=True)
            sys.exit(exc.exit_code)
        except click.UsageError as exc:
            command = f"{exc.ctx.command_path}: " if exc.ctx is not None else ""
            click.echo(f"error: {command}{exc.format_message()} (see --help)", err=True)
            sys.exit(exc.exit_code)
        except click.ClickException as exc:
            click.echo(f"error: {exc.format_message()}", err=True)
            sys.exit(exc.exit_code)
        except click.Abort:
            click.echo("aborted", err=True)
            sys.exit(1)
        sys.exit(value if isinstance(value, int) else 0)


def echo(message: str = "") -> None:
    """Progress and results go to stdout."""
    click.echo(message)


def warn(message: str) -> None:
    """Warnings go to stderr."""
    click.echo(f"warning: {message}", err=True)
