"""``ultrasam <verb>``: a thin shell; each verb parses arguments and calls one library function.

Verbs are registered by small modules under ``ultrasam.commands`` (one per area) so that the
parser stays readable and optional dependencies are imported only when a verb runs.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from .errors import UltrasamError

# The errors shown as one line: the project's own (ultrasam.errors), the OS naming a user's
# path, and ValueError, which the library's older validation raises directly (design
# principle 11) and which the project's user-input errors subclass.
USER_ERRORS: tuple[type[BaseException], ...] = (
    UltrasamError, ValueError, FileNotFoundError, IsADirectoryError, NotADirectoryError,
    PermissionError)

# Each module defines ``register(subparsers)`` adding its verbs with ``set_defaults(func=...)``.
COMMAND_MODULES = ("core", "data", "train", "evaluate", "serve", "track", "finetune",
                   "export")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ultrasam", description="Promptable ultrasound segmentation (UltraSam / SAM family).")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(f"ultrasam.commands.{name}")
        except ModuleNotFoundError as e:
            if e.name == f"ultrasam.commands.{name}":
                continue  # area not installed in this build
            raise
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except USER_ERRORS as e:
        # User-facing errors: one line, non-zero exit, no traceback (use -v for details).
        # Anything else (a TypeError, KeyError, AttributeError, ... from a bug) keeps its
        # traceback.
        if args.verbose:
            raise
        lines = str(e).strip().splitlines() or [type(e).__name__]
        print(f"ultrasam {args.command}: error: {lines[0]}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
