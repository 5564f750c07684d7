"""The toolchain around the Python runtime: bundling, build-time snapshots, running Envoy."""
