"""The Wasm adapter: modules on wasmtime. Linking against Envoy's import table, moving bytes
between linear memory and the emulator's host functions, calling exports fast, caching compiled
modules. No Envoy rule lives here."""
