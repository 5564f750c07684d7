/* Shared between the runtime's C files. */
#ifndef PROXYWASM_RUNTIME_H
#define PROXYWASM_RUNTIME_H
#include <Python.h>

/* Installs the Python dispatcher that receives guest callbacks (see callbacks.c). */
int runtime_set_dispatcher(PyObject *dispatcher, PyObject *contexts);
int runtime_update_mask(uint32_t context_id, uint32_t add, uint32_t remove);
PyObject *PyInit__proxywasm(void);
void snapshot_hygiene_begin(void);

/* The context Envoy's host calls act on right now: set by Envoy at every callback, changed by
 * proxy_set_effective_context. Tracked here so redundant switches cost no host call. */
extern uint32_t effective_context;
extern uint64_t python_entries;
/* The innermost proxy_on_* callback running ("on_request_body", ...; "" outside one): what the
 * SDK's error messages and its local-reply check name, without walking Python's frames. */
extern const char *current_callback;
void snapshot_hygiene_end(void);

/* See static_data.c: what becomes of CPython's static data around initialisation. */
void static_data_before_init(void);
int static_data_after_init(void);

/* See inittab.c: the snapshot keeps only the builtin modules initialised at build time. */
void inittab_keep_initialised(void);

/* See budget.c: the CPU budget of a callback and the VM's memory limit. */
void budget_begin(int32_t ms, const char *callback, int configuring);
void budget_end(void);
int32_t budget_of_plugin(PyObject *plugin);
int budget_configure(uint32_t size, PyObject *plugin, int32_t *ms);
PyObject *budget_set(PyObject *self, PyObject *args);
PyObject *budget_stats(PyObject *self, PyObject *unused);

/* See futures.c: _proxywasm.FutureCore, the await protocol of proxywasm's Future. */
int runtime_add_future_core(PyObject *module);

#endif
