"""What a filter may spend: CPU time per callback, and memory per VM.

**CPU budget.** Every callback Envoy makes into the filter (``on_request_headers``, ``on_tick``,
an ``http_call`` response, creating a context, ...) may run for :data:`DEFAULT_MS` milliseconds of
Envoy's monotonic clock (wall time, measured inside the VM; configuration callbacks, ``on_vm_start``
and ``on_configure``, get :data:`CONFIGURE_FACTOR` times as much). A callback that runs longer gets
:class:`BudgetExceeded` raised inside it at the next bytecode boundary (a loop's next turn, a
function call, the return of a builtin; the regex engine and big-integer arithmetic check too).
It is raised again at every later boundary in the filter's code until the callback returns, so
catching it does not help. The SDK then logs the traceback and applies the plugin's failure
policy (a 500 local reply or the L4 connection closed; ``FAIL_OPEN`` lets the stream continue);
an ``on_configure`` that runs out rejects the configuration. The VM keeps serving.

The budget is set per plugin, the first of these that is present winning:

1. the top-level key ``"proxywasm_cpu_budget_ms"`` of a JSON object plugin configuration (Istio:
   ``WasmPlugin.spec.pluginConfig``), read by the runtime before ``on_configure``; a value that is
   not a non-negative integer rejects the configuration;
2. the VM environment variable ``PROXYWASM_CPU_BUDGET_MS`` (Envoy: ``vm_config.environment_variables``;
   Istio: ``WasmPlugin.spec.vmConfig.env``), for every plugin of the VM;
3. the plugin class's ``cpu_budget_ms`` attribute (:attr:`PluginContext.cpu_budget_ms`);
4. :data:`DEFAULT_MS`.

``0`` disables the budget. What no budget can stop: one call into C that runs long without ever
returning to Python or checking (for example ``sum()`` over a list of a hundred million items).

**Memory.** A VM's linear memory can grow to :data:`DEFAULT_MEMORY_LIMIT_MB` MiB (the VM
environment variable ``PROXYWASM_MEMORY_LIMIT_MB`` sets another limit, ``0`` none: Envoy's own
limit, 1 GiB, then applies). Past it, allocations fail and Python raises ``MemoryError`` in the
filter, which meets the failure policy like any exception. Linear memory never shrinks, so the
limit also bounds what one Envoy worker keeps resident for the VM.
"""

from __future__ import annotations

from .errors import SDK_DIR

try:
    import _proxywasm as raw
except ImportError:  # outside a VM: importable for tooling
    from . import _outside as raw

DEFAULT_MS = 100
"""CPU budget of a callback, in milliseconds, when nothing else sets one."""

CONFIGURE_FACTOR = 10
"""``on_vm_start``, ``on_configure`` and ``validate_configuration`` get this many budgets."""

CONFIG_KEY = "proxywasm_cpu_budget_ms"
"""Top-level key of a JSON plugin configuration that sets the plugin's budget."""

ENV_VAR = "PROXYWASM_CPU_BUDGET_MS"
"""VM environment variable that sets the budget of every plugin in the VM."""

DEFAULT_MEMORY_LIMIT_MB = 128
"""Most linear memory a VM may grow to, in MiB."""

MEMORY_ENV_VAR = "PROXYWASM_MEMORY_LIMIT_MB"
"""VM environment variable that sets the memory limit (``0``: Envoy's own limit)."""


class BudgetExceeded(BaseException):
    """A callback ran longer than its CPU budget (see :mod:`proxywasm.budget`).

    A ``BaseException``, like ``KeyboardInterrupt``: ``except Exception`` does not catch it.
    Do not catch it at all: it is raised again at every later bytecode boundary of the callback.
    """


# Frames whose code lives in the SDK (errors.SDK_DIR) are not interrupted at once after the budget
# runs out, so the failure policy can be applied.

raw.set_budget(
    BudgetExceeded, DEFAULT_MS, CONFIGURE_FACTOR, CONFIG_KEY, ENV_VAR, DEFAULT_MEMORY_LIMIT_MB, MEMORY_ENV_VAR,
    SDK_DIR,
)  # fmt: skip
