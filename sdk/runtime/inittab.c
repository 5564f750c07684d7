/* The builtin modules linked into the runtime: CPython's own list without the test modules,
 * CJK codecs, decimal, expat, sockets, unicodedata (1 MB of tables in every VM) and other
 * modules that cannot work inside Envoy or cost more than they give.
 * Defining _PyImport_Inittab here keeps libpython's config.o (and their code) out of the link. */
#include <Python.h>

#include "runtime.h"

#define MODULES(X)                                                                                      \
    X(_bisect) X(_contextvars) X(_csv) X(_heapq) X(_json) X(_opcode) X(_pickle) X(_random) X(_struct)  \
    X(_typing) X(math) X(cmath) X(_statistics) X(_datetime) X(binascii) X(_md5) X(_sha1) X(_sha256)    \
    X(_sha512) X(_sha3) X(_blake2) X(atexit) X(posix) X(_signal) X(_codecs)             \
    X(_collections) X(errno) X(_io) X(itertools) X(_sre) X(_thread) X(time) X(_weakref) X(_abc)        \
    X(_functools) X(_locale) X(_operator) X(_stat) X(array) X(_imp) X(gc) X(_ast) X(_tokenize)         \
    X(_string)

#define DECLARE(name) extern PyObject *PyInit_##name(void);
MODULES(DECLARE)
extern PyObject *PyMarshal_Init(void);
extern PyObject *_PyWarnings_Init(void);

#define ENTRY(name) {#name, PyInit_##name},
struct _inittab _PyImport_Inittab[] = {
    MODULES(ENTRY)
    {"marshal", PyMarshal_Init},
    {"_warnings", _PyWarnings_Init},
    {"_proxywasm", PyInit__proxywasm},
    {"builtins", NULL},
    {"sys", NULL},
    {0, 0},
};
