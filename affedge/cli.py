"""The ``affedge`` console command.

Each subcommand lives in ``affedge/commands/<name>.py`` and exposes ``HELP`` (one line),
``add_arguments(parser)`` and ``run(args) -> int``. Command modules must import only light
modules at top level (no torch): heavy imports happen inside ``run``.
"""
from __future__ import annotations

import argparse
import importlib
import sys

# order shown in --help
COMMANDS = ("demo", "run", "train", "synth", "export", "bench", "doctor")


def build_parser() -> argparse.ArgumentParser:
    from affedge import __version__

    parser = argparse.ArgumentParser(
        prog="affedge",
        description="Continuous valence/arousal recognition from face video and speech.",
    )
    parser.add_argument("--version", action="version", version=f"affedge {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        mod = importlib.import_module(f"affedge.commands.{name}")
        p = sub.add_parser(name, help=mod.HELP, description=mod.HELP)
        mod.add_arguments(p)
        p.set_defaults(_run=mod.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return 2
    try:
        return int(args._run(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (FileNotFoundError, ValueError, RuntimeError, ImportError) as exc:
        # user-facing errors: one clear line, no traceback (AFFEDGE_DEBUG=1 shows it)
        import os

        if os.environ.get("AFFEDGE_DEBUG"):
            raise
        print(f"affedge {args.command}: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
