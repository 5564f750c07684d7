/* What stands in for CPython's compiler in the module Envoy loads.
 *
 * The snapshot runs at build time, where the filter's imports compile source freely (dataclasses,
 * namedtuple and the bundle importer all do). Inside Envoy, filters run bytecode, yet V8 compiles
 * every function of the module up front, so the parser, the AST and the compiler would cost
 * start-up time in every Envoy for code that never runs. The snapshotter therefore replaces the
 * bodies of their entry points with a call to the function below, and of the code only those
 * entry points reach with `unreachable` (build_only_code.py chooses them; proxywasm_build/served_code.py
 * rewrites the module). Each entry point fails the way CPython's callers expect (NULL or 0, with
 * an exception set), so exec(), eval(), compile() and ast.parse() of source at run time raise a
 * RuntimeError that names the filter's line, and the failure policy applies. */
#include <Python.h>
#include <string.h>

/* The innermost Python frame outside the stdlib, the frozen modules and the SDK: the filter's
 * line that asked for the compiler (namedtuple() calls exec() from the stdlib). Returns a new
 * reference, or NULL without an exception set when Python runs no frame. */
static PyFrameObject *caller_frame(void) {
    PyFrameObject *frame = PyEval_GetFrame();
    Py_XINCREF(frame);
    PyFrameObject *innermost = frame;
    Py_XINCREF(innermost);
    while (frame != NULL) {
        PyCodeObject *code = PyFrame_GetCode(frame);
        const char *file = PyUnicode_Check(code->co_filename) ? PyUnicode_AsUTF8(code->co_filename) : NULL;
        Py_DECREF(code);
        if (file == NULL) PyErr_Clear();
        if (file != NULL && strncmp(file, "/stdlib/", 8) != 0 && file[0] != '<' && strncmp(file, "proxywasm/", 10) != 0 &&
            strncmp(file, "/bundle/proxywasm/", 18) != 0) {
            Py_XDECREF(innermost);
            return frame;
        }
        PyFrameObject *back = PyFrame_GetBack(frame);
        Py_DECREF(frame);
        frame = back;
    }
    return innermost;
}

/* Stands in for _PyParser_ASTFromString, _PyAST_Compile and the other entry points listed in
 * build_only_code.py: sets RuntimeError and returns 0, their failure value (NULL or false). */
__attribute__((export_name("proxywasm_source_compilation_unavailable"))) int32_t proxywasm_source_compilation_unavailable(void) {
    static const char message[] =
        "compiling Python source at run time is not available in the served module: do it at import time";
    PyFrameObject *frame = caller_frame();
    if (frame == NULL) {
        PyErr_SetString(PyExc_RuntimeError, message);
        return 0;
    }
    PyCodeObject *code = PyFrame_GetCode(frame);
    PyErr_Format(PyExc_RuntimeError, "%s (%U:%d)", message, code->co_filename, PyFrame_GetLineNumber(frame));
    Py_DECREF(code);
    Py_DECREF(frame);
    return 0;
}
