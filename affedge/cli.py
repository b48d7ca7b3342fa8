"""The ``affedge`` console command.

Each subcommand lives in ``affedge/commands/<name>.py`` and exposes ``HELP`` (one line),
``add_arguments(parser)`` and ``run(args) -> int``. Command modules must import only light
modules at top level (no torch): heavy imports happen inside ``run``.

Shared grammar (added here to every subcommand): ``-q/--quiet``, ``-v/--verbose`` (see
:mod:`affedge.log`); every option's help shows its default; a usage mistake is one line on
stderr and exit 2; a user-facing error is one line and exit 1 (``-v`` shows the traceback).
"""
from __future__ import annotations

import argparse
import importlib
import sys

# order shown in --help
COMMANDS = ("demo", "run", "serve", "train", "synth", "export", "build-engines", "bench",
            "doctor")


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Appends ``(default: X)`` to options whose help does not mention a default already and
    whose default is a value (not None / False / a suppressed one)."""

    def _get_help_string(self, action):
        h = action.help or ""
        if isinstance(action, argparse._StoreFalseAction) and "default" not in h.lower():
            return h + " (default: off)"  # a --no-x flag: it is off unless given
        if "default" in h.lower() or action.default in (None, False, argparse.SUPPRESS):
            return h
        if action.option_strings or action.nargs in (argparse.OPTIONAL, argparse.ZERO_OR_MORE):
            return h + " (default: %(default)s)"
        return h


class Parser(argparse.ArgumentParser):
    """One-line usage errors: ``affedge CMD: error: MESSAGE (see affedge CMD --help)``."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def add_common_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("output")
    x = g.add_mutually_exclusive_group()
    x.add_argument("-q", "--quiet", action="store_true",
                   help="no progress bars and no status lines; errors, the result and "
                        "warnings about damaged input are still printed")
    x.add_argument("-v", "--verbose", action="store_true",
                   help="debug detail, third-party warnings and error tracebacks (replaces "
                        "the deprecated AFFEDGE_DEBUG=1)")


def build_parser() -> argparse.ArgumentParser:
    from affedge import __version__

    parser = Parser(
        prog="affedge", formatter_class=HelpFormatter,
        description="Continuous valence/arousal recognition from face video and speech. "
                    "Every command takes -q/--quiet and -v/--verbose; progress bars appear "
                    "only on a terminal (not under CI=true, TERM=dumb or NO_COLOR).",
    )
    parser.add_argument("--version", action="version", version=f"affedge {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    for name in COMMANDS:
        mod = importlib.import_module(f"affedge.commands.{name.replace('-', '_')}")
        p = sub.add_parser(name, help=mod.HELP, description=mod.HELP,
                           formatter_class=HelpFormatter)
        mod.add_arguments(p)
        add_common_arguments(p)
        p.set_defaults(_run=mod.run)
    return parser


#: the extra (pyproject.toml) that installs each optional top-level module
EXTRA_FOR = {"torch": "train", "safetensors": "train", "onnx": "train", "onnxscript": "train",
             "tqdm": "train", "av": "video-audio", "pyaudio": "audio", "openvino": "openvino",
             "zmq": "serve", "websockets": "serve", "cryptography": "sign",
             "tensorrt": "tensorrt"}


def _user_error(exc: BaseException) -> str | None:
    """The one-line message for an error caused by the user's input or machine, else None."""
    if isinstance(exc, OSError) and exc.strerror and exc.filename:
        return f"{exc.filename}: {exc.strerror}"
    if isinstance(exc, ModuleNotFoundError) and exc.name and "pip install" not in str(exc):
        extra = EXTRA_FOR.get(exc.name.split(".")[0])  # (a bare "No module named 'torch'")
        if extra:
            return f"{exc}: pip install 'affedge[{extra}]'"
    if isinstance(exc, (OSError, ValueError, RuntimeError, ImportError)):
        from affedge.log import one_line

        return one_line(str(exc)) or type(exc).__name__
    mod = type(exc).__module__ or ""
    if mod.startswith(("onnxruntime", "cv2")) or type(exc).__name__ == "error":
        text = str(exc).strip().splitlines()
        return f"{type(exc).__name__}: {text[0] if text else ''}"
    return None


def _keep_interrupt_handled() -> None:
    """Make the interrupt just handled stay handled, so the process exits 130 as documented.

    CPython notes a KeyboardInterrupt that escapes code run through its ``PyRun_*`` calls (an
    extension module executing Python at import does this) in a process-wide flag that nothing
    clears when the interrupt is caught further up; at exit ``python -m affedge.cli`` then ends
    the process by SIGINT instead of with our status (a parent saw -2, not 130, for 1 of 19
    Ctrl-Cs during an export's imports). Clear that flag; a no-op where it does not exist."""
    import ctypes

    try:
        ctypes.c_int.in_dll(ctypes.pythonapi, "_Py_UnhandledKeyboardInterrupt").value = 0
    except (AttributeError, ValueError, OSError):  # not CPython 3.8-3.11: nothing to clear
        pass


def _one_line_warnings(prefix: str) -> None:
    """Our own warnings (raised in affedge's code) as one ``PREFIX: warning: ...`` line, like
    the commands' other messages; anything else keeps Python's format (``-v``: all do)."""
    import os
    import warnings

    here = os.path.dirname(os.path.abspath(__file__)) + os.sep
    show = warnings.showwarning

    def one_line(message, category, filename, lineno, file=None, line=None):
        if not os.path.abspath(str(filename)).startswith(here):
            return show(message, category, filename, lineno, file, line)
        print(f"{prefix}: warning: {message}", file=sys.stderr if file is None else file)

    warnings.showwarning = one_line


def main(argv: list[str] | None = None) -> int:
    from affedge import log
    from affedge.plugins import load_plugins

    try:  # before the parser: their detectors are --detector choices
        load_plugins()
        parser = build_parser()
        args = parser.parse_args(argv)
    except ImportError as exc:
        print(f"affedge: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # (Ctrl-C in the first moments: a Hub trial got a traceback)
        _keep_interrupt_handled()
        return 130
    if not getattr(args, "command", None):
        parser.print_help()
        return 2
    log.setup(quiet_flag=args.quiet, verbose_flag=args.verbose)
    import warnings

    shown = warnings.showwarning
    if not log.verbose():
        _one_line_warnings(f"affedge {args.command}")
    try:
        return int(args._run(args) or 0)
    except KeyboardInterrupt:
        print(f"affedge {args.command}: interrupted", file=sys.stderr)
        _keep_interrupt_handled()
        return 130
    except Exception as exc:  # user-facing errors: one line, no traceback
        msg = _user_error(exc)
        if msg is None or log.verbose():
            raise
        from affedge.sdk.sources.credentials import hide_credentials

        print(f"affedge {args.command}: error: {hide_credentials(msg)}", file=sys.stderr)
        return 1
    finally:
        warnings.showwarning = shown  # (main() called in-process: leave Python's as it was)


if __name__ == "__main__":
    sys.exit(main())
