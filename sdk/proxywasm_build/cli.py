"""The ``proxywasm`` command."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .build import STATS_CONFIG_HEADER, build, stats_config_path, stats_config_yaml
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
    stats = stats_config_path(out)
    if result.labelled_metrics:
        stats.write_text(stats_config_yaml(result, str(source)))
        labels = ", ".join(tag["tag_name"] for tag in result.stats_tags)
        print(f"wrote {stats}: the stats_config that gives its metrics' labels ({labels}) to Envoy's")
        print("  /stats/prometheus; merge it into the Envoy bootstrap (proxywasm run does)")
    elif stats.exists() and stats.read_text().startswith(STATS_CONFIG_HEADER):
        stats.unlink()  # from an earlier build of this filter; it declares no labels now
    return 0


def _run(args: argparse.Namespace) -> int:
    from .run import RunOptions, run

    configuration = args.config
    if configuration is not None and configuration.startswith("@"):
        configuration = Path(configuration[1:]).read_text()
    options = RunOptions(
        source=Path(args.path),
        configuration=configuration,
        port=args.port,
        admin_port=args.admin_port,
        upstream=args.upstream,
        watch=args.watch,
        root_id=args.root_id,
        concurrency=args.concurrency,
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
