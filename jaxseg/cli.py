"""Runs a command-line ``main`` with one-line errors for bad data and settings.

Usage, at the bottom of an entry-point module::

  from jaxseg import cli

  def main(argv: Sequence[str] | None = None) -> None:
    args = parser.parse_args(argv)
    if args.epochs < 1:
      cli.error(f"--epochs must be a positive integer, got {args.epochs}.")
    ...

  if __name__ == "__main__":
    cli.run(main, prog="python -m experiments.seed_002_tversky")

A `jaxseg.errors.JaxsegError` (a `ConfigError` or a `DataError`, e.g. the missing manual
directory of a dataset) raised by ``main`` is printed as ``{prog}: error: {message}`` on stderr
(the style of argparse and of ``jaxseg.predict``; a message of several lines keeps its lines)
and the process exits with code 2. Ctrl-C prints ``{prog}: interrupted`` and exits with 130.
Every other exception is a bug and keeps its traceback. Set ``JAXSEG_DEBUG=1`` to get the full
traceback of the errors above as well.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

from jaxseg.errors import ConfigError, JaxsegError

__all__ = ["DEBUG_ENV", "EXIT_INTERRUPTED", "EXIT_USAGE", "debug", "error", "run"]

DEBUG_ENV = "JAXSEG_DEBUG"
"""Environment variable: set to ``1`` to re-raise errors with their traceback."""

EXIT_USAGE = 2
"""Exit status of a data or configuration error (as argparse's for bad arguments)."""

EXIT_INTERRUPTED = 130
"""Exit status after Ctrl-C (128 + SIGINT, as a shell reports it)."""


def debug() -> bool:
  """Whether ``$JAXSEG_DEBUG`` asks for tracebacks (set, and not ``0``/``false``/``no``)."""
  return os.environ.get(DEBUG_ENV, "").strip().lower() not in ("", "0", "false", "no")


def error(message: str) -> NoReturn:
  """Raises a `ConfigError` with ``message`` (which should name the flag, value and fix)."""
  raise ConfigError(message)


def run(main: Callable[[Sequence[str] | None], Any], argv: Sequence[str] | None = None, *,
        prog: str) -> Any:
  """Calls ``main(argv)`` and turns jaxseg's errors into a message and an exit status.

  Args:
    main: the entry point; takes the argument list (``None``: ``sys.argv[1:]``).
    argv: passed to ``main``.
    prog: the program name at the start of the message, e.g. ``"python -m experiments.x"``.

  Returns:
    What ``main`` returns.

  Raises:
    SystemExit: code 2 after a `JaxsegError`, 130 after `KeyboardInterrupt` (the message is on
      stderr). With ``JAXSEG_DEBUG=1`` the original exception is raised instead.
  """
  try:
    return main(argv)
  except JaxsegError as e:
    if debug():
      raise
    _print(f"{prog}: error: {_message(e)}")
    raise SystemExit(EXIT_USAGE) from None
  except KeyboardInterrupt:
    if debug():
      raise
    _print(f"{prog}: interrupted")
    raise SystemExit(EXIT_INTERRUPTED) from None


def _message(e: BaseException) -> str:
  text = str(e).strip()
  return text or type(e).__name__


def _print(text: str) -> None:
  try:
    sys.stdout.flush()  # What main printed comes before the error.
  except (OSError, ValueError):
    pass
  print(text, file=sys.stderr, flush=True)
