/* CPython's static data around build-time initialisation. data_layout.py gathered what is dead
 * afterwards into output segments of its own; zeroed, it needs no data segment in the snapshot,
 * so no Envoy worker copies those pages.
 *
 *  - pydoc: the C docstrings, zeroed BEFORE Python starts. Every doc then reads as "", as in a
 *    CPython configured --without-doc-strings, so none is copied into the heap either.
 *  - pyinit: data only initialisation reads, zeroed after it.
 *  - deep-frozen modules: CPython interns the names in all of their code at start-up, which
 *    would keep every module's strings alive. Here only the modules actually imported get
 *    their names interned, and the snapshotter zeroes the deep-frozen objects nothing
 *    references. The frozen-module tables are emptied at the end, so no later import can reach
 *    a zeroed object: a stdlib module not imported at build time fails like any other
 *    unbundled module. */
#include <Python.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "runtime.h"

extern char __start_pydoc[], __stop_pydoc[];
extern char __start_pyinit[], __stop_pyinit[];

/* libpython's internal/pycore_import.h */
extern const struct _frozen *_PyImport_FrozenBootstrap;
extern const struct _frozen *_PyImport_FrozenStdlib;
extern const struct _frozen *_PyImport_FrozenTest;

/* In libpython's codeobject.c: interns one code object's names (not those of nested code). */
extern int _PyStaticCode_InternStrings(PyCodeObject *co);

static const struct _frozen no_frozen_modules[] = {{0}};
static struct _frozen bootstrap_modules[8];

void static_data_before_init(void) {
    memset(__start_pydoc, 0, (size_t)(__stop_pydoc - __start_pydoc));
    /* Without zipimport in the table, initialisation skips installing the zip importer (Envoy
     * gives the module no files to import from). A table too long to copy stays as it is. */
    size_t n = 0;
    for (const struct _frozen *p = _PyImport_FrozenBootstrap; p->name != NULL; p++) {
        if (n + 1 == sizeof bootstrap_modules / sizeof *bootstrap_modules) return;
        if (strcmp(p->name, "zipimport") != 0) bootstrap_modules[n++] = *p;
    }
    _PyImport_FrozenBootstrap = bootstrap_modules;
}

static int intern_code_tree(PyCodeObject *code) {
    if (_PyStaticCode_InternStrings(code) < 0) return -1;
    PyObject *consts = code->co_consts;
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(consts); i++) {
        PyObject *item = PyTuple_GET_ITEM(consts, i);
        if (PyCode_Check(item) && intern_code_tree((PyCodeObject *)item) < 0) return -1;
    }
    return 0;
}

/* Interns the names in the code of the table's modules that ``wanted`` selects. */
static int intern_frozen(const struct _frozen *table, int (*wanted)(const char *name)) {
    for (const struct _frozen *p = table; p->name != NULL; p++) {
        if (p->get_code == NULL || !wanted(p->name)) continue;
        PyObject *code = p->get_code();
        int status = code != NULL && PyCode_Check(code) ? intern_code_tree((PyCodeObject *)code) : 0;
        Py_XDECREF(code);
        if (status < 0) return -1;
    }
    return 0;
}

static int any_module(const char *name) { return name != NULL; }

/* The stdlib modules Python's start-up itself imports (for its codecs and std streams). */
static int start_up_module(const char *name) {
    return strcmp(name, "codecs") == 0 || strcmp(name, "io") == 0 || strcmp(name, "abc") == 0;
}

static int imported_module(const char *name) { return PyDict_GetItemString(PyImport_GetModuleDict(), name) != NULL; }

/* Linked with --wrap=_Py_Deepfreeze_Init. Start-up interns the names of the modules it is going
 * to import, as CPython would (so the bytecode the bundle brings shares those strings); the
 * other modules' names wait until they are imported (static_data_after_init). */
int __wrap__Py_Deepfreeze_Init(void) {
    return intern_frozen(_PyImport_FrozenBootstrap, any_module) < 0 || intern_frozen(_PyImport_FrozenStdlib, start_up_module) < 0 ? -1 : 0;
}

/* What the snapshotter's scan of deep-frozen objects must know about their layout
 * (proxywasm_build/frozen_objects.py): where a code object's pointers end and its bytecode
 * starts; that a deep-frozen tuple is preceded by a GC header; and the types whose objects hold
 * no pointers to other objects. */
static const uint32_t frozen_layout[] = {
    (uint32_t)&PyCode_Type, offsetof(PyCodeObject, co_code_adaptive), (uint32_t)&PyTuple_Type,
    2 * sizeof(uintptr_t) /* sizeof(PyGC_Head), internal/pycore_gc.h */, 5,
    (uint32_t)&PyBytes_Type, (uint32_t)&PyUnicode_Type, (uint32_t)&PyLong_Type,
    (uint32_t)&PyFloat_Type, (uint32_t)&PyComplex_Type,
};

__attribute__((export_name("proxywasm_frozen_layout"))) const uint32_t *proxywasm_frozen_layout(void) {
    return frozen_layout;
}

int static_data_after_init(void) {
    if (intern_frozen(_PyImport_FrozenStdlib, imported_module) < 0 || intern_frozen(_PyImport_FrozenTest, imported_module) < 0) {
        return -1;
    }
    memset(__start_pyinit, 0, (size_t)(__stop_pyinit - __start_pyinit));
    _PyImport_FrozenBootstrap = no_frozen_modules;
    _PyImport_FrozenStdlib = no_frozen_modules;
    _PyImport_FrozenTest = no_frozen_modules;
    PyImport_FrozenModules = NULL;
    memset(bootstrap_modules, 0, sizeof bootstrap_modules);
    return 0;
}
