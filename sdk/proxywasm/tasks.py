"""Await-style callbacks: a small driver for the coroutines of ``async def`` callbacks.

No asyncio (it would cost memory in every VM, and Envoy has its own event loop): a callback's
coroutine runs until it awaits a :class:`Future` (a callout's answer, a whole body, a
:func:`gather`); Envoy's delivery of that answer resumes it (``send`` / ``throw``), and the end of
the stream closes it (``close``: its ``finally`` blocks run).

For a stream callback the dispatcher applies these rules (see :class:`~proxywasm.HttpContext`):

- the coroutine finishes without waiting: what it returns is the callback's result;
- it waits: the callback answers Envoy ``PAUSE`` (the stream is held) and, when the coroutine
  finishes, a local reply it sent stands; ``None`` / ``CONTINUE`` resumes the stream direction of
  the callback; ``PAUSE`` keeps it paused (resume it yourself); an exception meets the plugin's
  failure policy.

Waiting for a body: ``await self.request_body()`` makes the SDK answer Envoy's body callbacks
with PAUSE (Envoy buffers) until the end of the body. Envoy delivers no body callback while a
headers callback holds the stream (it turns a headers PAUSE into StopAllIterationAndWatermark),
unless the plugin's ``allow_on_headers_stop_iteration`` is true: so, by default, a coroutine that
waits for the body lets the headers go on first (see :meth:`HttpContext.request_body`).
"""

from __future__ import annotations

from . import hostcalls
from ._dispatch import BIT, dispatcher
from ._dispatch import author_mistake as author_mistake
from .abi import Action, BufferType, StreamType
from .budget import BudgetExceeded
from .errors import BodyTooLarge, UsageError

_core: Any = getattr(hostcalls.raw, "FutureCore", None)  # the builtin; outside a VM, _outside answers a function
_C_DRIVER = isinstance(_core, type)  # inside a VM: futures.c's twins of the hot parts below
TYPE_CHECKING = False  # typing is not imported at run time: it would cost memory in every VM
if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Coroutine, Generator
    from typing import Any, Generic, TypeVar

    from .callouts import GrpcCallResponse, HttpCallResponse  # noqa: F401 - in base classes below
    from .context import Context, HttpContext

    T = TypeVar("T")

    class _FutureBase(Generic[T]):
        pass

    def _send(coro: Coroutine[Any, Any, Any]) -> tuple[bool, Any]:
        """``coro.send(None)`` as (False, what it yielded) or (True, what it returned)."""

else:
    T = None

    class _FutureAwait:
        """The await protocol of Future where the runtime's C twin (sdk/runtime/futures.c,
        ``_proxywasm.FutureCore``) is absent: natively and outside a VM. The same rules: awaiting
        claims the future; a pending one is yielded to the driver, which resumes the coroutine
        with ``send(None)`` once it is done; then the result is returned or the exception raised."""

        __slots__ = ()

        def __await__(self):  # type: ignore[no-untyped-def]
            self.claim()  # Future.claim (natively: no inlining for speed here)
            while self._state == _PENDING:
                yield self
            if self._state == _FAILED:
                raise self._value
            return self._value

    if isinstance(_core, type):
        _send = _core.send  # (done, value) without a StopIteration: see futures.c
    else:

        def _send(coro):  # type: ignore[no-untyped-def]
            try:
                return False, coro.send(None)
            except StopIteration as stop:
                return True, stop.value

    class _FutureBase(_core if isinstance(_core, type) else _FutureAwait):  # type: ignore[misc]
        """Future is generic for type checkers only (typing costs memory in every VM)."""

        __slots__ = ()

        def __class_getitem__(cls, item: object) -> type:
            return cls


_PENDING, _DONE, _FAILED = 0, 1, 2
_REQUEST, _RESPONSE = int(StreamType.REQUEST), int(StreamType.RESPONSE)  # exact ints: see _dispatch.py
# Plain ints for the actions the driver answers: ``Action.PAUSE`` is a class attribute behind a
# metaclass, which CPython 3.11 looks up without specialising (40 ns of VM time each).
_CONTINUE, _PAUSE = int(Action.CONTINUE), int(Action.PAUSE)


from ._dispatch import _COROUTINE as COROUTINE  # noqa: E402 - the type of what an ``async def`` returns

_current: Task | None = None  # the task whose coroutine is running right now


def current_task() -> Task | None:
    return _current


class Future(_FutureBase[T]):
    """Something an ``async def`` callback can ``await``: a callout's answer, a whole body, a
    :func:`gather`. Envoy's delivery of the result resumes the waiting coroutine."""

    __slots__ = ("_claimed", "_state", "_value", "_waiters", "context")

    def __init__(self, context: Context | None = None) -> None:
        self._state = _PENDING
        self._value: Any = None
        self._waiters: list[Callable[[Future[Any]], None]] | None = None
        self._claimed = True  # only callouts start unclaimed (callouts._track counts them until awaited)
        self.context = context

    def done(self) -> bool:
        return self._state != _PENDING

    def result(self) -> T:
        """The result; raises the failure's exception, or :class:`UsageError` while pending."""
        if self._state == _PENDING:
            raise UsageError(f"{self!r} has no result yet: await it")
        if self._state == _FAILED:
            raise self._value
        return self._value  # type: ignore[no-any-return]

    def set_result(self, value: T) -> None:
        if self._state == _PENDING:
            self._state, self._value = _DONE, value
            waiters, self._waiters = self._waiters, None  # waking inlined: once per await
            for waiter in waiters or ():
                waiter(self)

    def set_exception(self, exc: BaseException) -> None:
        if self._state == _PENDING:
            self._state, self._value = _FAILED, exc
            waiters, self._waiters = self._waiters, None
            for waiter in waiters or ():
                waiter(self)

    def add_done_callback(self, callback: Callable[[Future[Any]], None]) -> None:
        """Call ``callback(future)`` once the future is done (now, if it already is)."""
        if self._state != _PENDING:
            callback(self)
        elif self._waiters is None:
            self._waiters = [callback]
        else:
            self._waiters.append(callback)

    def claim(self) -> None:
        if not self._claimed:
            self._claimed = True
            context = self.context
            if context is not None and context._unwaited > 0:
                context._unwaited -= 1

    if TYPE_CHECKING:  # at run time from _FutureBase: the runtime's C, or _FutureAwait

        def __await__(self) -> Generator[Any, None, T]: ...

    def __repr__(self) -> str:
        state = ("pending", "done", "failed")[self._state]
        return f"<{type(self).__name__} {state}>"


class Task(Future["Any"]):
    """Runs the coroutine of one callback (or one coroutine given to :func:`gather`); as a
    Future it completes with the coroutine's return value or exception."""

    __slots__ = ("_where", "closed", "coro", "direction", "parent", "replied_before", "waiting")

    def __init__(
        self,
        coro: Coroutine[Any, Any, Any],
        context: Context | None,
        where: str,
        direction: int | None = None,
        parent: Task | None = None,
    ) -> None:
        # Future.__init__'s fields, set here: one call less per callback coroutine
        self._state = _PENDING
        self._value = None
        self._waiters = None
        self._claimed = True
        self.context = context
        self.coro = coro
        self._where = where  # e.g. "Auth.on_request_headers", for messages (see where)
        self.direction = direction  # StreamType of a stream callback's coroutine, else None
        self.parent = parent
        self.waiting: Future[Any] | None = None
        self.closed = False
        # The stream already had a local reply when this coroutine started: that reply is passing
        # through this (response) callback, and the coroutine's own result decides as usual.
        self.replied_before = context is not None and context._local_reply_sent

    @property
    def where(self) -> str:
        """The callback whose coroutine this is, e.g. "Auth.on_request_headers", for messages.
        start() stores only the method's name: the class is prefixed when a message needs it
        (formatting it per request costs more than the messages ever need)."""
        where = self._where
        if self.direction is not None and self.parent is None and "." not in where:
            where = self._where = f"{type(self.context).__name__}.{where}"
        return where

    def step(self, exc: BaseException | None = None) -> list[Callable[[Future[Any]], None]] | None:
        """Run the coroutine until it waits or ends (``send(None)``: an awaited future's __next__
        gives the await its result; or ``throw(exc)``). Answers None while it waits; once it
        ended (the task DONE with what it returned, or FAILED with what it raised) the waiters
        the caller must call, taken out of the task. Inside a VM, :func:`_step` is the runtime's C
        twin of this (sdk/runtime/futures.c) for ``exc=None``; the two follow the same rules."""
        global _current
        while True:
            previous, _current = _current, self
            try:
                if exc is None:
                    done, yielded = _send(self.coro)
                else:
                    try:
                        done, yielded = False, self.coro.throw(exc)
                    except StopIteration as stop:
                        done, yielded = True, stop.value
            except BaseException as err:
                _ending_with(self, err)
                self._state, self._value = _FAILED, err
                waiters, self._waiters = self._waiters, None
                return waiters
            finally:
                _current = previous
            if done:
                self._state, self._value = _DONE, yielded
                waiters, self._waiters = self._waiters, None
                return waiters
            if isinstance(yielded, Future):
                self.waiting = yielded
                if yielded._state == _PENDING and yielded._waiters is None:  # add_done_callback, inlined
                    yielded._waiters = [self._resume]
                else:
                    yielded.add_done_callback(self._resume)
                return None
            exc = self._bad_await(yielded)

    def _bad_await(self, yielded: Any) -> UsageError:
        return UsageError(
            f"{self.where} awaited {yielded!r}: a proxywasm callback can await only what the SDK returns "
            "(http_call/grpc_call without a callback, request_body, response_body, gather); asyncio and "
            "other event loops do not run inside Envoy"
        )

    def _resume(self, future: Future[Any]) -> None:
        if self.closed or self.waiting is not future:
            return
        self.waiting = None
        wanted = self.context.context_id if self.context is not None else 0
        running = _effective_context()
        switch = wanted != 0 and wanted != running  # not `not in (0, running)`: a tuple per await
        if switch:  # resumed from another context's callback (a callout answer goes to the root)
            hostcalls.set_effective_context(wanted)
        try:
            for waiter in _step(self) or ():  # the awaited future's __next__ gives the await its result or raises
                waiter(self)
        finally:
            if switch:
                hostcalls.set_effective_context(running)

    def close(self) -> None:
        """Close the coroutine (its ``finally`` blocks run); nothing happens to the stream."""
        global _current
        if self.closed or self._state != _PENDING:
            return
        self.closed = True
        self.waiting = None
        previous, _current = _current, self
        try:
            self.coro.close()
        except BaseException as err:
            _report(f"closing the coroutine of {self.where}", err)
        finally:
            _current = previous


def _ending_with(task: Task, err: BaseException) -> None:
    """A task's coroutine raised ``err`` (Task.step and its C twin call this first)."""
    if isinstance(err, BudgetExceeded):  # natively a subclass (proxywasm_host.native.budget)
        _name_coroutine(err, task)


def _after_bad_await(task: Task, yielded: Any) -> list[Callable[[Future[Any]], None]] | None:
    """The C step's coroutine awaited something that is no proxywasm Future: the Python step
    throws the error into it (it may catch it and go on)."""
    return task.step(task._bad_await(yielded))


def _name_coroutine(err: BudgetExceeded, task: Task) -> None:
    """The budget names the Envoy callback whose time ran out; after an await that is another
    callback than the coroutine's own (e.g. on_http_call_response for on_request_headers): say so."""
    message = str(err)
    callback = message.partition(" ran longer than")[0]
    if callback and f".{callback}" not in f".{task.where}" and "(resuming" not in message:
        err.args = (message.replace(" ran longer than", f" (resuming the coroutine of {task.where} after an await) "
                                    "ran longer than", 1),)  # fmt: skip


if _C_DRIVER:  # the runtime's C twin of Task.step
    _core.configure(Future, Task, globals(), _ending_with, _after_bad_await)
    _step: Callable[[Task], list[Callable[[Future[Any]], None]] | None] = _core.step
else:
    _step = Task.step


def _report(where: str, exc: BaseException) -> None:
    dispatcher.report(where, exc)


class _Gather(Future["list[Any]"]):
    __slots__ = ("remaining", "results", "return_exceptions")

    def __init__(self, children: list[Future[Any]], return_exceptions: bool, context: Context | None) -> None:
        super().__init__(context)
        self.results: list[Any] = [None] * len(children)
        self.remaining = len(children)
        self.return_exceptions = return_exceptions
        if not children:
            self.set_result([])
        for i, child in enumerate(children):
            child.claim()
            child.add_done_callback(lambda done, i=i: self._child_done(i, done))  # type: ignore[misc]

    def _child_done(self, index: int, child: Future[Any]) -> None:
        if self._state != _PENDING:
            if child._state == _FAILED and isinstance(child, Task):  # nobody will see it otherwise
                _report(f"{child.where}, after gather() had already finished", child._value)
            return
        if child._state == _FAILED and not self.return_exceptions:
            self.set_exception(child._value)
            return
        self.results[index] = child._value
        self.remaining -= 1
        if not self.remaining:
            self.set_result(self.results)


def gather(*awaitables: Awaitable[Any], return_exceptions: bool = False) -> Future[list[Any]]:
    """Await several callouts (or coroutines) at once: ``a, b = await gather(call_a, call_b)``.

    Callouts run in parallel anyway (each was sent when created); a coroutine given here starts
    running right away. The result lists their results in argument order. The first exception
    is raised as soon as it happens (the others keep running; their answers are dropped), unless
    ``return_exceptions=True`` puts exceptions in the list instead.
    """
    parent = _current
    children: list[Future[Any]] = []
    for item in awaitables:
        if isinstance(item, Future):
            children.append(item)
        elif type(item) is COROUTINE:
            if parent is None:
                item.close()
                raise UsageError("gather() of coroutines works only inside an async def callback")
            child = Task(item, parent.context, f"{parent.where} (gather)", parent.direction, parent)
            stream = stream_state(parent.context) if parent.context is not None else None
            if stream is not None:
                stream.tasks.append(child)
            _step(child)  # the child is new: it has no waiters to call when it ends here
            children.append(child)
        else:
            raise UsageError(f"gather() takes proxywasm awaitables or coroutines, not {item!r}")
    return _Gather(children, return_exceptions, parent.context if parent else None)


# ---- streams: what the SDK tracks for a stream whose callbacks await ----


class StreamState:
    """Per stream context (created when a stream callback's coroutine starts). Indexed by
    direction (``StreamType.REQUEST`` / ``RESPONSE``)."""

    __slots__ = ("armed", "bodies", "direct", "flags", "in_callback", "suspended", "tasks")

    def __init__(self) -> None:
        self.tasks: list[Task] = []  # live tasks of this stream (callbacks' and gather's)
        self.suspended: list[Task | None] = [None, None]  # the callback coroutine waiting, per direction
        self.flags = [0, 0]  # _HELD | _HEADERS_HELD | _AUTHOR_PAUSED | _ENDED | _FORWARDED, per direction
        self.bodies: list[BodyFuture | None] = [None, None]  # a coroutine waits for the whole body
        self.in_callback: int | None = None  # the direction whose Envoy callback is running now
        self.direct: int | None = None  # the action a coroutine finishing inside that callback chose
        self.armed = False  # on_done is routed to the SDK because coroutines wait (see _arm)


_ON_DONE = BIT["on_done"]


_update_callbacks = hostcalls.update_callbacks
_effective_context = hostcalls.raw.effective_context  # the builtin: _resume asks once per await
_continue_stream = hostcalls.raw.continue_stream


def _arm(context: Context, state: StreamState) -> None:
    """A coroutine of this context waits: have Envoy's on_done reach the SDK, which closes it if
    the stream ends first. Only while something waits: a finished stream saves the crossing."""
    if not state.armed:
        state.armed = True
        if not context._own_on_done:  # an on_done of the class's own keeps its bit
            _update_callbacks(context.context_id, _ON_DONE, 0)


def _disarm(context: Context, state: StreamState) -> None:
    """Nothing of this context waits any more."""
    if state.armed:
        state.armed = False
        if not context._own_on_done:
            _update_callbacks(context.context_id, 0, _ON_DONE)


# StreamState.flags bits (one int per direction, not a list per flag: a stream's state is built
# per request):
_HELD = 1  # the SDK answered Envoy PAUSE and has not continued since
_HEADERS_HELD = 2  # ... and that PAUSE came from the headers callback
_AUTHOR_PAUSED = 4  # a finished coroutine returned PAUSE: keep holding
_ENDED = 8  # Envoy delivered the end of this direction
_FORWARDED = 16  # some body of this direction already went on


def stream_state(context: Context) -> StreamState:
    state: StreamState | None = context._streams
    if state is None:
        state = context._streams = StreamState()
    return state


class BodyFuture(Future[bytes]):
    __slots__ = ("direction", "max_bytes")

    def __init__(self, context: Context, direction: int, max_bytes: int) -> None:
        super().__init__(context)
        self.direction = direction
        self.max_bytes = max_bytes


_BODY: dict[int, BufferType] = {_REQUEST: BufferType.HTTP_REQUEST_BODY, _RESPONSE: BufferType.HTTP_RESPONSE_BODY}
_SIDE: dict[int, str] = {_REQUEST: "request", _RESPONSE: "response"}


def _buffered(context: Context, direction: int) -> bytes:
    """The body Envoy has buffered for this filter so far."""
    buffer = _BODY[direction]

    def read() -> bytes:
        size = hostcalls.get_buffer_size(buffer)
        return hostcalls.get_buffer(buffer, 0, size) if size else b""

    try:
        return context._act(read)
    except hostcalls.HostCallError:
        return b""  # Envoy holds no body for this filter (none arrived)


def wait_for_body(context: HttpContext, direction: int, max_bytes: int) -> Future[bytes]:
    """What :meth:`HttpContext.request_body` / ``response_body`` return."""
    side = _SIDE[direction]
    task = _current
    if task is None or task.context is not context:
        raise UsageError(f"await self.{side}_body() inside an async def callback of this stream")
    if task.direction != direction:
        raise UsageError(
            f"{task.where} awaits self.{side}_body(), but it is a coroutine of the "
            f"{_SIDE[task.direction] if task.direction is not None else 'plugin'}: the {side} body can be awaited "
            f"only from a {side} callback (on_{side}_headers, on_{side}_body, on_{side}_trailers)"
        )
    state = stream_state(context)
    waiting = state.bodies[direction]
    if waiting is not None:
        return waiting
    if state.flags[direction] & _FORWARDED:
        raise UsageError(
            f"{task.where} awaits self.{side}_body(), but part of the {side} body already went on (a body callback "
            f"returned CONTINUE): await it from on_{side}_headers, before the body flows"
        )
    if state.flags[direction] & _ENDED:
        data = _buffered(context, direction)
        if len(data) > max_bytes:
            _too_large(context, state, direction, len(data), max_bytes)
            raise BodyTooLarge(side, len(data), max_bytes)
        done: Future[bytes] = Future(context)
        done.set_result(data)
        return done
    future = BodyFuture(context, direction, max_bytes)
    state.bodies[direction] = future
    if state.flags[direction] & _HEADERS_HELD and not context.allow_on_headers_stop_iteration:
        # Envoy delivers no body while the headers callback holds the stream: let the headers on.
        context._act(hostcalls.continue_stream, direction)
        state.flags[direction] &= ~(_HELD | _HEADERS_HELD)
    return future


def _too_large(context: HttpContext, state: StreamState, direction: int, size: int, max_bytes: int) -> None:
    if not context._local_reply_sent:
        if direction == _REQUEST:
            context._act(context._send_local_reply, 413, b"Payload Too Large\n", "request_body_too_large")
        else:
            context._act(context._send_local_reply, 500, b"Internal Server Error\n", "response_body_too_large")


# ---- hooks the dispatcher calls for the contexts of classes with async callbacks ----


def start(context: Context, coro: Coroutine[Any, Any, Any], name: str, direction: int, kind: int, eos: bool) -> int:
    """Run a stream callback's coroutine; returns the action for Envoy. ``name``: the callback's
    (e.g. "on_request_headers"); ``kind``: 0 headers, 1 body, 2 trailers; ``eos``: the callback's
    end_of_stream.

    Once per awaiting request: the StreamState and the Task are copies of prototypes (see clone)."""
    state = context._streams
    if state is None:
        state = context._streams = clone(_STREAM_STATE)
    if eos or kind == 2:
        state.flags[direction] |= _ENDED
    elif kind == 0:
        state.flags[direction] &= ~_ENDED
    task = clone(_STREAM_TASK)  # Task(coro, context, name, direction)
    task.context = context
    task.coro = coro
    task._where = name
    task.direction = direction
    task.replied_before = context._local_reply_sent
    state.tasks.append(task)
    outer, state.in_callback = state.in_callback, direction
    try:
        _step(task)  # the task is new: it has no waiters to call when it ends here
    finally:
        state.in_callback = outer
    if task._state != _PENDING:
        return _first_result(context, task)
    state.suspended[direction] = task
    task._waiters = [_finished]  # what add_done_callback does for a pending task nobody else waits for
    if not state.armed:  # _arm, inlined: once per stream
        state.armed = True
        if not context._own_on_done:
            _update_callbacks(context.context_id, _ON_DONE, 0)
    if kind == 0 and state.bodies[direction] is not None and not context.allow_on_headers_stop_iteration:  # type: ignore[attr-defined]
        return _CONTINUE  # Envoy delivers the body only after the headers went on
    held = state.flags[direction] | _HELD
    state.flags[direction] = (held | _HEADERS_HELD) if kind == 0 else (held & ~_HEADERS_HELD)
    return _PAUSE


def _clone_slots(prototype: T) -> T:
    """A new object of the prototype's class with its slot values, each list copied: what the
    runtime's ``FutureCore.clone`` does in one call (natively and outside a VM: this twin)."""
    cls = type(prototype)
    copy = cls.__new__(cls)
    for klass in cls.__mro__:
        for name in klass.__dict__.get("__slots__", ()):
            value = getattr(prototype, name)
            setattr(copy, name, value[:] if type(value) is list else value)
    return copy


# What an awaiting stream's objects start as (start() and callouts.http_call fill in the rest):
# a copy of a prototype costs one call instead of an __init__ frame or a dozen attribute stores.
clone: Callable[[T], T] = _core.clone if _C_DRIVER else _clone_slots
_STREAM_STATE = StreamState()
_STREAM_TASK = Task(None, None, "")  # type: ignore[arg-type]


def _end_descendants(context: Context, state: StreamState, task: Task) -> None:
    """``task`` is done: close the coroutines it started with gather() that still run (their
    finally blocks run; their answers would find nobody waiting), and forget them."""
    tasks = state.tasks
    if len(tasks) == 1 and tasks[0] is task:  # the usual case: no gather() children
        tasks.clear()
        if state.armed:  # _disarm, inlined: once per stream
            state.armed = False
            if not context._own_on_done:
                _update_callbacks(context.context_id, 0, _ON_DONE)
        return
    ending = {id(task)}
    for other in list(tasks):  # parents come before the coroutines they start
        if other is task or (other.parent is not None and id(other.parent) in ending):
            ending.add(id(other))
            other.close()
            state.tasks.remove(other)
    if not tasks and state.armed:
        _disarm(context, state)


def _first_result(context: Context, task: Task) -> int:
    _end_descendants(context, stream_state(context), task)
    if task._state == _FAILED:
        exc = task._value
        if isinstance(exc, BodyTooLarge) and context._local_reply_sent:
            return _PAUSE
        return dispatcher.stream_error(context, task.where, exc)
    if context._local_reply_sent and not task.replied_before:
        return _PAUSE  # the coroutine's local reply stands: the stream goes no further
    result = task._value
    action = _CONTINUE if result is None else result
    if context._unwaited:
        dispatcher.check_unwaited(context, task.where, action)
    return action


def _finished(task: Future[Any]) -> None:
    """A stream callback's coroutine that had waited is done: apply the completion rules."""
    assert isinstance(task, Task)
    context = task.context
    assert context is not None and task.direction is not None
    direction = task.direction
    state: StreamState = context._streams  # type: ignore[assignment]  # start() created it
    if state.suspended[direction] is task:
        state.suspended[direction] = None
    tasks = state.tasks
    if len(tasks) == 1 and tasks[0] is task:  # _end_descendants's usual case, inlined: once per stream
        tasks.clear()
        if state.armed:
            state.armed = False
            if not context._own_on_done:
                _update_callbacks(context.context_id, 0, _ON_DONE)
    else:
        _end_descendants(context, state, task)
    replied = context._local_reply_sent and not task.replied_before
    if task._state == _FAILED:
        exc = task._value
        if isinstance(exc, BodyTooLarge) and replied:
            action: int = _PAUSE
        else:
            action = dispatcher.stream_error(context, task.where, exc)
    elif replied:
        action = _PAUSE
    else:
        action = _CONTINUE if task._value is None else int(task._value)
        if context._unwaited:
            dispatcher.check_unwaited(context, task.where, action)
    if replied:
        return
    if state.in_callback == direction:  # inside an Envoy callback of this direction: answer through it
        state.direct = action
        return
    if action == _CONTINUE:
        if state.flags[direction] & _HELD:
            if _effective_context() == context.context_id:  # usual: resumed from this stream's callout answer
                _continue_stream(direction)  # the builtin (context._act's call(*args) costs a frame in V8)
            else:
                context._act(hostcalls.continue_stream, direction)
        state.flags[direction] &= ~(_HELD | _HEADERS_HELD)
    else:
        state.flags[direction] |= _AUTHOR_PAUSED


def _answer(state: StreamState, direction: int, resolve: Callable[[], None]) -> int:
    """Resolve something inside an Envoy callback of ``direction`` and answer that callback."""
    outer, state.in_callback = state.in_callback, direction
    state.direct = None
    try:
        resolve()
    finally:
        state.in_callback = outer
    action = state.direct
    state.direct = None
    if action is None:  # still waiting: keep holding
        state.flags[direction] |= _HELD
        return _PAUSE
    if action == _CONTINUE:
        state.flags[direction] &= ~(_HELD | _HEADERS_HELD)
    else:
        state.flags[direction] |= _HELD | _AUTHOR_PAUSED
    return action


def body_event(context: HttpContext, direction: int, size: int, eos: bool) -> int | None:
    """A body callback for a stream that may await: the action, or None to run the filter's own
    body callback."""
    state: StreamState | None = context._streams
    if state is None:
        return None
    if eos:
        state.flags[direction] |= _ENDED
    waiter = state.bodies[direction]
    if waiter is not None:
        if size > waiter.max_bytes:
            state.bodies[direction] = None
            _too_large(context, state, direction, size, waiter.max_bytes)
            return _answer(state, direction, lambda: waiter.set_exception(BodyTooLarge(_SIDE[direction], size,
                                                                                       waiter.max_bytes)))  # fmt: skip
        if not eos:
            state.flags[direction] |= _HELD
            return _PAUSE  # Envoy buffers; the next call sees all of it so far
        data = hostcalls.get_buffer(_BODY[direction], 0, size) if size else b""
        state.bodies[direction] = None
        return _answer(state, direction, lambda: waiter.set_result(data))
    if state.suspended[direction] is not None or state.flags[direction] & _AUTHOR_PAUSED:
        state.flags[direction] |= _HELD
        return _PAUSE
    return None


def trailers_event(context: HttpContext, direction: int) -> int | None:
    """Trailers end the body: a coroutine waiting for it gets what Envoy buffered."""
    state: StreamState | None = context._streams
    if state is None:
        return None
    state.flags[direction] |= _ENDED
    waiter = state.bodies[direction]
    if waiter is not None:
        state.bodies[direction] = None
        data = _buffered(context, direction)
        if len(data) > waiter.max_bytes:
            _too_large(context, state, direction, len(data), waiter.max_bytes)
            return _answer(state, direction, lambda: waiter.set_exception(BodyTooLarge(_SIDE[direction], len(data),
                                                                                       waiter.max_bytes)))  # fmt: skip
        return _answer(state, direction, lambda: waiter.set_result(data))
    if state.suspended[direction] is not None or state.flags[direction] & _AUTHOR_PAUSED:
        state.flags[direction] |= _HELD
        return _PAUSE
    return None


def body_forwarded(context: Context, direction: int, size: int, action: int | None) -> None:
    """The filter's own body callback answered: remember body that went on."""
    if size and not action:
        stream_state(context).flags[direction] |= _FORWARDED


def resumed(context: Context, direction: int) -> None:
    """The filter resumed the direction itself (resume_request / resume_response)."""
    state: StreamState | None = context._streams
    if state is not None:
        state.flags[direction] &= ~(_HELD | _HEADERS_HELD | _AUTHOR_PAUSED)


def close_all(context: Context) -> None:
    """The stream ends: close every coroutine still waiting (their ``finally`` blocks run)."""
    state: StreamState | None = context._streams
    if state is None:
        return
    tasks, state.tasks = state.tasks, []
    state.suspended = [None, None]
    state.bodies = [None, None]
    _disarm(context, state)
    for task in tasks:
        task.close()


def start_plain(
    context: Context, coro: Coroutine[Any, Any, Any], where: str, on_error: Callable[[BaseException], None]
) -> None:
    """Run the coroutine of a callback that has no stream to hold (a plugin's on_tick, a callout's
    callback). Closed with the context's other tasks."""
    task = Task(coro, context, where)
    state = stream_state(context)
    state.tasks.append(task)
    _step(task)  # the task is new: it has no waiters to call when it ends here
    if task._state == _PENDING:

        def done(finished: Future[Any]) -> None:
            _end_descendants(context, state, task)
            if finished._state == _FAILED:
                on_error(finished._value)

        task.add_done_callback(done)
        _arm(context, state)
    else:
        _end_descendants(context, state, task)
        if task._state == _FAILED:
            on_error(task._value)


class HttpCallFuture(Future["HttpCallResponse"]):
    """An HTTP callout in flight, for ``await``: its result is the
    :class:`~proxywasm.callouts.HttpCallResponse` (raises :class:`~proxywasm.errors.CalloutFailed`
    when Envoy delivered no response)."""

    __slots__ = ("cluster", "token")

    def __init__(self, context: Context, cluster: str) -> None:
        # Future.__init__'s fields, set here: one call less per awaited callout
        self._state = _PENDING
        self._value = None
        self._waiters = None
        self._claimed = True
        self.context = context
        self.cluster = cluster
        self.token = 0

    def __repr__(self) -> str:
        state = ("pending", "done", "failed")[self._state]
        return f"<HttpCallFuture token={self.token} cluster={self.cluster!r} {state}>"


HTTP_CALL_FUTURE = HttpCallFuture(None, "")  # type: ignore[arg-type]  # callouts.http_call's prototype (see clone)
HTTP_CALL_FUTURE._claimed = False  # counted until awaited (Future.claim), not a mistake then


class GrpcCallFuture(Future["GrpcCallResponse"]):
    """A unary gRPC call in flight, for ``await``: its result is the
    :class:`~proxywasm.callouts.GrpcCallResponse` whatever its status (check ``.ok``); it never
    raises for a gRPC status."""

    __slots__ = ("cluster", "token")

    def __init__(self, context: Context, cluster: str) -> None:
        super().__init__(context)
        self.cluster = cluster
        self.token = 0
