"""The ``proxywasm`` command."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from .build import STATS_CONFIG_HEADER, build, stats_config_path, stats_config_yaml
from .bundle import BuildError
from .compiled import CacheLimitError
from .envoy import EnvoyError


def _build(args: argparse.Namespace) -> int:
    source = Path(args.path)
    out = (
        Path(args.output)
        if args.output
        else Path(source.stem if source.is_file() else source.name).with_suffix(".wasm")
    )
    result = build(source, Path(args.requirements) if args.requirements else None)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(result.module)
    deps = f", bundled {', '.join(result.bundle.dependencies)}" if result.bundle.dependencies else ""
    deps += ", compiler kept (proxywasm.vm.keep_compiler())" if result.compiler_kept else ""
    print(
        f"built {out} ({len(result.module) / 1e6:.1f} MB; each VM in Envoy: "
        f"{result.resident_bytes / 1e6:.2f} MB resident memory{deps}) "
        f"in {result.seconds:.1f}s"
    )
    for module, file in result.bundle.left_out.items():
        note = f"note: left out {module} ({file}), a C extension: only pure-Python code runs inside Envoy"
        print(f"{note}; what the filter imported at build time works without it", file=sys.stderr)
    if result.logs:
        # Module-level code runs here, once; Envoy never runs it, so these lines are never in its log.
        print(f"note: {source} wrote this while it was built (module-level code runs once, in proxywasm build; "
              "Envoy never runs it, so these lines will not be in Envoy's log):", file=sys.stderr)  # fmt: skip
        for line in result.logs:
            print(f"  {line}", file=sys.stderr)
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
    from .run import RunError, RunOptions, parse_cluster, run

    configuration = args.config
    try:
        if configuration is not None and configuration.startswith("@"):
            configuration = Path(configuration[1:]).read_text()
        clusters = tuple(parse_cluster(text) for text in args.cluster)
        env = _pairs(args.env, "--env")
    except (OSError, RunError, ValueError) as err:
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
        env=env,
    )
    return run(options)


def _pairs(items: list[str], flag: str) -> dict[str, str]:
    pairs = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"{flag} {item!r}: expected KEY=VALUE")
        pairs[key] = value
    return pairs


def _match(text: str) -> Any:
    from .package import TrafficSelector

    mode, _, ports = text.partition(":")
    modes = ("CLIENT", "SERVER", "CLIENT_AND_SERVER")
    if mode and mode not in modes:
        raise ValueError(f"--match {text!r}: the mode is one of {', '.join(modes)} (or empty: any)")
    numbers = [p for p in ports.split(",") if p]
    if not all(p.isdigit() and 0 < int(p) < 65536 for p in numbers):
        raise ValueError(f"--match {text!r}: ports are numbers, e.g. SERVER:8080,9090")
    return TrafficSelector(mode or None, tuple(int(p) for p in numbers))  # type: ignore[arg-type]


def _istio_options(args: argparse.Namespace) -> Any:
    import json

    from .package import IstioOptions

    plugin_config = None
    if args.plugin_config:
        try:
            plugin_config = json.loads(Path(args.plugin_config).read_text())
        except json.JSONDecodeError as err:
            raise ValueError(f"--plugin-config {args.plugin_config}: not JSON ({err})") from None
        if not isinstance(plugin_config, dict):
            raise ValueError(f"--plugin-config {args.plugin_config}: Istio's pluginConfig is a JSON object")
    env: dict[str, str | None] = {}
    for item in args.env:
        key, sep, value = item.partition("=")
        if not key:
            raise ValueError(f"--env {item!r}: expected NAME=VALUE, or NAME to pass the proxy's own variable")
        env[key] = value if sep else None
    return IstioOptions(
        name=args.name,
        namespace=args.namespace,
        selector=_pairs(args.selector, "--selector"),
        phase=args.phase,
        priority=args.priority,
        match=tuple(_match(m) for m in args.match),
        fail_strategy=args.fail_strategy,
        plugin_name=args.plugin_name if args.plugin_name is not None else (args.root_id[0] if args.root_id else ""),
        plugin_config=plugin_config,
        env=env,
        type=args.type,
        image_pull_policy=args.image_pull_policy,
        image_pull_secret=args.image_pull_secret,
    )


def _package(args: argparse.Namespace) -> int:
    from .package import package
    from .registry import ImageRejected, Reference, RegistryError, pull, push

    image = args.image
    try:
        target = Reference.parse(args.push) if args.push else None
        if target is not None:
            if target.digest:
                raise ValueError(f"--push {args.push}: push to a tag (NAME:TAG); the digest is computed here")
            if image and image != args.push:
                raise ValueError(f"--image {image} and --push {args.push} differ: give only --push")
            image = str(target)
        istio = _istio_options(args)
        result = package(
            Path(args.module),
            Path(args.output) if args.output else None,
            image,
            args.format,
            args.root_id,
            istio,
            check_config=not args.no_config_check,
        )
    except (OSError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    for built, ref in zip(result.images, result.refs, strict=True):
        print(f"{built.variant} image {ref}: {built.digest}")
    print(f"wrote {result.output} (OCI image layout), {result.wasmplugin} and {result.trafficextension}")
    for note in result.notes:
        print(f"note: {note}", file=sys.stderr)
    if target is None:
        try:
            Reference.parse(result.url)
        except ValueError:  # no registry host: Istio could not pull what the manifests name
            print(
                f"note: the manifests point at {result.url}, which names no registry: push the layout (--push "
                "REGISTRY/NAME:TAG does it and checks it) or give --image REGISTRY/NAME:TAG where Istio pulls from",
                file=sys.stderr,
            )
        return 0
    try:
        pushed = push(result.images, result.refs, target, args.plain_http)
        # Read it back as Istio will: same manifest digest, a layout Istio accepts, the same module.
        check = pull(pushed[0], result.images[0].digest, args.plain_http)
    except (RegistryError, ImageRejected) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    for ref, built in zip(pushed, result.images, strict=True):
        print(f"pushed {ref}: {built.digest}")
    if check.module != Path(args.module).read_bytes():
        print(f"error: {pushed[0]} does not hold {args.module}", file=sys.stderr)
        return 1
    print(f"verified {check.reference} as Istio pulls it ({check.variant} layout, sha256 {check.digest[7:]})")
    return 0


def _pull(args: argparse.Namespace) -> int:
    from .registry import ImageRejected, RegistryError, pull

    try:
        pulled = pull(args.reference, args.sha256, args.plain_http)
    except (ValueError, RegistryError) as err:  # ImageRejected is a ValueError
        kind = "Istio would reject this image" if isinstance(err, ImageRejected) else "error"
        print(f"{kind}: {err}", file=sys.stderr)
        return 1
    out = Path(args.output) if args.output else None
    if out is not None:
        out.write_bytes(pulled.module)
    where = f", wrote {out}" if out else ""
    size = len(pulled.module)
    print(f"{pulled.reference}: {pulled.variant} layout, sha256 {pulled.digest[7:]}, module {size} bytes{where}")
    return 0


def _new(args: argparse.Namespace) -> int:
    from .new import new

    try:
        files = new(Path(args.name))
    except (OSError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(f"created {args.name}/: {', '.join(p.name for p in files)}")
    print(f"next: cd {args.name} && pytest && proxywasm run filter.py --watch")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="proxywasm", description="Envoy proxy-wasm filters in Python")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("build", help="build a filter into one .wasm module Envoy loads")
    p.add_argument("path", help="a filter .py file or package directory")
    p.add_argument("-o", "--output", help="output .wasm path (default: <name>.wasm)")
    p.add_argument("-r", "--requirements", help="requirements file of pure-Python dependencies to bundle")
    p.set_defaults(func=_build)

    p = sub.add_parser("new", help="create a filter directory: filter.py, its tests, envoy.yaml, README")
    p.add_argument("name", help="directory to create; its name names the filter (a Python identifier)")
    p.set_defaults(func=_new)

    p = sub.add_parser("run", help="build a filter and serve it through a real Envoy on 127.0.0.1")
    p.add_argument("path", help="a filter .py file or package directory")
    p.add_argument("--config", help="plugin configuration: a JSON string, or @file")
    p.add_argument(
        "--port", type=int, default=10000, help="listener port (default 10000; 0: Envoy picks a free one and prints it)"
    )
    p.add_argument("--admin-port", type=int, default=0, help="Envoy admin port (default: any free port)")
    p.add_argument("--upstream", help="HOST:PORT to proxy to (default: a demo echo server)")
    p.add_argument("--watch", action="store_true", help="rebuild and hot-swap the filter on every save")
    p.add_argument("--root-id", default="", help="the plugin's root_id")
    p.add_argument("--concurrency", type=int, default=1, help="Envoy worker threads")
    p.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a VM environment variable (repeatable): vm_config.environment_variables, os.environ in the filter",
    )
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
    p.add_argument(
        "--push", metavar="HOST[:PORT]/NAME:TAG", help="push the image(s) there and check them as Istio will"
    )
    p.add_argument(
        "--plain-http", action="store_true", default=None, help="registry without TLS (default for localhost)"
    )
    istio = p.add_argument_group("Istio manifests (WasmPlugin and TrafficExtension)")
    istio.add_argument("--name", help="metadata.name (default: from the image name)")
    istio.add_argument("--namespace", help="metadata.namespace")
    istio.add_argument("--selector", action="append", default=[], metavar="LABEL=VALUE", help="workload labels")
    istio.add_argument("--phase", choices=["AUTHN", "AUTHZ", "STATS"], help="default: just before the router")
    istio.add_argument("--priority", type=int, help="order within the phase (higher runs first)")
    istio.add_argument(
        "--match", action="append", default=[], metavar="MODE[:PORT,...]", help="traffic selector (repeatable)"
    )
    istio.add_argument(
        "--fail-strategy", choices=["FAIL_CLOSE", "FAIL_OPEN", "FAIL_RELOAD"], default="FAIL_CLOSE", help="on a crash"
    )
    istio.add_argument("--plugin-name", help="the plugin's root_id (default: the first --root-id)")
    istio.add_argument("--plugin-config", metavar="FILE.json", help="a JSON object on_configure receives")
    istio.add_argument(
        "--no-config-check", action="store_true", help="do not load the filter locally with --plugin-config first"
    )
    istio.add_argument(
        "--env", action="append", default=[], metavar="NAME[=VALUE]", help="VM environment (NAME alone: from the proxy)"
    )
    istio.add_argument("--type", choices=["HTTP", "NETWORK"], default="HTTP", help="NETWORK for a StreamContext")
    istio.add_argument("--image-pull-policy", choices=["IfNotPresent", "Always"], default="IfNotPresent")
    istio.add_argument("--image-pull-secret", help="a Kubernetes docker-registry Secret in the same namespace")
    p.set_defaults(func=_package)

    p = sub.add_parser("pull", help="fetch a Wasm image as Istio's agent does, check its sha256 and layout")
    p.add_argument("reference", help="HOST[:PORT]/NAME:TAG (oci:// allowed)")
    p.add_argument("--sha256", help="the sha256 the WasmPlugin/TrafficExtension names (the manifest digest)")
    p.add_argument("-o", "--output", help="write the module here")
    p.add_argument(
        "--plain-http", action="store_true", default=None, help="registry without TLS (default for localhost)"
    )
    p.set_defaults(func=_pull)
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except BuildError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    except EnvoyError as err:
        print(f"error: Envoy could not serve the filter: {err}", file=sys.stderr)
        return 1
    except CacheLimitError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
