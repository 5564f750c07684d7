/* Shared between the runtime's C files. */
#ifndef PROXYWASM_RUNTIME_H
#define PROXYWASM_RUNTIME_H
#include <Python.h>

/* Installs the Python dispatcher that receives guest callbacks (see callbacks.c). */
int runtime_set_dispatcher(PyObject *dispatcher, PyObject *contexts);
PyObject *PyInit__proxywasm(void);
void snapshot_hygiene_begin(void);
void snapshot_hygiene_end(void);

#endif
