"""The ``proxywasm`` command."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .build import build
from .bundle import BuildError


def _build(args: argparse.Namespace) -> int:
    source = Path(args.path)
    out = (
        Path(args.output)
        if args.output
        else Path(source.stem if source.is_file() else source.name).with_suffix(".wasm")
    )
    result = build(source, Path(args.requirements) if args.requirements else None)
    out.write_bytes(result.module)
    deps = f", bundled {', '.join(result.bundle.dependencies)}" if result.bundle.dependencies else ""
    print(
        f"built {out} ({len(result.module) / 1e6:.1f} MB, {result.memory_bytes / 1e6:.1f} MB memory{deps}) "
        f"in {result.seconds:.1f}s"
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="proxywasm", description="Envoy proxy-wasm filters in Python")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("build", help="build a filter into one .wasm module Envoy loads")
    p.add_argument("path", help="a filter .py file or package directory")
    p.add_argument("-o", "--output", help="output .wasm path (default: <name>.wasm)")
    p.add_argument("-r", "--requirements", help="requirements file of pure-Python dependencies to bundle")
    p.set_defaults(func=_build)
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except BuildError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
