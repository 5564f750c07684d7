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
 * generator) used where this builtin is absent: native mode and outside a VM.
 *
 * The driver's hot path is here too, for the same reason (measured with bench/virtual_cpu.py:
 * the callout workload's await style went from 16.5 to 15.4 virtual us per request against 14.4
 * for callbacks): `FutureCore.step(task)` is Task.step without an exception to throw, and
 * `FutureCore.clone(prototype)` makes an awaiting stream's StreamState, Task and callout future
 * from prototypes in one call. tasks.py's Python twins follow the same rules. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include "runtime.h"
#include "structmember.h" /* PyMemberDescrObject, T_OBJECT_EX: a slot's offset */

static PyObject *str_state, *str_value, *str_claimed, *str_context, *str_unwaited, *str_current, *str_coro;

/* FutureCore.configure(Future, Task, globals, ending, after_bad_await) (tasks.py, at import) tells
 * this file where the Python classes keep their fields: the byte offsets of their __slots__ (from
 * the slots' member descriptors), so the await and the driver's step read and write them
 * directly instead of looking each name up (a lookup is most of an attribute access's cost in the
 * VM). Until then (and for an object of another type) the fields are looked up by name. */
static PyTypeObject *future_type, *task_type;
static Py_ssize_t off_state, off_value, off_waiters, off_claimed, off_context, off_coro, off_waiting;
static PyObject *task_globals; /* tasks.py's module dict: its `_current` is the running task */
static PyObject *task_resume;  /* Task._resume, the function: bound to a task, an awaited future's waiter */
static PyObject *task_ending;  /* tasks._ending_with(task, exc): a coroutine raised (rare) */
static PyObject *task_bad_await; /* tasks._after_bad_await(task, yielded): it awaited something else (rare) */
static PyObject *int_done, *int_failed;

#define SLOT(obj, off) (*(PyObject **)((char *)(obj) + (off)))

/* Replace a slot's value (a new reference is taken to `value`). */
static void slot_set(PyObject *obj, Py_ssize_t off, PyObject *value) {
    PyObject *old = SLOT(obj, off);
    SLOT(obj, off) = Py_NewRef(value);
    Py_XDECREF(old);
}

/* A slot's value, borrowed; NULL with AttributeError when the slot is empty. */
static PyObject *slot_get(PyObject *obj, Py_ssize_t off, PyObject *name) {
    PyObject *value = SLOT(obj, off);
    if (value == NULL) PyErr_SetObject(PyExc_AttributeError, name);
    return value;
}

static int is_future(PyObject *obj) { return future_type != NULL && PyObject_TypeCheck(obj, future_type); }

/* Future.claim(): a callout counted as unwaited (see Dispatcher.check_unwaited) is awaited now. */
static int claim(PyObject *future) {
    if (is_future(future)) {
        PyObject *claimed = slot_get(future, off_claimed, str_claimed);
        if (claimed == NULL) return -1;
        if (claimed == Py_True) return 0;
    }
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
    int known = is_future(future);
    PyObject *state = known ? Py_XNewRef(slot_get(future, off_state, str_state)) : PyObject_GetAttr(future, str_state);
    if (state == NULL) return PYGEN_ERROR;
    long s = PyLong_AsLong(state);
    Py_DECREF(state);
    if (s == -1 && PyErr_Occurred()) return PYGEN_ERROR;
    if (s == 0) {
        *result = Py_NewRef(future);
        return PYGEN_NEXT;
    }
    PyObject *value = known ? Py_XNewRef(slot_get(future, off_value, str_value)) : PyObject_GetAttr(future, str_value);
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

/* The byte offset of the slot `name` of `cls` (its member descriptor in the class dict). */
static int slot_offset(PyObject *cls, const char *name, Py_ssize_t *offset) {
    PyObject *descr = PyDict_GetItemString(((PyTypeObject *)cls)->tp_dict, name);
    if (descr == NULL || !Py_IS_TYPE(descr, &PyMemberDescr_Type) ||
        ((PyMemberDescrObject *)descr)->d_member->type != T_OBJECT_EX) {
        PyErr_Format(PyExc_TypeError, "FutureCore.configure: %s.%s is not a slot", ((PyTypeObject *)cls)->tp_name,
                     name);
        return -1;
    }
    *offset = ((PyMemberDescrObject *)descr)->d_member->offset;
    return 0;
}

static PyObject *future_core_configure(PyObject *unused, PyObject *const *args, Py_ssize_t nargs) {
    (void)unused;
    if (nargs != 5 || !PyType_Check(args[0]) || !PyType_Check(args[1]) || !PyDict_Check(args[2])) {
        PyErr_SetString(PyExc_TypeError, "configure(Future, Task, globals, ending, after_bad_await)");
        return NULL;
    }
    PyObject *future = args[0], *task = args[1];
    PyObject *resume = PyDict_GetItemString(((PyTypeObject *)task)->tp_dict, "_resume");
    if (slot_offset(future, "_state", &off_state) < 0 || slot_offset(future, "_value", &off_value) < 0 ||
        slot_offset(future, "_waiters", &off_waiters) < 0 || slot_offset(future, "_claimed", &off_claimed) < 0 ||
        slot_offset(future, "context", &off_context) < 0 || slot_offset(task, "coro", &off_coro) < 0 ||
        slot_offset(task, "waiting", &off_waiting) < 0)
        return NULL;
    if (resume == NULL || !PyFunction_Check(resume) || !PyType_IsSubtype((PyTypeObject *)task, (PyTypeObject *)future)) {
        PyErr_SetString(PyExc_TypeError, "FutureCore.configure: Task must be a Future with a _resume function");
        return NULL;
    }
    Py_XSETREF(future_type, (PyTypeObject *)Py_NewRef(future));
    Py_XSETREF(task_type, (PyTypeObject *)Py_NewRef(task));
    Py_XSETREF(task_globals, Py_NewRef(args[2]));
    Py_XSETREF(task_resume, Py_NewRef(resume));
    Py_XSETREF(task_ending, Py_NewRef(args[3]));
    Py_XSETREF(task_bad_await, Py_NewRef(args[4]));
    Py_RETURN_NONE;
}

/* Mark `task` ended (state DONE or FAILED, value) and answer its waiters, taken out of it: the
 * caller calls them (from Python, so that calling them enters no new eval loop). */
static PyObject *task_end(PyObject *task, PyObject *state, PyObject *value) {
    slot_set(task, off_state, state);
    slot_set(task, off_value, value);
    PyObject *waiters = SLOT(task, off_waiters);
    SLOT(task, off_waiters) = Py_NewRef(Py_None);
    return waiters != NULL ? waiters : Py_NewRef(Py_None);
}

/* FutureCore.step(task): Task.step() of tasks.py without an exception to throw, in C. Runs the
 * task's coroutine (`send(None)`, with tasks._current set to the task) until it waits for a
 * Future (registered as the future's waiter: task._resume) or ends. Answers None while it waits,
 * else the waiters to call (None or a list) once the task is marked DONE with what the coroutine
 * returned or FAILED with what it raised (tasks._ending_with(task, exc) sees the exception first).
 * Awaiting anything else goes to tasks._after_bad_await(task, yielded), which throws the error in. */
static PyObject *future_core_step(PyObject *unused, PyObject *task) {
    (void)unused;
    if (task_type == NULL || !PyObject_TypeCheck(task, task_type)) {
        PyErr_SetString(PyExc_TypeError, "FutureCore.step: not a configured Task");
        return NULL;
    }
    PyObject *coro = slot_get(task, off_coro, str_coro);
    if (coro == NULL) return NULL;
    Py_INCREF(coro);
    PyObject *previous = PyDict_GetItemWithError(task_globals, str_current);
    if (previous == NULL && PyErr_Occurred()) {
        Py_DECREF(coro);
        return NULL;
    }
    previous = Py_NewRef(previous != NULL ? previous : Py_None);
    if (PyDict_SetItem(task_globals, str_current, task) < 0) {
        Py_DECREF(coro);
        Py_DECREF(previous);
        return NULL;
    }
    PyObject *result = NULL;
    PySendResult status = PyIter_Send(coro, Py_None, &result);
    Py_DECREF(coro);
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    int restored = PyDict_SetItem(task_globals, str_current, previous);
    Py_DECREF(previous);
    if (restored < 0) {
        Py_XDECREF(type);
        Py_XDECREF(value);
        Py_XDECREF(tb);
        Py_XDECREF(result);
        return NULL;
    }
    if (status == PYGEN_ERROR) {
        if (type == NULL) {
            Py_XDECREF(result);
            PyErr_SetString(PyExc_SystemError, "FutureCore.step: the coroutine failed without an exception");
            return NULL;
        }
        PyErr_NormalizeException(&type, &value, &tb);
        if (tb != NULL) PyException_SetTraceback(value, tb);
        Py_XDECREF(type);
        Py_XDECREF(tb);
        PyObject *named = PyObject_CallFunctionObjArgs(task_ending, task, value, NULL);
        if (named == NULL) {
            Py_DECREF(value);
            return NULL;
        }
        Py_DECREF(named);
        PyObject *waiters = task_end(task, int_failed, value);
        Py_DECREF(value);
        return waiters;
    }
    if (status == PYGEN_RETURN) {
        PyObject *waiters = task_end(task, int_done, result);
        Py_DECREF(result);
        return waiters;
    }
    if (!is_future(result)) {
        PyObject *answer = PyObject_CallFunctionObjArgs(task_bad_await, task, result, NULL);
        Py_DECREF(result);
        return answer;
    }
    slot_set(task, off_waiting, result);
    PyObject *waiter = PyMethod_New(task_resume, task);
    if (waiter == NULL) {
        Py_DECREF(result);
        return NULL;
    }
    PyObject *state = SLOT(result, off_state), *waiters = SLOT(result, off_waiters);
    int registered = -1;
    if (state != NULL && PyLong_CheckExact(state) && PyLong_AsLong(state) == 0 && waiters == Py_None) {
        PyObject *list = PyList_New(1); /* add_done_callback, inlined: once per await */
        if (list != NULL) {
            PyList_SET_ITEM(list, 0, Py_NewRef(waiter));
            slot_set(result, off_waiters, list);
            Py_DECREF(list);
            registered = 0;
        }
    } else {
        PyObject *added = PyObject_CallMethod(result, "add_done_callback", "O", waiter);
        registered = added != NULL ? 0 : -1;
        Py_XDECREF(added);
    }
    Py_DECREF(waiter);
    Py_DECREF(result);
    if (registered < 0) return NULL;
    Py_RETURN_NONE;
}

/* FutureCore.clone(prototype): a new object of the prototype's class with the prototype's slot
 * values (a list value copied, so the copy's lists are its own). What tasks.py makes per awaiting
 * stream (its StreamState and Task) starts as a copy of a prototype: one call instead of a dozen
 * attribute stores. Only for classes whose instances are nothing but object slots after the
 * object header (__slots__ on bases without fields of their own, no __dict__, no __weakref__). */
static PyObject *future_core_clone(PyObject *unused, PyObject *prototype) {
    (void)unused;
    PyTypeObject *type = Py_TYPE(prototype);
    Py_ssize_t size = type->tp_basicsize;
    if (type->tp_itemsize != 0 || type->tp_dictoffset != 0 || type->tp_weaklistoffset != 0 ||
        !(type->tp_flags & Py_TPFLAGS_HEAPTYPE) || (size - (Py_ssize_t)sizeof(PyObject)) % sizeof(PyObject *) != 0) {
        PyErr_Format(PyExc_TypeError, "FutureCore.clone: %s instances are not only slots", type->tp_name);
        return NULL;
    }
    PyObject *copy = type->tp_alloc(type, 0);
    if (copy == NULL) return NULL;
    for (Py_ssize_t off = sizeof(PyObject); off < size; off += sizeof(PyObject *)) {
        PyObject *value = SLOT(prototype, off);
        if (value != NULL && PyList_CheckExact(value)) {
            value = PyList_GetSlice(value, 0, PyList_GET_SIZE(value));
            if (value == NULL) {
                Py_DECREF(copy);
                return NULL;
            }
        } else {
            Py_XINCREF(value);
        }
        SLOT(copy, off) = value;
    }
    return copy;
}

static PyMethodDef future_methods[] = {
    {"clone", future_core_clone, METH_O | METH_STATIC,
     "clone(prototype): a new instance with the prototype's slot values (lists copied)."},
    {"send", future_core_send, METH_O | METH_STATIC,
     "send(coro) -> (done, value): coro.send(None) as a pair instead of StopIteration."},
    {"configure", (PyCFunction)(void (*)(void))future_core_configure, METH_FASTCALL | METH_STATIC,
     "configure(Future, Task, globals, ending, after_bad_await): where the driver's fields are."},
    {"step", future_core_step, METH_O | METH_STATIC,
     "step(task) -> None while it waits, else the waiters to call: Task.step() in C."},
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
        (str_unwaited = PyUnicode_InternFromString("_unwaited")) == NULL ||
        (str_current = PyUnicode_InternFromString("_current")) == NULL ||
        (str_coro = PyUnicode_InternFromString("coro")) == NULL || (int_done = PyLong_FromLong(1)) == NULL ||
        (int_failed = PyLong_FromLong(2)) == NULL)
        return -1;
    return PyModule_AddType(module, &FutureCoreType);
}
