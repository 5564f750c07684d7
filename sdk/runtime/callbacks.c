/* The guest side of the ABI: every proxy_on_* export, routed to the Python dispatcher.
 *
 * The dispatcher's on_context_create() returns a bit mask of the callbacks the new context
 * implements; callbacks outside the mask return Envoy's default here without entering Python.
 * proxywasm/_dispatch.py holds the matching bit numbers (CALLBACK_BITS). */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <stdlib.h>

#include "hostcalls.h"
#include "runtime.h"

#define EXPORT(name) __attribute__((export_name(#name)))

/* Keep in sync with CALLBACKS in proxywasm/_dispatch.py: the index is the mask bit. */
#define CALLBACKS(X)                                                                                  \
    X(0, on_vm_start) X(1, on_configure) X(2, validate_configuration) X(3, on_tick)                 \
    X(4, on_queue_ready) X(5, on_new_connection) X(6, on_downstream_data) X(7, on_upstream_data)    \
    X(8, on_downstream_connection_close) X(9, on_upstream_connection_close)                          \
    X(10, on_request_headers) X(11, on_request_body) X(12, on_request_trailers)                      \
    X(13, on_response_headers) X(14, on_response_body) X(15, on_response_trailers) X(16, on_done)    \
    X(17, on_log) X(18, on_delete) X(19, on_http_call_response)                                      \
    X(20, on_grpc_receive_initial_metadata) X(21, on_grpc_receive) X(22, on_grpc_receive_trailing_metadata) \
    X(23, on_grpc_close) X(24, on_foreign_function)

#define ENUM(bit, name) CB_##name = bit,
enum callback { CALLBACKS(ENUM) CB_COUNT };

uint32_t effective_context;
uint64_t python_entries; /* how often a callback entered Python (tests check the masks with it) */
const char *current_callback = "";

static PyObject *methods[CB_COUNT];
static PyObject *create_method;
static PyObject *contexts;

/* ---- context id -> callback mask: open addressing, linear probing ---- */

typedef struct {
    uint32_t id; /* 0 = empty slot; Envoy never uses context id 0 */
    uint32_t mask;
    int32_t budget_ms; /* CPU budget of each callback of this context (see budget.c) */
} slot_t;

static slot_t *slots;
static uint32_t capacity, used;

static uint32_t slot_of(uint32_t id) { return (id * 2654435761u) & (capacity - 1); }

static int mask_grow(void);

static int mask_put(uint32_t id, uint32_t mask, int32_t budget_ms) {
    if ((used + 1) * 2 > capacity && mask_grow() < 0) return -1;
    uint32_t i = slot_of(id);
    while (slots[i].id != 0 && slots[i].id != id) i = (i + 1) & (capacity - 1);
    if (slots[i].id == 0) used++;
    slots[i].id = id;
    slots[i].mask = mask;
    slots[i].budget_ms = budget_ms;
    return 0;
}

static int mask_grow(void) {
    slot_t *old = slots;
    uint32_t old_capacity = capacity;
    capacity = capacity ? capacity * 2 : 64;
    slots = calloc(capacity, sizeof(slot_t));
    if (slots == NULL) return -1;
    used = 0;
    for (uint32_t i = 0; i < old_capacity; i++)
        if (old[i].id != 0) mask_put(old[i].id, old[i].mask, old[i].budget_ms);
    free(old);
    return 0;
}

static slot_t *slot_find(uint32_t id) {
    if (capacity == 0) return NULL;
    for (uint32_t i = slot_of(id); slots[i].id != 0; i = (i + 1) & (capacity - 1))
        if (slots[i].id == id) return &slots[i];
    return NULL;
}


/* Backward-shift deletion keeps probe chains intact without tombstones. */
static void mask_remove(uint32_t id) {
    if (capacity == 0) return;
    uint32_t i = slot_of(id);
    while (slots[i].id != id) {
        if (slots[i].id == 0) return;
        i = (i + 1) & (capacity - 1);
    }
    slots[i].id = 0;
    used--;
    for (uint32_t j = (i + 1) & (capacity - 1); slots[j].id != 0; j = (j + 1) & (capacity - 1)) {
        uint32_t home = slot_of(slots[j].id);
        /* Move j back to i if its home is not cyclically within (i, j]. */
        if ((j > i && (home <= i || home > j)) || (j < i && (home <= i && home > j))) {
            slots[i] = slots[j];
            slots[j].id = 0;
            i = j;
        }
    }
}

/* ---- calling into Python ---- */

static void report_error(const char *where) {
    /* The dispatcher handles filter exceptions itself; this is the last line of defence. */
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    PyErr_NormalizeException(&type, &value, &tb);
    const char *name = type != NULL && PyType_Check(type) ? _PyType_Name((PyTypeObject *)type) : "unknown error";
    PyObject *text = value ? PyObject_Str(value) : NULL;
    const char *msg = text ? PyUnicode_AsUTF8(text) : NULL;
    if (msg == NULL) PyErr_Clear(); /* no memory left even for that: the type's name will do */
    char line[512];
    int n = snprintf(line, sizeof line, "proxywasm runtime: %s failed: %s%s%s", where, name,
                     msg && *msg ? ": " : "", msg ? msg : "");
    proxy_log(4 /* error */, line, n < (int)sizeof line ? (size_t)n : sizeof line - 1);
    Py_XDECREF(text);
    Py_XDECREF(type);
    Py_XDECREF(value);
    Py_XDECREF(tb);
    PyErr_Clear();
}

#define NAME(bit, name) #name,
static const char *const names[CB_COUNT] = {CALLBACKS(NAME)};

/* Which stream a callback belongs to: an HTTP stream's, a connection's (L4), or none. */
enum stream_kind { NO_STREAM, HTTP_STREAM, L4_STREAM };

static enum stream_kind stream_kind(enum callback cb) {
    switch (cb) {
    case CB_on_request_headers:
    case CB_on_request_body:
    case CB_on_request_trailers:
    case CB_on_response_headers:
    case CB_on_response_body:
    case CB_on_response_trailers:
        return HTTP_STREAM;
    case CB_on_new_connection:
    case CB_on_downstream_data:
    case CB_on_upstream_data:
        return L4_STREAM;
    default:
        return NO_STREAM;
    }
}

/* The SDK applies the failure policy when a filter raises. If the SDK itself fails (an exception
 * escapes the dispatcher: memory exhausted even for the failure path, or a budget run out twice
 * over), a stream callback must not let the stream continue as if nothing happened: fail closed. */
static long fail_closed(enum callback cb, long fallback) {
    static const char details[] = "wasm_python_runtime_failure";
    static const char body[] = "Internal Server Error\n";
    switch (stream_kind(cb)) {
    case HTTP_STREAM:
        proxy_send_local_response(500, details, sizeof details - 1, body, sizeof body - 1, NULL, 0, -1);
        return 1; /* PAUSE: Envoy sends the local reply */
    case L4_STREAM:
        proxy_close_stream(2 /* DOWNSTREAM */);
        return 1;
    default:
        return fallback;
    }
}

/* Envoy reads a stream callback's result as a FilterHeadersStatus / FilterDataStatus /
 * FilterTrailersStatus (network: FilterStatus). Anything but an int Action in 0-4 (a bool: what
 * on_configure returns, and True would read as PAUSE; a str; an int Envoy has no status for) goes
 * to the SDK, which names the callback and applies the failure policy. Only then: one type check
 * per callback otherwise. */
static PyObject *bad_result_method; /* Dispatcher.bad_result */

static long bad_result(enum callback cb, uint32_t context_id, PyObject *result, long fallback) {
    PyObject *argv[3] = {PyLong_FromUnsignedLong(context_id), PyUnicode_FromString(names[cb]), result};
    PyObject *action = NULL;
    if (argv[0] != NULL && argv[1] != NULL && bad_result_method != NULL)
        action = PyObject_Vectorcall(bad_result_method, argv, 3, NULL);
    Py_XDECREF(argv[0]);
    Py_XDECREF(argv[1]);
    long out = action != NULL ? PyLong_AsLong(action) : -1;
    Py_XDECREF(action);
    if (action == NULL || (out == -1 && PyErr_Occurred())) {
        report_error("callback result");
        return fail_closed(cb, fallback);
    }
    return out;
}

static int configuring(enum callback cb) {
    return cb == CB_on_vm_start || cb == CB_on_configure || cb == CB_validate_configuration;
}

static long call(enum callback cb, uint32_t context_id, size_t nargs, const uint32_t *args, long fallback) {
    slot_t *slot = slot_find(context_id);
    if (slot == NULL || !(slot->mask & (1u << cb)) || methods[cb] == NULL) return fallback;
    effective_context = context_id;
    python_entries++;
    const char *outer = current_callback; /* Envoy may call in during a host call */
    current_callback = names[cb];
    budget_begin(slot->budget_ms, names[cb], configuring(cb));
    PyObject *argv[6];
    argv[0] = PyLong_FromUnsignedLong(context_id);
    for (size_t i = 0; i < nargs; i++) argv[i + 1] = PyLong_FromUnsignedLong(args[i]);
    PyObject *result = PyObject_Vectorcall(methods[cb], argv, nargs + 1, NULL);
    for (size_t i = 0; i <= nargs; i++) Py_XDECREF(argv[i]);
    long out = fallback;
    if (result == NULL) {
        report_error(names[cb]);
        out = fail_closed(cb, fallback);
    } else {
        if (result != Py_None) {
            if (stream_kind(cb) != NO_STREAM) {
                out = PyLong_Check(result) && !PyBool_Check(result) ? PyLong_AsLong(result) : -1;
                if (out < 0 || out > 4) {
                    PyErr_Clear();
                    out = bad_result(cb, context_id, result, fallback);
                }
            } else {
                out = PyLong_AsLong(result);
                if (out == -1 && PyErr_Occurred()) {
                    report_error("callback result");
                    out = fallback;
                }
            }
        }
        Py_DECREF(result);
    }
    budget_end();
    current_callback = outer;
    return out;
}

/* The SDK changes a live context's mask: a class with async callbacks receives on_done only
 * while one of its coroutines waits, so a stream whose coroutines finished costs no crossing. */
int runtime_update_mask(uint32_t context_id, uint32_t add, uint32_t remove) {
    slot_t *slot = slot_find(context_id);
    if (slot == NULL) return -1;
    slot->mask = (slot->mask | add) & ~remove;
    return 0;
}

int runtime_set_dispatcher(PyObject *dispatcher, PyObject *context_dict) {
    PyObject *create = PyObject_GetAttrString(dispatcher, "on_context_create");
    if (create == NULL) return -1;
    Py_XSETREF(create_method, create);
    Py_XSETREF(contexts, Py_NewRef(context_dict));
    Py_XSETREF(bad_result_method, PyObject_GetAttrString(dispatcher, "bad_result"));
    if (bad_result_method == NULL) PyErr_Clear();
#define LOOKUP(bit, name)                                                       \
    Py_CLEAR(methods[bit]);                                                      \
    methods[bit] = PyObject_GetAttrString(dispatcher, #name);                    \
    if (methods[bit] == NULL) PyErr_Clear();
    CALLBACKS(LOOKUP)
    return 0;
}

/* ---- exports ---- */

EXPORT(proxy_abi_version_0_2_1) void proxy_abi_version_0_2_1(void) {}

EXPORT(proxy_on_memory_allocate) void *proxy_on_memory_allocate(size_t size) { return malloc(size); }

EXPORT(proxy_on_context_create) void proxy_on_context_create(uint32_t context_id, uint32_t parent_id) {
    if (create_method == NULL) return;
    effective_context = context_id;
    python_entries++;
    /* A stream context inherits its plugin's budget; a plugin's comes from its class (see budget.c). */
    slot_t *parent = parent_id ? slot_find(parent_id) : NULL;
    int32_t budget_ms = parent ? parent->budget_ms : budget_of_plugin(NULL);
    const char *outer = current_callback;
    current_callback = "on_context_create";
    budget_begin(budget_ms, "creating a context", 0);
    PyObject *argv[2] = {PyLong_FromUnsignedLong(context_id), PyLong_FromUnsignedLong(parent_id)};
    PyObject *result = PyObject_Vectorcall(create_method, argv, 2, NULL);
    Py_XDECREF(argv[0]);
    if (result != NULL && parent_id == 0 && contexts != NULL)
        budget_ms = budget_of_plugin(PyDict_GetItemWithError(contexts, argv[0]));
    Py_XDECREF(argv[1]);
    budget_end();
    current_callback = outer;
    if (result == NULL) {
        report_error("on_context_create");
        return;
    }
    unsigned long mask = PyLong_AsUnsignedLong(result);
    Py_DECREF(result);
    if (PyErr_Occurred()) {
        report_error("on_context_create result");
        return;
    }
    if (mask_put(context_id, (uint32_t)mask, budget_ms) < 0) proxy_log(5, "proxywasm runtime: out of memory", 32);
}

#define ARGS(...) (const uint32_t[]){__VA_ARGS__}
#define NARGS(...) (sizeof(ARGS(__VA_ARGS__)) / sizeof(uint32_t))
#define CALL(cb, ctx, fallback, ...) call(cb, ctx, NARGS(__VA_ARGS__), ARGS(__VA_ARGS__), fallback)

EXPORT(proxy_on_vm_start) uint32_t proxy_on_vm_start(uint32_t root, uint32_t size) {
    return CALL(CB_on_vm_start, root, 1, size);
}
EXPORT(proxy_validate_configuration) uint32_t proxy_validate_configuration(uint32_t root, uint32_t size) {
    return CALL(CB_validate_configuration, root, 1, size);
}
EXPORT(proxy_on_configure) uint32_t proxy_on_configure(uint32_t root, uint32_t size) {
    /* The budget key of the plugin configuration is read before the filter sees it. */
    slot_t *slot = slot_find(root);
    if (slot != NULL && contexts != NULL) {
        PyObject *key = PyLong_FromUnsignedLong(root);
        PyObject *plugin = key ? PyDict_GetItemWithError(contexts, key) : NULL;
        Py_XDECREF(key);
        PyErr_Clear();
        int32_t budget_ms;
        if (budget_configure(size, plugin, &budget_ms) < 0) return 0;
        slot = slot_find(root); /* budget_configure may have run Python: the table may have moved */
        if (slot != NULL) slot->budget_ms = budget_ms;
    }
    return CALL(CB_on_configure, root, 1, size);
}
EXPORT(proxy_on_tick) void proxy_on_tick(uint32_t root) { call(CB_on_tick, root, 0, NULL, 0); }
EXPORT(proxy_on_queue_ready) void proxy_on_queue_ready(uint32_t root, uint32_t queue) {
    CALL(CB_on_queue_ready, root, 0, queue);
}

EXPORT(proxy_on_new_connection) uint32_t proxy_on_new_connection(uint32_t ctx) {
    return call(CB_on_new_connection, ctx, 0, NULL, 0);
}
EXPORT(proxy_on_downstream_data) uint32_t proxy_on_downstream_data(uint32_t ctx, uint32_t size, uint32_t eos) {
    return CALL(CB_on_downstream_data, ctx, 0, size, eos);
}
EXPORT(proxy_on_upstream_data) uint32_t proxy_on_upstream_data(uint32_t ctx, uint32_t size, uint32_t eos) {
    return CALL(CB_on_upstream_data, ctx, 0, size, eos);
}
EXPORT(proxy_on_downstream_connection_close) void proxy_on_downstream_connection_close(uint32_t ctx, uint32_t peer) {
    CALL(CB_on_downstream_connection_close, ctx, 0, peer);
}
EXPORT(proxy_on_upstream_connection_close) void proxy_on_upstream_connection_close(uint32_t ctx, uint32_t peer) {
    CALL(CB_on_upstream_connection_close, ctx, 0, peer);
}

EXPORT(proxy_on_request_headers) uint32_t proxy_on_request_headers(uint32_t ctx, uint32_t n, uint32_t eos) {
    return CALL(CB_on_request_headers, ctx, 0, n, eos);
}
EXPORT(proxy_on_request_body) uint32_t proxy_on_request_body(uint32_t ctx, uint32_t size, uint32_t eos) {
    return CALL(CB_on_request_body, ctx, 0, size, eos);
}
EXPORT(proxy_on_request_trailers) uint32_t proxy_on_request_trailers(uint32_t ctx, uint32_t n) {
    return CALL(CB_on_request_trailers, ctx, 0, n);
}
EXPORT(proxy_on_response_headers) uint32_t proxy_on_response_headers(uint32_t ctx, uint32_t n, uint32_t eos) {
    return CALL(CB_on_response_headers, ctx, 0, n, eos);
}
EXPORT(proxy_on_response_body) uint32_t proxy_on_response_body(uint32_t ctx, uint32_t size, uint32_t eos) {
    return CALL(CB_on_response_body, ctx, 0, size, eos);
}
EXPORT(proxy_on_response_trailers) uint32_t proxy_on_response_trailers(uint32_t ctx, uint32_t n) {
    return CALL(CB_on_response_trailers, ctx, 0, n);
}

EXPORT(proxy_on_done) uint32_t proxy_on_done(uint32_t ctx) { return call(CB_on_done, ctx, 0, NULL, 1); }
EXPORT(proxy_on_log) void proxy_on_log(uint32_t ctx) { call(CB_on_log, ctx, 0, NULL, 0); }
EXPORT(proxy_on_delete) void proxy_on_delete(uint32_t ctx) {
    effective_context = ctx;
    slot_t *slot = slot_find(ctx);
    if (slot != NULL && (slot->mask & (1u << CB_on_delete))) {
        call(CB_on_delete, ctx, 0, NULL, 0);
    } else if (contexts != NULL) {
        /* Nothing to run in Python: drop the context object here, saving a crossing (a __del__
         * of the filter's may still run, under the context's budget). */
        const char *outer = current_callback;
        current_callback = "on_delete";
        budget_begin(slot ? slot->budget_ms : 0, "deleting a context", 0);
        PyObject *key = PyLong_FromUnsignedLong(ctx);
        if (key != NULL && PyDict_DelItem(contexts, key) < 0) PyErr_Clear();
        Py_XDECREF(key);
        budget_end();
        current_callback = outer;
    }
    mask_remove(ctx);
}

EXPORT(proxy_on_http_call_response)
void proxy_on_http_call_response(uint32_t ctx, uint32_t token, uint32_t headers, uint32_t body, uint32_t trailers) {
    CALL(CB_on_http_call_response, ctx, 0, token, headers, body, trailers);
}
EXPORT(proxy_on_grpc_receive_initial_metadata)
void proxy_on_grpc_receive_initial_metadata(uint32_t ctx, uint32_t token, uint32_t headers) {
    CALL(CB_on_grpc_receive_initial_metadata, ctx, 0, token, headers);
}
EXPORT(proxy_on_grpc_receive) void proxy_on_grpc_receive(uint32_t ctx, uint32_t token, uint32_t size) {
    CALL(CB_on_grpc_receive, ctx, 0, token, size);
}
EXPORT(proxy_on_grpc_receive_trailing_metadata)
void proxy_on_grpc_receive_trailing_metadata(uint32_t ctx, uint32_t token, uint32_t trailers) {
    CALL(CB_on_grpc_receive_trailing_metadata, ctx, 0, token, trailers);
}
EXPORT(proxy_on_grpc_close) void proxy_on_grpc_close(uint32_t ctx, uint32_t token, uint32_t status) {
    CALL(CB_on_grpc_close, ctx, 0, token, status);
}
EXPORT(proxy_on_foreign_function) void proxy_on_foreign_function(uint32_t root, uint32_t id, uint32_t size) {
    CALL(CB_on_foreign_function, root, 0, id, size);
}

/* ---- build-time initialisation (run once by the snapshotter, never inside Envoy) ---- */

static int init_python(void) {
    PyConfig config;
    PyConfig_InitIsolatedConfig(&config);
    config.site_import = 0;
    config.write_bytecode = 0;
    config.use_hash_seed = 1; /* a fixed seed keeps snapshots reproducible */
    config.hash_seed = 0;
    config.install_signal_handlers = 0;
    config.pathconfig_warnings = 0;
    config.buffered_stdio = 0;
    /* -OO for the stdlib and the SDK: docstrings cost memory in every VM. The filter's own code
     * is compiled by the bundle importer, which keeps its asserts and docstrings. */
    config.optimization_level = 2;
    config.module_search_paths_set = 1;
    PyStatus status = PyConfig_SetString(&config, &config.home, L"/stdlib");
    if (!PyStatus_Exception(status)) status = PyWideStringList_Append(&config.module_search_paths, L"/stdlib");
    if (!PyStatus_Exception(status)) status = PyWideStringList_Append(&config.module_search_paths, L"/bundle");
    static_data_before_init();
    if (!PyStatus_Exception(status)) status = Py_InitializeFromConfig(&config);
    PyConfig_Clear(&config);
    if (PyStatus_Exception(status)) {
        fprintf(stderr, "proxywasm: Python failed to initialise: %s\n", status.err_msg ? status.err_msg : "?");
        return 1;
    }
    return 0;
}

static int32_t initialize(void) {
    if (init_python() != 0) return 1;
    PyObject *bootstrap = PyImport_ImportModule("proxywasm._bootstrap");
    PyObject *result = bootstrap ? PyObject_CallMethod(bootstrap, "initialize", NULL) : NULL;
    Py_XDECREF(bootstrap);
    if (result == NULL) {
        PyErr_Print();
        return 2;
    }
    Py_DECREF(result);
    if (static_data_after_init() < 0) {
        PyErr_Print();
        return 3;
    }
    inittab_keep_initialised();
    return 0;
}

EXPORT(proxywasm_snapshot_init) int32_t proxywasm_snapshot_init(void) {
    snapshot_hygiene_begin();
    int32_t status = initialize();
    snapshot_hygiene_end();
    return status;
}
