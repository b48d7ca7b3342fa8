"""argparse value types shared by the commands: whole numbers and numbers with a lower bound."""
from __future__ import annotations

import argparse
import math


def at_least(minimum: int):
    """A ``type=`` for whole numbers >= ``minimum`` (argparse reports the bad value, exit 2)."""

    def parse(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if v < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {v}")
        return v

    parse.__name__ = f"whole number >= {minimum}"
    return parse


positive_int = at_least(1)


def thread_count(text: str) -> int:
    """A ``type=`` for ``--threads``: the backends' own check (affedge.sdk.backends.threads),
    reported by argparse under the option's name (exit 2)."""
    from affedge.sdk.backends.threads import check_thread_count

    try:
        return check_thread_count(text, "--threads")
    except ValueError as exc:
        msg = str(exc)  # "--threads=N is more ...", "--threads must be ..." -> after the name
        raise argparse.ArgumentTypeError(msg[len("--threads"):].lstrip("= ")) from None


thread_count.__name__ = "thread count"


def positive_float(text: str) -> float:
    """A ``type=`` for finite numbers > 0."""
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not (math.isfinite(v) and v > 0):
        raise argparse.ArgumentTypeError(f"must be a number > 0, got {text}")
    return v


def non_negative_float(text: str) -> float:
    """A ``type=`` for finite numbers >= 0."""
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not (math.isfinite(v) and v >= 0):
        raise argparse.ArgumentTypeError(f"must be a number >= 0, got {text}")
    return v
