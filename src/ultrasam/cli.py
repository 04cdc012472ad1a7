"""``ultrasam <verb>``: a thin shell; each verb parses arguments and calls one library function.

Verbs are registered by small modules under ``ultrasam.commands`` (one per area) so that the
parser stays readable and optional dependencies are imported only when a verb runs.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

# Each module defines ``register(subparsers)`` adding its verbs with ``set_defaults(func=...)``.
COMMAND_MODULES = ("core", "data", "train", "evaluate", "serve", "track", "export")


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
    except (ValueError, TypeError, FileNotFoundError, KeyError, RuntimeError, ImportError) as e:
        # User-facing errors: one line, non-zero exit, no traceback (use -v for details).
        if args.verbose:
            raise
        print(f"ultrasam {args.command}: error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
