"""Command-line plumbing: user errors print one line on stderr and exit non-zero."""

import argparse
import sys
from collections.abc import Callable


class UserError(Exception):
    """A problem the user can fix (bad path, bad file, port in use): shown without traceback."""


class ArgumentParser(argparse.ArgumentParser):
    """argparse whose usage errors are UserErrors: one line on stderr under run_cli."""

    def error(self, message: str) -> None:
        raise UserError(f"{message} (see {self.prog} --help)")


def parsed(value: str, kind: type) -> int | float:
    """int(value) or float(value), with argparse's own message when it is not a number."""
    try:
        return kind(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid {kind.__name__} value: {value!r}") from None


def positive_int(value: str) -> int:
    number = parsed(value, int)
    if number < 1:
        raise argparse.ArgumentTypeError(f"{value} is not a positive integer")
    return number


def positive_float(value: str) -> float:
    number = parsed(value, float)
    if not number > 0:
        raise argparse.ArgumentTypeError(f"{value} is not a positive number")
    return number


def non_negative_float(value: str) -> float:
    number = parsed(value, float)
    if not number >= 0:
        raise argparse.ArgumentTypeError(f"{value} is not a non-negative number")
    return number


def fraction(value: str) -> float:
    """A share in [0, 1): 0 for none, never all."""
    number = parsed(value, float)
    if not 0 <= number < 1:
        raise argparse.ArgumentTypeError(f"{value} is not a fraction in [0, 1)")
    return number


def non_negative_int(value: str) -> int:
    number = parsed(value, int)
    if number < 0:
        raise argparse.ArgumentTypeError(f"{value} is negative")
    return number


def run_cli(main: Callable[[], int | None]) -> None:
    """Run a command's main(), turning UserError and Ctrl-C into a one-line exit."""
    try:
        code = main()
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    sys.exit(code or 0)
