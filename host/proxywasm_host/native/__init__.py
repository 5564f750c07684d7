"""Native mode: a Python filter running in the test process (no build, no Wasm) against the same
emulator as the Wasm module, for debuggers, coverage and fast iteration. ``Host.load("filter.py")``
loads one; see :class:`~.guest.NativeGuest` for what cannot be identical to the VM."""
