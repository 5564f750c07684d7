/* The builtin module `_proxywasm`: every host function of the ABI, one thin wrapper each.
 *
 * Wrappers take and return ints and bytes only; meaning (enums, maps, text) is added by
 * proxywasm/hostcalls.py. A non-OK status raises the error type the SDK registers with
 * set_error_type(), called as error_type(function_name, status). A few lookups return None
 * where "absent" is an ordinary answer (NOT_FOUND / EMPTY), to keep the hot path free of
 * exceptions. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdlib.h>
#include <string.h>
#include <wasi/api.h>

#include "hostcalls.h"
#include "runtime.h"

enum { OK = 0, NOT_FOUND = 1, EMPTY = 7 };

static PyObject *error_type = NULL;

static PyObject *raise_status(const char *call, status_t status) {
    if (error_type == NULL) {
        PyErr_Format(PyExc_RuntimeError, "%s failed with status %u", call, (unsigned)status);
        return NULL;
    }
    PyObject *exc = PyObject_CallFunction(error_type, "sI", call, (unsigned)status);
    if (exc != NULL) {
        PyErr_SetObject(error_type, exc);
        Py_DECREF(exc);
    }
    return NULL;
}

#define CHECK(call, expr)                                   \
    do {                                                    \
        status_t _st = (expr);                              \
        if (_st != OK) return raise_status(#call, _st);     \
    } while (0)

/* Host-allocated results come from our malloc export: copy into bytes, then free. */
static PyObject *take_bytes(char *data, size_t size) {
    PyObject *out = PyBytes_FromStringAndSize(data ? data : "", data ? (Py_ssize_t)size : 0);
    free(data);
    return out;
}

/* Arguments of the per-request functions, read without _PyArg_ParseStack (which parses its format
 * string anew on every call: ~30 ns of guest virtual CPU per call). Same conversions as its "I",
 * "K", "y#" (bytes) and "s#" (str as UTF-8). Each returns 0 with TypeError set on a wrong count or
 * type. */
static int arg_count(const char *name, Py_ssize_t nargs, Py_ssize_t want) {
    if (nargs == want) return 1;
    PyErr_Format(PyExc_TypeError, "%s() takes %zd arguments (%zd given)", name, want, nargs);
    return 0;
}

/* "K": an int, masked to 64 bits. */
static int arg_u64(PyObject *arg, unsigned long long *out) {
    if (!PyLong_Check(arg)) {
        PyErr_Format(PyExc_TypeError, "an int is required, not %.50s", Py_TYPE(arg)->tp_name);
        return 0;
    }
    unsigned long long value = PyLong_AsUnsignedLongLongMask(arg);
    if (value == (unsigned long long)-1 && PyErr_Occurred()) return 0;
    *out = value;
    return 1;
}

/* "I": an int, masked to 32 bits. */
static int arg_u32(PyObject *arg, unsigned int *out) {
    unsigned long long value;
    if (!arg_u64(arg, &value)) return 0;
    *out = (unsigned int)value;
    return 1;
}

static int arg_bytes(PyObject *arg, const char **data, Py_ssize_t *len) {
    if (!PyBytes_Check(arg)) {
        PyErr_Format(PyExc_TypeError, "a bytes object is required, not %.50s", Py_TYPE(arg)->tp_name);
        return 0;
    }
    *data = PyBytes_AS_STRING(arg);
    *len = PyBytes_GET_SIZE(arg);
    return 1;
}

/* "s#": a str, as UTF-8 (or bytes as they are). */
static int arg_text(PyObject *arg, const char **data, Py_ssize_t *len) {
    if (PyUnicode_Check(arg)) return (*data = PyUnicode_AsUTF8AndSize(arg, len)) != NULL;
    return arg_bytes(arg, data, len);
}

static PyObject *pw_set_error_type(PyObject *self, PyObject *arg) {
    Py_XSETREF(error_type, Py_NewRef(arg));
    Py_RETURN_NONE;
}

static PyObject *pw_log(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    unsigned level;
    const char *msg;
    Py_ssize_t len;
    if (!arg_count("log", nargs, 2) || !arg_u32(args[0], &level) || !arg_text(args[1], &msg, &len)) return NULL;
    CHECK(proxy_log, proxy_log(level, msg, (size_t)len));
    Py_RETURN_NONE;
}

static PyObject *pw_get_log_level(PyObject *self, PyObject *unused) {
    uint32_t level = 0;
    CHECK(proxy_get_log_level, proxy_get_log_level(&level));
    return PyLong_FromUnsignedLong(level);
}

static PyObject *pw_get_current_time_nanoseconds(PyObject *self, PyObject *unused) {
    uint64_t ns = 0;
    CHECK(proxy_get_current_time_nanoseconds, proxy_get_current_time_nanoseconds(&ns));
    return PyLong_FromUnsignedLongLong(ns);
}

static PyObject *pw_set_tick_period_milliseconds(PyObject *self, PyObject *arg) {
    unsigned long ms = PyLong_AsUnsignedLong(arg);
    if (PyErr_Occurred()) return NULL;
    CHECK(proxy_set_tick_period_milliseconds, proxy_set_tick_period_milliseconds((uint32_t)ms));
    Py_RETURN_NONE;
}

static PyObject *pw_set_effective_context(PyObject *self, PyObject *arg) {
    unsigned long id = PyLong_AsUnsignedLong(arg);
    if (PyErr_Occurred()) return NULL;
    if ((uint32_t)id == effective_context) Py_RETURN_NONE;
    CHECK(proxy_set_effective_context, proxy_set_effective_context((uint32_t)id));
    effective_context = (uint32_t)id;
    Py_RETURN_NONE;
}

static PyObject *pw_effective_context(PyObject *self, PyObject *unused) {
    return PyLong_FromUnsignedLong(effective_context);
}

static PyObject *pw_running_callback(PyObject *self, PyObject *unused) {
    return PyUnicode_FromString(current_callback);
}

static PyObject *pw_done(PyObject *self, PyObject *unused) {
    CHECK(proxy_done, proxy_done());
    Py_RETURN_NONE;
}

static PyObject *pw_call_foreign_function(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    const char *name, *data;
    Py_ssize_t name_len, data_len;
    if (!_PyArg_ParseStack(args, nargs, "s#y#", &name, &name_len, &data, &data_len)) return NULL;
    char *result = NULL;
    size_t result_len = 0;
    CHECK(proxy_call_foreign_function,
          proxy_call_foreign_function(name, name_len, data, data_len, &result, &result_len));
    return take_bytes(result, result_len);
}

/* ---- buffers ---- */

static PyObject *pw_get_buffer_bytes(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    unsigned type, start, size;
    if (!arg_count("get_buffer_bytes", nargs, 3) || !arg_u32(args[0], &type) || !arg_u32(args[1], &start) ||
        !arg_u32(args[2], &size))
        return NULL;
    char *data = NULL;
    size_t len = 0;
    status_t st = proxy_get_buffer_bytes(type, start, size, &data, &len);
    if (st == NOT_FOUND || st == EMPTY) return PyBytes_FromStringAndSize("", 0);
    if (st != OK) return raise_status("proxy_get_buffer_bytes", st);
    return take_bytes(data, len);
}

static PyObject *pw_get_buffer_status(PyObject *self, PyObject *arg) {
    unsigned long type = PyLong_AsUnsignedLong(arg);
    if (PyErr_Occurred()) return NULL;
    size_t length = 0;
    uint32_t flags = 0;
    CHECK(proxy_get_buffer_status, proxy_get_buffer_status((uint32_t)type, &length, &flags));
    return Py_BuildValue("(nI)", (Py_ssize_t)length, (unsigned)flags);
}

static PyObject *pw_set_buffer_bytes(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    unsigned type, start, size;
    const char *data;
    Py_ssize_t len;
    if (!arg_count("set_buffer_bytes", nargs, 4) || !arg_u32(args[0], &type) || !arg_u32(args[1], &start) ||
        !arg_u32(args[2], &size) || !arg_bytes(args[3], &data, &len))
        return NULL;
    CHECK(proxy_set_buffer_bytes, proxy_set_buffer_bytes(type, start, size, data, (size_t)len));
    Py_RETURN_NONE;
}

/* ---- header maps ---- */

static PyObject *pw_get_header_map_pairs(PyObject *self, PyObject *arg) {
    unsigned long type = PyLong_AsUnsignedLong(arg);
    if (PyErr_Occurred()) return NULL;
    char *data = NULL;
    size_t size = 0;
    CHECK(proxy_get_header_map_pairs, proxy_get_header_map_pairs((uint32_t)type, &data, &size));
    return take_bytes(data, size);
}

/* A header the filter writes must be one Envoy can send. On a request (the stream's or a callout's)
 * Envoy 1.40's upstream codec refuses a value with a control character other than HT (0x00-0x08,
 * 0x0a-0x1f, 0x7f) or a name that is not an HTTP token (RFC 9110 5.6.2): the router answers 503
 * "invalid header value for: <name>" (or "invalid header name: <name>"), or http_call fails. On a
 * response it writes both to the client as they are: a CR LF in a value starts a header of its own
 * (header injection). Checked by the differential suite (tests/differential/test_differential_as.py,
 * with another SDK's module). Refused here, at the write, so the filter's traceback shows the line
 * that made it, in Envoy and in tests alike (the local host's native mode has the same check:
 * proxywasm_module.py, with the host's rules in emulator/http1.py). */
static int refuse_header(const char *format, const char *key, Py_ssize_t key_len) {
    PyObject *name = PyUnicode_DecodeLatin1(key, key_len, NULL);
    if (name != NULL) PyErr_Format(PyExc_ValueError, format, name);
    Py_XDECREF(name);
    return 0;
}

/* gRPC metadata (`grpc`) follows the same rules with its own words: Envoy refuses to send it and
 * the call fails (proxy_grpc_call INTERNAL_FAILURE, or UNAVAILABLE), and "-bin" names carry binary. */
static int header_or_metadata_ok(const char *key, Py_ssize_t key_len, const char *value, Py_ssize_t value_len,
                                 int grpc) {
    static const char token_marks[] = "!#$%&'*+-.^_`|~";
    Py_ssize_t i = key_len > 1 && key[0] == ':' ? 1 : 0;
    int valid = key_len > i;
    for (; valid && i < key_len; i++) {
        unsigned char c = (unsigned char)key[i];
        valid = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                (c != 0 && strchr(token_marks, c) != NULL);
    }
    if (!valid)
        return refuse_header(grpc ? "%R is not a valid gRPC metadata name: an HTTP token (letters, digits and "
                                    "!#$%%&'*+-.^_`|~) that Envoy can send"
                                  : "%R is not a valid header name: an HTTP token (letters, digits and "
                                    "!#$%%&'*+-.^_`|~) that Envoy can send",
                             key, key_len);
    for (Py_ssize_t j = 0; j < value_len; j++) {
        unsigned char c = (unsigned char)value[j];
        if ((c < 0x20 && c != '\t') || c == 0x7f)
            return refuse_header(grpc ? "the value of gRPC metadata %R contains a control character (CR, LF, NUL, "
                                        "... any below 0x20 but HT, or DEL): Envoy refuses to send it and the call "
                                        "fails; remove or encode them, or give binary data a name ending in -bin "
                                        "(Envoy base64-encodes those)"
                                      : "the value of header %R contains a control character (CR, LF, NUL, ... any "
                                        "below 0x20 but HT, or DEL): Envoy refuses to send it on a request (503 "
                                        "invalid header value) and writes it to the client as it is on a response "
                                        "(header injection); remove or encode them",
                                 key, key_len);
    }
    /* :method and :path go into the HTTP/1 request line as they are: a space or a tab there makes
     * the upstream read a broken line (400), or a different request. */
    int request_line =
        (key_len == 5 && memcmp(key, ":path", 5) == 0) || (key_len == 7 && memcmp(key, ":method", 7) == 0);
    if (!grpc && request_line && (memchr(value, ' ', (size_t)value_len) || memchr(value, '\t', (size_t)value_len)))
        return refuse_header("the value of %R contains a space or a tab: Envoy writes it into the request line as "
                             "it is, and the upstream reads a broken request (400); percent-encode it (%%20)",
                             key, key_len);
    return 1;
}

static int header_ok(const char *key, Py_ssize_t key_len, const char *value, Py_ssize_t value_len) {
    return header_or_metadata_ok(key, key_len, value, value_len, 0);
}

static uint32_t read_u32(const char *p) {
    uint32_t v;
    memcpy(&v, p, sizeof v);
    return v;
}

/* header_ok for every pair of a serialized map (count, then each pair's key and value sizes, then
 * each key and value with a NUL after it); a malformed map is left for Envoy to refuse. For gRPC
 * metadata (`grpc`), a key ending in "-bin" carries any bytes: Envoy's gRPC client base64-encodes
 * its value (Grpc::AsyncClient, base64EscapeBinHeaders; seen in Envoy 1.40), so only its name is
 * checked; every other pair is refused as Envoy refuses it (proxy_grpc_call answers
 * INTERNAL_FAILURE, or the call ends UNAVAILABLE "invalid header value for: NAME"). */
static int map_ok_for(const char *data, Py_ssize_t len, int grpc) {
    if (len < 4) return 1;
    uint32_t count = read_u32(data);
    if (count > (uint32_t)((len - 4) / 8)) return 1;
    const char *sizes = data + 4, *p = data + 4 + (Py_ssize_t)count * 8, *end = data + len;
    for (uint32_t i = 0; i < count; i++) {
        uint32_t key_len = read_u32(sizes + i * 8), value_len = read_u32(sizes + i * 8 + 4);
        if ((size_t)(end - p) < (size_t)key_len + value_len + 2) return 1;
        int binary = grpc && key_len >= 4 && memcmp(p + key_len - 4, "-bin", 4) == 0;
        if (!header_or_metadata_ok(p, key_len, p + key_len + 1, binary ? 0 : value_len, grpc)) return 0;
        p += key_len + value_len + 2;
    }
    return 1;
}

static int map_ok(const char *data, Py_ssize_t len) { return map_ok_for(data, len, 0); }

static PyObject *pw_set_header_map_pairs(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    unsigned type;
    const char *data;
    Py_ssize_t len;
    if (!arg_count("set_header_map_pairs", nargs, 2) || !arg_u32(args[0], &type) || !arg_bytes(args[1], &data, &len))
        return NULL;
    if (!map_ok(data, len)) return NULL;
    CHECK(proxy_set_header_map_pairs, proxy_set_header_map_pairs(type, data, (size_t)len));
    Py_RETURN_NONE;
}

static PyObject *pw_get_header_map_size(PyObject *self, PyObject *arg) {
    unsigned long type = PyLong_AsUnsignedLong(arg);
    if (PyErr_Occurred()) return NULL;
    size_t size = 0;
    CHECK(proxy_get_header_map_size, proxy_get_header_map_size((uint32_t)type, &size));
    return PyLong_FromSize_t(size);
}

static PyObject *pw_get_header_map_value(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    unsigned type;
    const char *key;
    Py_ssize_t key_len;
    if (!arg_count("get_header_map_value", nargs, 2) || !arg_u32(args[0], &type) ||
        !arg_bytes(args[1], &key, &key_len))
        return NULL;
    char *value = NULL;
    size_t value_len = 0;
    status_t st = proxy_get_header_map_value(type, key, (size_t)key_len, &value, &value_len);
    if (st == NOT_FOUND) Py_RETURN_NONE;
    if (st != OK) return raise_status("proxy_get_header_map_value", st);
    return take_bytes(value, value_len);
}

#define HEADER_WRITE(pyname, hostcall)                                                                   \
    static PyObject *pyname(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {                   \
        unsigned type;                                                                                   \
        const char *key, *value;                                                                         \
        Py_ssize_t key_len, value_len;                                                                   \
        if (!arg_count(&#pyname[3] /* without "pw_" */, nargs, 3) || !arg_u32(args[0], &type) ||        \
            !arg_bytes(args[1], &key, &key_len) || !arg_bytes(args[2], &value, &value_len) ||            \
            !header_ok(key, key_len, value, value_len))                                                  \
            return NULL;                                                                                 \
        CHECK(hostcall, hostcall(type, key, (size_t)key_len, value, (size_t)value_len));                 \
        Py_RETURN_NONE;                                                                                  \
    }
HEADER_WRITE(pw_add_header_map_value, proxy_add_header_map_value)
HEADER_WRITE(pw_replace_header_map_value, proxy_replace_header_map_value)

static PyObject *pw_remove_header_map_value(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    unsigned type;
    const char *key;
    Py_ssize_t key_len;
    if (!arg_count("remove_header_map_value", nargs, 2) || !arg_u32(args[0], &type) ||
        !arg_bytes(args[1], &key, &key_len))
        return NULL;
    CHECK(proxy_remove_header_map_value, proxy_remove_header_map_value(type, key, (size_t)key_len));
    Py_RETURN_NONE;
}

/* ---- stream control ---- */

static PyObject *pw_continue_stream(PyObject *self, PyObject *arg) {
    unsigned long type = PyLong_AsUnsignedLong(arg);
    if (PyErr_Occurred()) return NULL;
    CHECK(proxy_continue_stream, proxy_continue_stream((uint32_t)type));
    Py_RETURN_NONE;
}

static PyObject *pw_close_stream(PyObject *self, PyObject *arg) {
    unsigned long type = PyLong_AsUnsignedLong(arg);
    if (PyErr_Occurred()) return NULL;
    CHECK(proxy_close_stream, proxy_close_stream((uint32_t)type));
    Py_RETURN_NONE;
}

static PyObject *pw_send_local_response(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    unsigned status;
    int grpc_status;
    const char *details, *body, *headers;
    Py_ssize_t details_len, body_len, headers_len;
    if (!_PyArg_ParseStack(args, nargs, "Is#y#y#i", &status, &details, &details_len, &body, &body_len, &headers,
                                   &headers_len, &grpc_status) ||
        !map_ok(headers, headers_len))
        return NULL;
    CHECK(proxy_send_local_response, proxy_send_local_response(status, details, details_len, body, body_len,
                                                               headers, headers_len, grpc_status));
    Py_RETURN_NONE;
}

static PyObject *pw_get_status(PyObject *self, PyObject *unused) {
    uint32_t code = 0;
    char *message = NULL;
    size_t message_len = 0;
    CHECK(proxy_get_status, proxy_get_status(&code, &message, &message_len));
    PyObject *msg = take_bytes(message, message_len);
    if (msg == NULL) return NULL;
    return Py_BuildValue("(IN)", (unsigned)code, msg);
}

/* ---- callouts ---- */

static PyObject *pw_http_call(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    const char *upstream, *headers, *body, *trailers;
    Py_ssize_t upstream_len, headers_len, body_len, trailers_len;
    unsigned timeout;
    if (!arg_count("http_call", nargs, 5) || !arg_text(args[0], &upstream, &upstream_len) ||
        !arg_bytes(args[1], &headers, &headers_len) || !arg_bytes(args[2], &body, &body_len) ||
        !arg_bytes(args[3], &trailers, &trailers_len) || !arg_u32(args[4], &timeout) ||
        !map_ok(headers, headers_len) || !map_ok(trailers, trailers_len))
        return NULL;
    uint32_t token = 0;
    CHECK(proxy_http_call, proxy_http_call(upstream, upstream_len, headers, headers_len, body, body_len, trailers,
                                           trailers_len, timeout, &token));
    return PyLong_FromUnsignedLong(token);
}

static PyObject *pw_grpc_call(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    const char *service, *service_name, *method, *metadata, *message;
    Py_ssize_t service_len, service_name_len, method_len, metadata_len, message_len;
    unsigned timeout;
    if (!_PyArg_ParseStack(args, nargs, "y#s#s#y#y#I", &service, &service_len, &service_name, &service_name_len, &method,
                                   &method_len, &metadata, &metadata_len, &message, &message_len, &timeout) ||
        !map_ok_for(metadata, metadata_len, 1))
        return NULL;
    uint32_t token = 0;
    CHECK(proxy_grpc_call, proxy_grpc_call(service, service_len, service_name, service_name_len, method, method_len,
                                           metadata, metadata_len, message, message_len, timeout, &token));
    return PyLong_FromUnsignedLong(token);
}

static PyObject *pw_grpc_stream(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    const char *service, *service_name, *method, *metadata;
    Py_ssize_t service_len, service_name_len, method_len, metadata_len;
    if (!_PyArg_ParseStack(args, nargs, "y#s#s#y#", &service, &service_len, &service_name, &service_name_len, &method,
                                   &method_len, &metadata, &metadata_len) ||
        !map_ok_for(metadata, metadata_len, 1))
        return NULL;
    uint32_t token = 0;
    CHECK(proxy_grpc_stream, proxy_grpc_stream(service, service_len, service_name, service_name_len, method,
                                               method_len, metadata, metadata_len, &token));
    return PyLong_FromUnsignedLong(token);
}

static PyObject *pw_grpc_send(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    unsigned token;
    const char *message;
    Py_ssize_t message_len;
    int end_stream;
    if (!_PyArg_ParseStack(args, nargs, "Iy#p", &token, &message, &message_len, &end_stream)) return NULL;
    CHECK(proxy_grpc_send, proxy_grpc_send(token, message, message_len, (uint32_t)end_stream));
    Py_RETURN_NONE;
}

static PyObject *pw_grpc_cancel(PyObject *self, PyObject *arg) {
    unsigned long token = PyLong_AsUnsignedLong(arg);
    if (PyErr_Occurred()) return NULL;
    CHECK(proxy_grpc_cancel, proxy_grpc_cancel((uint32_t)token));
    Py_RETURN_NONE;
}

static PyObject *pw_grpc_close(PyObject *self, PyObject *arg) {
    unsigned long token = PyLong_AsUnsignedLong(arg);
    if (PyErr_Occurred()) return NULL;
    CHECK(proxy_grpc_close, proxy_grpc_close((uint32_t)token));
    Py_RETURN_NONE;
}

/* ---- shared data and queues ---- */

static PyObject *pw_get_shared_data(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    const char *key;
    Py_ssize_t key_len;
    if (!arg_count("get_shared_data", nargs, 1) || !arg_text(args[0], &key, &key_len)) return NULL;
    char *value = NULL;
    size_t value_len = 0;
    uint32_t cas = 0;
    status_t st = proxy_get_shared_data(key, key_len, &value, &value_len, &cas);
    if (st == NOT_FOUND) Py_RETURN_NONE;
    if (st != OK) return raise_status("proxy_get_shared_data", st);
    PyObject *bytes = take_bytes(value, value_len);
    if (bytes == NULL) return NULL;
    return Py_BuildValue("(NI)", bytes, (unsigned)cas);
}

static PyObject *pw_set_shared_data(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    const char *key, *value;
    Py_ssize_t key_len, value_len;
    unsigned cas;
    if (!arg_count("set_shared_data", nargs, 3) || !arg_text(args[0], &key, &key_len) ||
        !arg_bytes(args[1], &value, &value_len) || !arg_u32(args[2], &cas))
        return NULL;
    CHECK(proxy_set_shared_data, proxy_set_shared_data(key, key_len, value, value_len, cas));
    Py_RETURN_NONE;
}

static PyObject *pw_register_shared_queue(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    const char *name;
    Py_ssize_t name_len;
    if (!_PyArg_ParseStack(args, nargs, "s#", &name, &name_len)) return NULL;
    uint32_t id = 0;
    CHECK(proxy_register_shared_queue, proxy_register_shared_queue(name, name_len, &id));
    return PyLong_FromUnsignedLong(id);
}

static PyObject *pw_resolve_shared_queue(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    const char *vm_id, *name;
    Py_ssize_t vm_id_len, name_len;
    if (!_PyArg_ParseStack(args, nargs, "s#s#", &vm_id, &vm_id_len, &name, &name_len)) return NULL;
    uint32_t id = 0;
    status_t st = proxy_resolve_shared_queue(vm_id, vm_id_len, name, name_len, &id);
    if (st == NOT_FOUND) Py_RETURN_NONE;
    if (st != OK) return raise_status("proxy_resolve_shared_queue", st);
    return PyLong_FromUnsignedLong(id);
}

static PyObject *pw_enqueue_shared_queue(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    unsigned id;
    const char *data;
    Py_ssize_t len;
    if (!arg_count("enqueue_shared_queue", nargs, 2) || !arg_u32(args[0], &id) || !arg_bytes(args[1], &data, &len))
        return NULL;
    CHECK(proxy_enqueue_shared_queue, proxy_enqueue_shared_queue(id, data, len));
    Py_RETURN_NONE;
}

static PyObject *pw_dequeue_shared_queue(PyObject *self, PyObject *arg) {
    unsigned long id = PyLong_AsUnsignedLong(arg);
    if (PyErr_Occurred()) return NULL;
    char *data = NULL;
    size_t len = 0;
    status_t st = proxy_dequeue_shared_queue((uint32_t)id, &data, &len);
    if (st == EMPTY) Py_RETURN_NONE;
    if (st != OK) return raise_status("proxy_dequeue_shared_queue", st);
    return take_bytes(data, len);
}

/* ---- metrics ---- */

static PyObject *pw_define_metric(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    unsigned type;
    const char *name;
    Py_ssize_t name_len;
    if (!_PyArg_ParseStack(args, nargs, "Is#", &type, &name, &name_len)) return NULL;
    uint32_t id = 0;
    CHECK(proxy_define_metric, proxy_define_metric(type, name, name_len, &id));
    return PyLong_FromUnsignedLong(id);
}

static PyObject *pw_increment_metric(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    unsigned id;
    long long offset;
    if (!arg_count("increment_metric", nargs, 2) || !arg_u32(args[0], &id)) return NULL;
    offset = PyLong_AsLongLong(args[1]); /* "L": OverflowError beyond 64 bits */
    if (offset == -1 && PyErr_Occurred()) return NULL;
    CHECK(proxy_increment_metric, proxy_increment_metric(id, offset));
    Py_RETURN_NONE;
}

static PyObject *pw_record_metric(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    unsigned id;
    unsigned long long value;
    if (!arg_count("record_metric", nargs, 2) || !arg_u32(args[0], &id) || !arg_u64(args[1], &value)) return NULL;
    CHECK(proxy_record_metric, proxy_record_metric(id, value));
    Py_RETURN_NONE;
}

static PyObject *pw_get_metric(PyObject *self, PyObject *arg) {
    unsigned long id = PyLong_AsUnsignedLong(arg);
    if (PyErr_Occurred()) return NULL;
    uint64_t value = 0;
    CHECK(proxy_get_metric, proxy_get_metric((uint32_t)id, &value));
    return PyLong_FromUnsignedLongLong(value);
}

/* ---- properties ---- */

static PyObject *pw_get_property(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    const char *path;
    Py_ssize_t path_len;
    if (!arg_count("get_property", nargs, 1) || !arg_bytes(args[0], &path, &path_len)) return NULL;
    char *value = NULL;
    size_t value_len = 0;
    status_t st = proxy_get_property(path, path_len, &value, &value_len);
    if (st == NOT_FOUND) Py_RETURN_NONE;
    if (st != OK) return raise_status("proxy_get_property", st);
    return take_bytes(value, value_len);
}

static PyObject *pw_set_property(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    const char *path, *value;
    Py_ssize_t path_len, value_len;
    if (!arg_count("set_property", nargs, 2) || !arg_bytes(args[0], &path, &path_len) ||
        !arg_bytes(args[1], &value, &value_len))
        return NULL;
    CHECK(proxy_set_property, proxy_set_property(path, path_len, value, value_len));
    Py_RETURN_NONE;
}

/* Not a host call: the size of this VM's linear memory, for soak tests and self-monitoring. */
static PyObject *pw_memory_size(PyObject *self, PyObject *unused) {
    return PyLong_FromSize_t(__builtin_wasm_memory_size(0) * 65536);
}

/* Not a host call: the VM's environment as Envoy gives it now (vm_config.environment_variables,
 * Istio's vmConfig.env), a list of b"NAME=value". CPython read os.environ at build time, where
 * there is none: the dispatcher refreshes os.environ from this when the VM starts. */
static PyObject *pw_environ(PyObject *self, PyObject *unused) {
    PyObject *list = PyList_New(0);
    __wasi_size_t count = 0, size = 0;
    if (list == NULL || __wasi_environ_sizes_get(&count, &size) != 0 || count == 0) return list;
    uint8_t **entries = calloc(count + 1, sizeof(uint8_t *));
    uint8_t *text = malloc(size + 1);
    if (entries == NULL || text == NULL) {
        free(entries);
        free(text);
        Py_DECREF(list);
        return PyErr_NoMemory();
    }
    if (__wasi_environ_get(entries, text) == 0) {
        for (size_t i = 0; i < count && list != NULL; i++) {
            PyObject *item = PyBytes_FromString((const char *)entries[i]);
            if (item == NULL || PyList_Append(list, item) < 0) Py_CLEAR(list);
            Py_XDECREF(item);
        }
    }
    free(entries);
    free(text);
    return list;
}

/* Not a host call: how many guest callbacks have entered Python in this VM. */
static PyObject *pw_python_entries(PyObject *self, PyObject *unused) {
    return PyLong_FromUnsignedLongLong(python_entries);
}

/* Not a host call: add and remove callback bits of a live context (see runtime_update_mask);
 * False if Envoy has deleted the context already. */
static PyObject *pw_update_callbacks(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    unsigned int context_id, add, remove;
    if (!arg_count("update_callbacks", nargs, 3) || !arg_u32(args[0], &context_id) || !arg_u32(args[1], &add) ||
        !arg_u32(args[2], &remove))
        return NULL;
    return PyBool_FromLong(runtime_update_mask(context_id, add, remove) == 0);
}

static PyObject *pw_set_dispatcher(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    PyObject *dispatcher, *contexts;
    if (!_PyArg_ParseStack(args, nargs, "OO!", &dispatcher, &PyDict_Type, &contexts)) return NULL;
    if (runtime_set_dispatcher(dispatcher, contexts) < 0) return NULL;
    Py_RETURN_NONE;
}

/* METH_FASTCALL: no argument tuple made per call (the hot paths call these per request). */
#define FASTCALL(name) {#name, (PyCFunction)(void (*)(void))pw_##name, METH_FASTCALL, NULL}
#define ONEARG(name) {#name, pw_##name, METH_O, NULL}
#define NOARGS(name) {#name, pw_##name, METH_NOARGS, NULL}

static PyMethodDef methods[] = {
    ONEARG(set_error_type),
    FASTCALL(set_dispatcher),
    FASTCALL(update_callbacks),
    FASTCALL(log),
    NOARGS(get_log_level),
    NOARGS(get_current_time_nanoseconds),
    ONEARG(set_tick_period_milliseconds),
    ONEARG(set_effective_context),
    NOARGS(effective_context),
    NOARGS(running_callback),
    NOARGS(done),
    FASTCALL(call_foreign_function),
    FASTCALL(get_buffer_bytes),
    ONEARG(get_buffer_status),
    FASTCALL(set_buffer_bytes),
    ONEARG(get_header_map_pairs),
    FASTCALL(set_header_map_pairs),
    ONEARG(get_header_map_size),
    FASTCALL(get_header_map_value),
    FASTCALL(add_header_map_value),
    FASTCALL(replace_header_map_value),
    FASTCALL(remove_header_map_value),
    ONEARG(continue_stream),
    ONEARG(close_stream),
    FASTCALL(send_local_response),
    NOARGS(get_status),
    FASTCALL(http_call),
    FASTCALL(grpc_call),
    FASTCALL(grpc_stream),
    FASTCALL(grpc_send),
    ONEARG(grpc_cancel),
    ONEARG(grpc_close),
    FASTCALL(get_shared_data),
    FASTCALL(set_shared_data),
    FASTCALL(register_shared_queue),
    FASTCALL(resolve_shared_queue),
    FASTCALL(enqueue_shared_queue),
    ONEARG(dequeue_shared_queue),
    FASTCALL(define_metric),
    FASTCALL(increment_metric),
    FASTCALL(record_metric),
    ONEARG(get_metric),
    FASTCALL(get_property),
    FASTCALL(set_property),
    NOARGS(memory_size),
    NOARGS(python_entries),
    NOARGS(environ),
    {"set_budget", budget_set, METH_VARARGS, NULL},
    {"budget_stats", budget_stats, METH_NOARGS, NULL},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT, "_proxywasm", "proxy-wasm ABI v0.2.1 host functions (raw).", -1, methods,
};

PyObject *PyInit__proxywasm(void) {
    PyObject *module = PyModule_Create(&module_def);
    if (module != NULL && runtime_add_future_core(module) < 0) Py_CLEAR(module);
    return module;
}
