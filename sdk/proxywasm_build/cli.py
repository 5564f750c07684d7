"""The ``proxywasm`` command."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .build import build
from .bundle import BuildError
from .envoy import EnvoyError


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
        f"built {out} ({len(result.module) / 1e6:.1f} MB; each VM in Envoy: "
        f"{result.resident_bytes / 1e6:.2f} MB resident memory{deps}) "
        f"in {result.seconds:.1f}s"
    )
    return 0


def _run(args: argparse.Namespace) -> int:
    from .run import RunError, RunOptions, parse_cluster, run

    configuration = args.config
    try:
        if configuration is not None and configuration.startswith("@"):
            configuration = Path(configuration[1:]).read_text()
        clusters = tuple(parse_cluster(text) for text in args.cluster)
    except (OSError, RunError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    options = RunOptions(
        source=Path(args.path),
        configuration=configuration,
        port=args.port,
        admin_port=args.admin_port,
        upstream=args.upstream,
        watch=args.watch,
        root_id=args.root_id,
        concurrency=args.concurrency,
        clusters=clusters,
        stats_tags=args.stats_tags,
    )
    return run(options)


def _package(args: argparse.Namespace) -> int:
    from .package import package

    try:
        result = package(
            Path(args.module), Path(args.output) if args.output else None, args.image, args.format, args.root_id
        )
    except (OSError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    for image, ref in zip(result.images, result.refs, strict=True):
        print(f"{image.variant} image {ref}: {image.digest}")
    print(f"wrote {result.output} (OCI image layout) and {result.wasmplugin}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="proxywasm", description="Envoy proxy-wasm filters in Python")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("build", help="build a filter into one .wasm module Envoy loads")
    p.add_argument("path", help="a filter .py file or package directory")
    p.add_argument("-o", "--output", help="output .wasm path (default: <name>.wasm)")
    p.add_argument("-r", "--requirements", help="requirements file of pure-Python dependencies to bundle")
    p.set_defaults(func=_build)

    p = sub.add_parser("run", help="build a filter and serve it through a real Envoy on 127.0.0.1")
    p.add_argument("path", help="a filter .py file or package directory")
    p.add_argument("--config", help="plugin configuration: a JSON string, or @file")
    p.add_argument("--port", type=int, default=10000, help="listener port (default 10000)")
    p.add_argument("--admin-port", type=int, default=0, help="Envoy admin port (default: any free port)")
    p.add_argument("--upstream", help="HOST:PORT to proxy to (default: a demo echo server)")
    p.add_argument("--watch", action="store_true", help="rebuild and hot-swap the filter on every save")
    p.add_argument("--root-id", default="", help="the plugin's root_id")
    p.add_argument("--concurrency", type=int, default=1, help="Envoy worker threads")
    p.add_argument(
        "--cluster",
        action="append",
        default=[],
        metavar="NAME=HOST:PORT",
        help="a cluster the filter's callouts can reach (repeatable); NAME=h2c://HOST:PORT speaks HTTP/2 (gRPC)",
    )
    p.add_argument(
        "--stats-tags",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="turn the filter's labelled metrics into Prometheus labels (Envoy stats_tags; default: on)",
    )
    p.set_defaults(func=_run)

    p = sub.add_parser("package", help="write an OCI image of a module for Istio (no Docker) and its WasmPlugin")
    p.add_argument("module", help="a built .wasm module")
    p.add_argument("-o", "--output", help="layout directory, or FILE.tar (default: <module>.oci/)")
    p.add_argument("--image", help="NAME:TAG the WasmPlugin url points at (default: <module>:latest)")
    p.add_argument("--format", choices=["compat", "oci", "both"], default="compat", help="image variant(s)")
    p.add_argument("--root-id", action="append", default=[], help="root_id(s) the module serves (metadata)")
    p.set_defaults(func=_package)
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except BuildError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    except EnvoyError as err:
        print(f"error: Envoy could not serve the filter: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
