"""The ``st-mnr-plus`` command line."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from st_mnr_plus import __version__, registry

logger = logging.getLogger(__name__)


def _cmd_components(args: argparse.Namespace) -> int:
    kinds = [args.kind] if args.kind else list(registry.KINDS)
    for kind in kinds:
        print(f"{kind}:")
        for name in registry.names(kind):
            component = registry.get(kind, name)
            where = registry.source(kind, name)
            print(f"  {name:<22} {component.__module__}.{component.__qualname__}  [{where}]")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="st-mnr-plus", description=__doc__)
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    components = sub.add_parser("components", help="List the registered components (built-in and plugins).")
    components.add_argument("kind", nargs="?", choices=registry.KINDS)
    components.set_defaults(func=_cmd_components)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        return args.func(args)
    except (KeyError, ValueError, FileNotFoundError) as exc:
        print(f"st-mnr-plus: error: {exc}", file=sys.stderr)
        return 2
