"""The frame shared by the four commands: logging, one-line errors, exit codes.

Library code installs no log handler; only :func:`run_command` does, once, for the
process that a user started.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable, Sequence
from typing import Any

from common.errors import ParomaError

EXIT_OK = 0
EXIT_FAILED = 1  # the command ran and its answer is "no" (a check failed)
EXIT_ERROR = 2  # bad input or a failure that stopped the command


def add_common_options(parser: argparse.ArgumentParser) -> None:
    """Add ``-v/--verbose`` to a parser (each repetition lowers the log level)."""
    parser.add_argument(
        "-v",
        "--verbose",
        action="count",
        default=0,
        help="log more (-v: info, -vv: debug)",
    )


def configure_logging(verbosity: int) -> None:
    """Send log records to stderr at WARNING, INFO (-v) or DEBUG (-vv)."""
    level = [logging.WARNING, logging.INFO, logging.DEBUG][min(verbosity, 2)]
    logging.basicConfig(
        level=level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


def print_json(value: Any) -> None:
    """Print one JSON document on stdout, for scripts."""
    print(json.dumps(value, indent=2, sort_keys=True))


def fail(message: str, code: int = EXIT_ERROR) -> int:
    """Print a one-line error for the user on stderr and return the exit code."""
    one_line = " ".join(message.split())
    print(f"error: {one_line}", file=sys.stderr)
    return code


def run_command(
    parser: argparse.ArgumentParser,
    argv: Sequence[str] | None,
    dispatch: Callable[[argparse.Namespace], int],
) -> int:
    """Parse ``argv``, configure logging, run ``dispatch`` and turn errors into exits.

    A :class:`ParomaError` becomes one line on stderr and exit status 2; so does
    an unreadable file (``OSError``) or Ctrl-C. Anything else is a bug and keeps
    its traceback.
    """
    args = parser.parse_args(argv)
    configure_logging(getattr(args, "verbose", 0))
    try:
        return dispatch(args)
    except ParomaError as exc:
        return fail(str(exc))
    except OSError as exc:
        where = f" {exc.filename}" if exc.filename else ""
        return fail(f"cannot use{where}: {exc.strerror or exc}")
    except KeyboardInterrupt:
        return fail("interrupted", 130)
