"""The ``torchtcn`` command: a thin dispatcher over ``torchtcn.commands.*``.

Each sub-command lives in its own module under ``torchtcn/commands/`` exposing
``add_parser(subparsers)`` (which sets ``func`` on its parser) and does its work through the
library; this file only wires them together.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import signal
import sys

# Sub-command modules, in the order ``torchtcn --help`` lists them.
COMMAND_MODULES = ["summary", "bench", "export", "train", "eval", "forecast", "report", "demo",
                   "download"]


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = argparse.ArgumentParser(
        prog="torchtcn", description="Temporal Convolutional Networks for PyTorch."
    )
    parser.add_argument("--version", action="version", version=f"torchtcn {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in COMMAND_MODULES:
        importlib.import_module(f"torchtcn.commands.{name}").add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # what a report records as its command
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="%(message)s"
    )
    try:
        return int(args.func(args) or 0)
    except (ValueError, TypeError, OSError) as e:
        # Library errors already name what was expected and found: show them, not a traceback.
        # OSError: missing files, and a checkpoint that could not be written (disk full).
        print(f"torchtcn {args.command}: error: {e}", file=sys.stderr)
        return 2
    except ImportError as e:
        # an optional dependency that is not installed: its hint says what to install
        if "pip install" not in str(e):
            raise
        print(f"torchtcn {args.command}: error: {e}", file=sys.stderr)
        return 2
    except (MemoryError, RuntimeError) as e:
        # sizes the machine cannot hold (channels=8*10000000000): torch's allocator says so
        # in a RuntimeError; any other RuntimeError is a bug and keeps its traceback
        allocation = "allocate" in str(e) or "out of memory" in str(e)
        if not (isinstance(e, MemoryError) or allocation):
            raise
        print(f"torchtcn {args.command}: error: out of memory ({e or 'MemoryError'}); use "
              "smaller settings", file=sys.stderr)
        return 2
    except KeyboardInterrupt as e:
        # Ctrl-C outside a training step, or a second signal during one: no traceback; the
        # shell's 128 + signal number. (A training run's checkpoints are written atomically:
        # its last.ckpt is the last complete one, and --resume continues from it.)
        name = getattr(e, "signal_name", "SIGINT")
        print(f"torchtcn {args.command}: interrupted ({name})", file=sys.stderr)
        return 128 + signal.Signals[name].value


if __name__ == "__main__":
    sys.exit(main())
