/* `_proxywasm.FutureCore`: what `await` does with a proxywasm Future (proxywasm/tasks.py), in C.
 *
 * Why C (small own code inside the VM, where every module costs memory in every worker): a
 * Python `__await__` is a generator, so each awaited callout made a generator and a frame and
 * entered CPython's eval loop three more times (creating it, and each SEND into it: CPython 3.11
 * does not inline a generator's SEND). In V8 each entry into the eval loop is expensive (its
 * huge function's locals are set up per call), far more than the Wasm fuel model counts.
 *
 * Here the Future is its own awaitable iterator, as the protocol allows (`__await__` returns an
 * object with `__next__`): awaiting it marks it claimed (as Future.claim does) and returns the
 * Future itself; each step of the await (am_send, what CPython's SEND calls; or `__next__`) yields
 * the Future while it is pending (the driver, Task, waits for it and resumes the coroutine with
 * `send(None)`), and once it is done ends the await with its result or raises its exception.
 * `FutureCore.send(coro)` is the driver's `coro.send(None)` answering a (done, value) pair: with
 * am_send, neither an await's end nor a coroutine's makes and catches a StopIteration. The
 * fields read are the Python subclass's slots: `_state` (0 pending, 1 done, 2 failed), `_value`,
 * `_claimed`, `context`, and the context's `_unwaited` count. tasks.py keeps a Python twin (a
 * generator) used where this builtin is absent: native mode and outside a VM. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include "runtime.h"

static PyObject *str_state, *str_value, *str_claimed, *str_context, *str_unwaited;

/* Future.claim(): a callout counted as unwaited (see Dispatcher.check_unwaited) is awaited now. */
static int claim(PyObject *future) {
    PyObject *claimed = PyObject_GetAttr(future, str_claimed);
    if (claimed == NULL) return -1;
    int done = PyObject_IsTrue(claimed);
    Py_DECREF(claimed);
    if (done != 0) return done < 0 ? -1 : 0;
    if (PyObject_SetAttr(future, str_claimed, Py_True) < 0) return -1;
    PyObject *context = PyObject_GetAttr(future, str_context);
    if (context == NULL) return -1;
    int status = 0;
    if (context != Py_None) {
        PyObject *count = PyObject_GetAttr(context, str_unwaited);
        long n = count != NULL ? PyLong_AsLong(count) : -1;
        Py_XDECREF(count);
        if (n == -1 && PyErr_Occurred()) status = -1;
        else if (n > 0) {
            PyObject *less = PyLong_FromLong(n - 1);
            status = less != NULL ? PyObject_SetAttr(context, str_unwaited, less) : -1;
            Py_XDECREF(less);
        }
    }
    Py_DECREF(context);
    return status;
}

static PyObject *future_await(PyObject *future) {
    if (claim(future) < 0) return NULL;
    return Py_NewRef(future);
}

/* How an await of `future` goes on: PYGEN_NEXT with the future itself while it is pending (the
 * driver waits for it); else PYGEN_RETURN with its result, or PYGEN_ERROR with its exception set. */
static PySendResult future_step(PyObject *future, PyObject **result) {
    *result = NULL;
    PyObject *state = PyObject_GetAttr(future, str_state);
    if (state == NULL) return PYGEN_ERROR;
    long s = PyLong_AsLong(state);
    Py_DECREF(state);
    if (s == -1 && PyErr_Occurred()) return PYGEN_ERROR;
    if (s == 0) {
        *result = Py_NewRef(future);
        return PYGEN_NEXT;
    }
    PyObject *value = PyObject_GetAttr(future, str_value);
    if (value == NULL) return PYGEN_ERROR;
    if (s == 2 && PyExceptionInstance_Check(value)) {
        PyErr_SetObject((PyObject *)Py_TYPE(value), value); /* keeps its traceback, chains like raise */
        Py_DECREF(value);
        return PYGEN_ERROR;
    }
    *result = value;
    return PYGEN_RETURN;
}

/* am_send: what CPython's SEND (the loop of `await`) calls through PyIter_Send. Ending the await
 * with PYGEN_RETURN hands its result over without making and catching a StopIteration. */
static PySendResult future_send(PyObject *future, PyObject *arg, PyObject **result) {
    (void)arg; /* the driver resumes with send(None) */
    return future_step(future, result);
}

/* __next__, for anything that iterates the awaitable itself instead of sending into it. */
static PyObject *future_next(PyObject *future) {
    PyObject *result;
    PySendResult status = future_step(future, &result);
    if (status == PYGEN_RETURN) {
        _PyGen_SetStopIterationValue(result);
        Py_CLEAR(result);
    }
    return result;
}

/* FutureCore.send(coro): the driver's `coro.send(None)` without StopIteration: (False, what the
 * coroutine yielded) when it waits, (True, what it returned) when it ends; its exception, raised. */
static PyObject *future_core_send(PyObject *unused, PyObject *coro) {
    (void)unused;
    PyObject *result;
    PySendResult status = PyIter_Send(coro, Py_None, &result);
    if (status == PYGEN_ERROR) return NULL;
    PyObject *pair = PyTuple_Pack(2, status == PYGEN_RETURN ? Py_True : Py_False, result);
    Py_DECREF(result);
    return pair;
}

static PyMethodDef future_methods[] = {
    {"send", future_core_send, METH_O | METH_STATIC,
     "send(coro) -> (done, value): coro.send(None) as a pair instead of StopIteration."},
    {NULL, NULL, 0, NULL},
};

static PyAsyncMethods future_async = {.am_await = future_await, .am_send = future_send};

static PyTypeObject FutureCoreType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "_proxywasm.FutureCore",
    .tp_basicsize = sizeof(PyObject),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE,
    .tp_doc = "The await protocol of proxywasm.tasks.Future (the subclass defines the fields).",
    .tp_as_async = &future_async,
    .tp_iternext = future_next,
    .tp_methods = future_methods,
    .tp_new = PyType_GenericNew,
};

int runtime_add_future_core(PyObject *module) {
    if ((str_state = PyUnicode_InternFromString("_state")) == NULL ||
        (str_value = PyUnicode_InternFromString("_value")) == NULL ||
        (str_claimed = PyUnicode_InternFromString("_claimed")) == NULL ||
        (str_context = PyUnicode_InternFromString("context")) == NULL ||
        (str_unwaited = PyUnicode_InternFromString("_unwaited")) == NULL)
        return -1;
    return PyModule_AddType(module, &FutureCoreType);
}
