/* The builtin modules linked into the runtime: CPython's own list without the test modules,
 * CJK codecs, decimal, expat, sockets, unicodedata (1 MB of tables in every VM) and other
 * modules that cannot work inside Envoy or cost more than they give.
 * Defining _PyImport_Inittab here keeps libpython's config.o (and their code) out of the link.
 *
 * Each entry's init function is a wrapper that records that the module was initialised. When
 * the snapshot ends, inittab_keep_initialised() keeps only those entries: a builtin module the
 * filter did not import at build time cannot be imported inside Envoy (like a stdlib module
 * written in Python), so the served module can leave its code out (build_only_code.py finds
 * that code; proxywasm_build/served_code.py reads which entries are left from this table). */
#include <Python.h>
#include <string.h>

#include "runtime.h"

#define MODULES(X)                                                                                      \
    X(_bisect) X(_contextvars) X(_csv) X(_heapq) X(_json) X(_opcode) X(_pickle) X(_random) X(_struct)  \
    X(_typing) X(math) X(cmath) X(_statistics) X(_datetime) X(binascii) X(_md5) X(_sha1) X(_sha256)    \
    X(_sha512) X(_sha3) X(_blake2) X(atexit) X(posix) X(_signal) X(_codecs)             \
    X(_collections) X(errno) X(_io) X(itertools) X(_sre) X(_thread) X(time) X(_weakref) X(_abc)        \
    X(_functools) X(_locale) X(_operator) X(_stat) X(array) X(_imp) X(gc) X(_ast) X(_tokenize)         \
    X(_string)

/* The entries whose init function is not PyInit_<name>, after MODULES in the table. */
#define OTHERS(X) X(marshal, PyMarshal_Init) X(_warnings, _PyWarnings_Init) X(_proxywasm, PyInit__proxywasm)
#define STANDARD(name) EACH(name, PyInit_##name)

/* One flag per entry of _PyImport_Inittab below, in its order. */
#define EACH(name, init) INITTAB_##name,
enum { MODULES(STANDARD) OTHERS(EACH) INITTAB_COUNT };
#undef EACH
static unsigned char initialised[INITTAB_COUNT];

#define EACH(name, init)                            \
    extern PyObject *init(void);                    \
    static PyObject *init_##name(void) {            \
        initialised[INITTAB_##name] = 1;            \
        return init();                              \
    }
MODULES(STANDARD)
OTHERS(EACH)
#undef EACH

#define EACH(name, init) {#name, init_##name},
struct _inittab _PyImport_Inittab[] = {
    MODULES(STANDARD)
    OTHERS(EACH)
    {"builtins", NULL},
    {"sys", NULL},
    {0, 0},
};
#undef EACH

void inittab_keep_initialised(void) {
    struct _inittab *kept = _PyImport_Inittab;
    for (struct _inittab *p = _PyImport_Inittab; p->name != NULL; p++) {
        size_t i = (size_t)(p - _PyImport_Inittab);
        if (i >= INITTAB_COUNT || initialised[i]) *kept++ = *p;
    }
    const struct _inittab *end = _PyImport_Inittab + sizeof _PyImport_Inittab / sizeof *_PyImport_Inittab;
    memset(kept, 0, (size_t)(end - kept) * sizeof *kept);
}
