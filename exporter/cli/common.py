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


def echo(message: str = "") -> None:
    """Progress and results go to stdout."""
    click.echo(message)


def warn(message: str) -> None:
    """Warnings go to stderr."""
    click.echo(f"warning: {message}", err=True)
