/* What one callback may spend: CPU time (the budget), and what the VM may hold: linear memory.
 *
 * The budget. CPython's eval loop tests interp->ceval.eval_breaker at the start of every Python
 * function, at every backward jump and after every call of a C function. When it is set and
 * _PyRuntime.ceval.signals_pending is too, the loop calls _PyErr_CheckSignalsTstate(), which the
 * link wraps (-Wl,--wrap=_PyErr_CheckSignalsTstate). While a callback runs, both flags stay set,
 * so every such check lands in check() below: it counts down and, every `interval` checks, reads
 * Envoy's monotonic clock (WASI clock_time_get, a host call; the interval adapts so a read comes
 * about every budget/16). Past the deadline it raises proxywasm.BudgetExceeded right there, at a
 * bytecode boundary, and raises it again at every later check in the filter's code until the
 * callback returns, so `except BudgetExceeded: pass` in a loop cannot keep looping. The SDK's own
 * frames are spared for one more budget, so the dispatcher can log the traceback and apply the
 * failure policy; after that they are interrupted too. The runtime's C (no Python frame) never is.
 * C code that runs long without returning to the eval loop calls PyErr_CheckSignals() (the regex
 * engine every 4096 steps, big-integer arithmetic per row of digits; also str() and repr()):
 * wrapped the same way. What no check reaches: one long C call that never calls
 * PyErr_CheckSignals (e.g. sum() over a list of 10^8 items).
 *
 * The budget is armed only while the outermost callback runs, never at build time (the
 * snapshotter runs no callback). Measured in Envoy: a check costs ~8 ns, a clock read ~110 ns.
 *
 * Memory. dlmalloc grows the heap with sbrk(), wrapped (-Wl,--wrap=sbrk) to refuse growth past
 * the VM's limit: malloc() then returns NULL and Python raises MemoryError, long before Envoy's
 * own limit (1 GiB), so one filter cannot make each worker's Wasm memory (which never shrinks)
 * huge. The SDK and the runtime may go RESERVE beyond the limit to report the error and apply
 * the failure policy. A VM that stays full after such a callback traps (check_recovery()).
 *
 * Configuration (names and defaults come from proxywasm/budget.py through set_budget()). */
#define PY_SSIZE_T_CLEAN
#define Py_BUILD_CORE 1
#include <Python.h>
#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <wasi/api.h>

#include "internal/pycore_frame.h"
#include "internal/pycore_pystate.h"
#include "internal/pycore_runtime.h"

#include "hostcalls.h"
#include "runtime.h"

#define MS 1000000LL

/* The layout these headers describe must be the one libpython3.11.a was compiled with (offsets
 * read from its ceval.o: handle_signals() and the eval loop's eval-breaker path). */
_Static_assert(offsetof(_PyRuntimeState, ceval.signals_pending) == 192, "_PyRuntime layout");
_Static_assert(offsetof(_PyRuntimeState, gilstate) == 356, "_PyRuntime layout");
_Static_assert(offsetof(_PyRuntimeState, interpreters.main) == 32, "_PyRuntime layout");
_Static_assert(offsetof(PyInterpreterState, ceval.eval_breaker) == 80, "PyInterpreterState layout");
_Static_assert(offsetof(PyInterpreterState, ceval.pending.calls_to_do) == 92, "PyInterpreterState layout");
_Static_assert(offsetof(PyThreadState, async_exc) == 84, "PyThreadState layout");

/* ---- configuration ---- */

/* Set by proxywasm/budget.py (set_budget(), when the SDK is imported at build time); until then
 * there is no budget and no memory limit. */
static PyObject *budget_exception; /* proxywasm.BudgetExceeded */
static int32_t default_ms;
static int32_t configure_factor = 1;
static char config_key[64], env_budget[64], env_memory[64], sdk_prefix[64];
static size_t sdk_prefix_len;
static int32_t env_ms = -1; /* from the VM's environment; -1: not set */
static int env_read;

/* Memory: the highest linear-memory address sbrk() may reach; 0: no limit (at build time). */
static uintptr_t memory_limit;
static int64_t default_memory_mb;
static int memory_refused; /* the limit refused memory during the running callback */
static int probing;
static void check_recovery(void);

/* ---- the running budget ---- */

static int depth;         /* nesting of callbacks (Envoy may call in during a host call) */
static int armed;         /* a budget runs */
static int expired;       /* its deadline passed: BudgetExceeded is raised in the filter's frames */
static int spare_sdk;     /* while expired: the SDK's frames are not interrupted yet */
static int64_t budget_ns; /* of the running callback */
static int64_t deadline_ns, last_read_ns;
static uint32_t countdown, interval;
static const char *running_callback;
static uint64_t checks, clock_reads, refusals; /* for tests and measurement */

/* Checks before the first clock read, which starts the budget: the shortest callbacks never read
 * the clock (a read costs about as much as ten checks; the bench workloads make 10-20 checks per
 * callback). Then reads come 16, 32, 64, ... checks apart while they are close in time, and
 * closer again when they are more than budget/16 apart. */
#define FIRST_READ 16
#define SECOND_READ 16
#define MAX_INTERVAL 4096

static int64_t monotonic_ns(void) {
    __wasi_timestamp_t now = 0;
    if (__wasi_clock_time_get(__WASI_CLOCKID_MONOTONIC, 1000, &now) != 0) return 0;
    return (int64_t)now;
}

static void signal_breaker(void) {
    _Py_atomic_store_relaxed(&_PyRuntime.ceval.signals_pending, 1);
    _Py_atomic_store_relaxed(&_PyRuntime.interpreters.main->ceval.eval_breaker, 1);
}

static void clear_breaker(void) {
    struct _ceval_state *ceval = &_PyRuntime.interpreters.main->ceval;
    _Py_atomic_store_relaxed(&_PyRuntime.ceval.signals_pending, 0);
    _Py_atomic_store_relaxed(&ceval->eval_breaker, _Py_atomic_load_relaxed(&ceval->gil_drop_request) |
                                                       _Py_atomic_load_relaxed(&ceval->pending.calls_to_do) |
                                                       ceval->pending.async_exc);
}

void budget_begin(int32_t ms, const char *callback, int configuring) {
    if (depth++ > 0 || ms <= 0 || budget_exception == NULL) return;
    armed = 1;
    expired = 0;
    spare_sdk = 1;
    budget_ns = (int64_t)ms * MS * (configuring ? configure_factor : 1);
    deadline_ns = 0;
    countdown = FIRST_READ;
    interval = SECOND_READ;
    running_callback = callback;
    signal_breaker();
}

void budget_end(void) {
    if (--depth > 0) return;
    if (memory_refused) PyGC_Collect(); /* cycles the callback left; finalizers still under budget */
    if (armed) {
        armed = 0;
        expired = 0;
        clear_breaker();
    }
    if (memory_refused) check_recovery();
}

/* Whose code runs now: no Python frame (the runtime's C, or before Python started), the SDK's, or
 * the filter's (its own modules, the stdlib, its dependencies). */
enum frame_kind { NO_FRAME, SDK_FRAME, FILTER_FRAME };

static enum frame_kind running_code(PyThreadState *tstate) {
    _PyInterpreterFrame *frame = tstate && tstate->cframe ? tstate->cframe->current_frame : NULL;
    if (frame == NULL) return NO_FRAME;
    PyObject *filename = frame->f_code->co_filename;
    if (sdk_prefix_len > 0 && PyUnicode_Check(filename) && PyUnicode_IS_ASCII(filename) &&
        PyUnicode_GET_LENGTH(filename) >= (Py_ssize_t)sdk_prefix_len &&
        memcmp(PyUnicode_DATA(filename), sdk_prefix, sdk_prefix_len) == 0)
        return SDK_FRAME;
    return FILTER_FRAME;
}

static int raise_exceeded(void) {
    long long ms = budget_ns / MS;
    PyErr_Format(budget_exception, "%s ran longer than its CPU budget of %lld ms", running_callback, ms);
    return -1;
}

/* One check: 0 to go on, -1 with BudgetExceeded set. */
static int check(PyThreadState *tstate) {
    checks++;
    signal_breaker(); /* handle_signals() cleared it */
    if (expired) {
        enum frame_kind code = running_code(tstate);
        /* The runtime's own C (no Python frame: e.g. reporting an exception with PyObject_Str,
         * which checks signals) is never interrupted; the SDK only after one more budget. */
        if (code == FILTER_FRAME || (code == SDK_FRAME && !spare_sdk)) return raise_exceeded();
    }
    if (--countdown > 0) return 0;
    int64_t now = monotonic_ns();
    clock_reads++;
    if (deadline_ns == 0) {
        deadline_ns = now + budget_ns; /* interval stays SECOND_READ */
    } else {
        /* Aim at a read every budget/16: fewer when checks are dense, more when they are slow. */
        int64_t gap = now - last_read_ns;
        if (gap > budget_ns / 16 && interval > 1) interval /= 2;
        else if (gap < budget_ns / 64 && interval < MAX_INTERVAL) interval *= 2;
    }
    last_read_ns = now;
    countdown = interval;
    if (!expired && now >= deadline_ns) {
        expired = 1;
        if (running_code(tstate) == FILTER_FRAME) return raise_exceeded();
    } else if (expired && spare_sdk && now >= deadline_ns + budget_ns) {
        spare_sdk = 0; /* the SDK's failure handling has had a whole budget: interrupt it too */
        if (running_code(tstate) == SDK_FRAME) return raise_exceeded();
    }
    return 0;
}

int __real__PyErr_CheckSignalsTstate(PyThreadState *tstate);
int __real_PyErr_CheckSignals(void);

int __wrap__PyErr_CheckSignalsTstate(PyThreadState *tstate) {
    if (armed && check(tstate) < 0) return -1;
    return __real__PyErr_CheckSignalsTstate(tstate);
}

int __wrap_PyErr_CheckSignals(void) {
    if (armed && check(_PyThreadState_GET()) < 0) return -1;
    return __real_PyErr_CheckSignals();
}

/* ---- memory ---- */

/* Past the limit the filter's allocations fail, but the SDK and the runtime may go RESERVE
 * further, so that reporting the MemoryError and applying the failure policy do not fail too. */
#define RESERVE (2u << 20)
/* After a callback in which the limit refused memory, once the callback's objects are gone, the
 * filter must be able to get RECOVERY_BLOCKS blocks the size of one of Python's arenas (256 KiB)
 * within the limit. If not, the VM is full of live objects (a leak) and cannot recover: it traps,
 * and Envoy applies the plugin's failure policy. */
#define RECOVERY_BLOCK (256u << 10)
#define RECOVERY_BLOCKS 12

void *__real_sbrk(intptr_t increment);

void *__wrap_sbrk(intptr_t increment) {
    if (increment > 0 && memory_limit != 0) {
        uintptr_t top = (uintptr_t)__real_sbrk(0);
        uintptr_t limit = memory_limit;
        if (!probing && running_code(_PyThreadState_GET()) != FILTER_FRAME) limit += RESERVE;
        if (top + (uintptr_t)increment > limit || top + (uintptr_t)increment < top) {
            memory_refused = 1;
            refusals++;
            errno = ENOMEM;
            return (void *)-1;
        }
    }
    return __real_sbrk(increment);
}

/* Called after the outermost callback in which memory was refused. */
static void check_recovery(void) {
    void *blocks[RECOVERY_BLOCKS];
    int got = 0;
    probing = 1;
    while (got < RECOVERY_BLOCKS && (blocks[got] = malloc(RECOVERY_BLOCK)) != NULL) got++;
    probing = 0;
    for (int i = 0; i < got; i++) free(blocks[i]);
    memory_refused = 0;
    if (got == RECOVERY_BLOCKS) return;
    char line[300];
    int n = snprintf(line, sizeof line,
                     "proxywasm: the VM's memory stays exhausted after a MemoryError (limit %lu MiB: see "
                     "proxywasm.budget): failing the VM, so Envoy applies the plugin's failure policy "
                     "(FAIL_RELOAD starts a new VM)",
                     (unsigned long)(memory_limit >> 20));
    proxy_log(5 /* critical */, line, n < (int)sizeof line ? (size_t)n : sizeof line - 1);
    __builtin_trap();
}

/* ---- where budgets come from ---- */

/* A non-negative integer of milliseconds, optionally with a zero fraction ("50", "50.0");
 * -1 if the text is something else. */
static int32_t parse_ms(const char *p, const char *end) {
    int64_t value = 0;
    const char *start = p;
    while (p < end && *p >= '0' && *p <= '9') {
        value = value * 10 + (*p++ - '0');
        if (value > INT32_MAX) return -1;
    }
    if (p == start) return -1;
    if (p < end && *p == '.') {
        for (p++; p < end && *p == '0'; p++) {
        }
    }
    return p == end ? (int32_t)value : -1;
}

static void read_environment(void) {
    env_read = 1;
    __wasi_size_t count = 0, size = 0;
    if (__wasi_environ_sizes_get(&count, &size) != 0 || count == 0) return;
    uint8_t **entries = calloc(count + 1, sizeof(uint8_t *));
    uint8_t *text = malloc(size + 1);
    if (entries != NULL && text != NULL && __wasi_environ_get(entries, text) == 0) {
        for (size_t i = 0; i < count; i++) {
            const char *entry = (const char *)entries[i];
            const char *eq = strchr(entry, '=');
            if (eq == NULL) continue;
            size_t name_len = (size_t)(eq - entry);
            const char *value = eq + 1;
            int32_t ms;
            if (name_len == strlen(env_budget) && memcmp(entry, env_budget, name_len) == 0) {
                ms = parse_ms(value, value + strlen(value));
                if (ms < 0) {
                    char line[256];
                    int n = snprintf(line, sizeof line, "proxywasm: ignoring %s=%s: not a number of milliseconds",
                                     env_budget, value);
                    proxy_log(4, line, n < (int)sizeof line ? (size_t)n : sizeof line - 1);
                } else {
                    env_ms = ms;
                }
            } else if (name_len == strlen(env_memory) && memcmp(entry, env_memory, name_len) == 0) {
                ms = parse_ms(value, value + strlen(value));
                if (ms < 0) {
                    char line[256];
                    int n = snprintf(line, sizeof line, "proxywasm: ignoring %s=%s: not a number of MiB", env_memory,
                                     value);
                    proxy_log(4, line, n < (int)sizeof line ? (size_t)n : sizeof line - 1);
                } else {
                    default_memory_mb = ms;
                }
            }
        }
    }
    free(entries);
    free(text);
}

void budget_vm_start(void) {
    if (!env_read) read_environment();
    uintptr_t now = (uintptr_t)__real_sbrk(0);
    uint64_t limit = (uint64_t)default_memory_mb << 20;
    /* 0 disables; a limit below what the snapshot already uses would refuse every growth. */
    memory_limit = limit == 0 ? 0 : (limit < now ? now : (uintptr_t)(limit > UINT32_MAX ? UINT32_MAX : limit));
}

int32_t budget_of_plugin(PyObject *plugin) {
    if (!env_read) budget_vm_start();
    if (env_ms >= 0) return env_ms;
    if (plugin == NULL) return default_ms;
    PyObject *attr = PyObject_GetAttrString(plugin, "cpu_budget_ms");
    if (attr == NULL) {
        PyErr_Clear();
        return default_ms;
    }
    long ms = PyLong_Check(attr) ? PyLong_AsLong(attr) : -1;
    Py_DECREF(attr);
    if (ms < 0 || ms > INT32_MAX) {
        PyErr_Clear();
        char line[200];
        int n = snprintf(line, sizeof line,
                         "proxywasm: %s.cpu_budget_ms must be a non-negative int (milliseconds); using %d ms",
                         Py_TYPE(plugin)->tp_name, (int)default_ms);
        proxy_log(4, line, n < (int)sizeof line ? (size_t)n : sizeof line - 1);
        return default_ms;
    }
    return (int32_t)ms;
}

/* The value of top-level member `key` of the JSON object in [p, end), NULL if absent or if the
 * text is not a JSON object; *value_end is set past the value. Strings are compared raw (a key
 * spelled with escapes is not recognised). */
static const char *skip_ws(const char *p, const char *end) {
    while (p < end && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r')) p++;
    return p;
}

static const char *skip_string(const char *p, const char *end) { /* p at the opening quote */
    for (p++; p < end; p++) {
        if (*p == '\\') p++;
        else if (*p == '"') return p + 1;
    }
    return NULL;
}

static const char *skip_value(const char *p, const char *end) {
    int nesting = 0;
    while (p < end) {
        char c = *p;
        if (c == '"') {
            p = skip_string(p, end);
            if (p == NULL) return NULL;
            if (nesting == 0) return p;
            continue;
        }
        if (c == '{' || c == '[') nesting++;
        else if (c == '}' || c == ']') {
            if (nesting == 0) return p;
            if (--nesting == 0) return p + 1;
        } else if (nesting == 0 && (c == ',' || c == ' ' || c == '\t' || c == '\n' || c == '\r')) {
            return p;
        }
        p++;
    }
    return nesting == 0 ? p : NULL;
}

static const char *json_member(const char *p, const char *end, const char *key, const char **value_end) {
    size_t key_len = strlen(key);
    p = skip_ws(p, end);
    if (p >= end || *p != '{') return NULL;
    p = skip_ws(p + 1, end);
    while (p < end && *p == '"') {
        const char *name = p + 1;
        p = skip_string(p, end);
        if (p == NULL) return NULL;
        int match = (size_t)(p - 1 - name) == key_len && memcmp(name, key, key_len) == 0;
        p = skip_ws(p, end);
        if (p >= end || *p != ':') return NULL;
        p = skip_ws(p + 1, end);
        const char *value = p;
        p = skip_value(p, end);
        if (p == NULL) return NULL;
        if (match) {
            *value_end = p;
            return value;
        }
        p = skip_ws(p, end);
        if (p >= end || *p != ',') return NULL;
        p = skip_ws(p + 1, end);
    }
    return NULL;
}

int budget_configure(uint32_t size, PyObject *plugin, int32_t *ms) {
    *ms = budget_of_plugin(plugin);
    if (size == 0 || config_key[0] == 0) return 0;
    char *data = NULL;
    size_t len = 0;
    if (proxy_get_buffer_bytes(7 /* PLUGIN_CONFIGURATION */, 0, size, &data, &len) != 0 || data == NULL) return 0;
    const char *value_end = NULL;
    const char *value = json_member(data, data + len, config_key, &value_end);
    int status = 0;
    if (value != NULL) {
        int32_t parsed = parse_ms(value, value_end);
        if (parsed < 0) {
            char line[300];
            int n = snprintf(line, sizeof line,
                             "proxywasm: the plugin configuration's \"%s\" must be a non-negative integer of "
                             "milliseconds, not %.*s: the configuration is rejected",
                             config_key, (int)(value_end - value > 40 ? 40 : value_end - value), value);
            proxy_log(4, line, n < (int)sizeof line ? (size_t)n : sizeof line - 1);
            status = -1;
        } else {
            *ms = parsed;
        }
    }
    free(data);
    return status;
}

/* ---- the SDK's side: _proxywasm.set_budget() and budget_stats() ---- */

static int copy_name(PyObject *text, char *out, size_t size) {
    Py_ssize_t len;
    const char *s = PyUnicode_AsUTF8AndSize(text, &len);
    if (s == NULL) return -1;
    if ((size_t)len >= size) {
        PyErr_Format(PyExc_ValueError, "%U is too long", text);
        return -1;
    }
    memcpy(out, s, (size_t)len + 1);
    return 0;
}

PyObject *budget_set(PyObject *self, PyObject *args) {
    PyObject *exception, *key, *env_key, *memory_key, *prefix;
    int ms, factor, memory_mb;
    if (!PyArg_ParseTuple(args, "OiiUUiUU", &exception, &ms, &factor, &key, &env_key, &memory_mb, &memory_key,
                          &prefix))
        return NULL;
    if (!PyExceptionClass_Check(exception)) return PyErr_Format(PyExc_TypeError, "an exception class is needed");
    if (copy_name(key, config_key, sizeof config_key) < 0 || copy_name(env_key, env_budget, sizeof env_budget) < 0 ||
        copy_name(memory_key, env_memory, sizeof env_memory) < 0 || copy_name(prefix, sdk_prefix, sizeof sdk_prefix) < 0)
        return NULL;
    sdk_prefix_len = strlen(sdk_prefix);
    Py_XSETREF(budget_exception, Py_NewRef(exception));
    default_ms = ms;
    configure_factor = factor;
    default_memory_mb = memory_mb;
    Py_RETURN_NONE;
}

PyObject *budget_stats(PyObject *self, PyObject *unused) {
    return Py_BuildValue("{sKsKsKsisnsn}", "checks", (unsigned long long)checks, "clock_reads",
                         (unsigned long long)clock_reads, "memory_refusals", (unsigned long long)refusals, "armed",
                         armed, "memory_limit", (Py_ssize_t)memory_limit, "heap_top", (Py_ssize_t)__real_sbrk(0));
}
