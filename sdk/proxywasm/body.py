"""Bodies and L4 data as views over an Envoy buffer."""

from __future__ import annotations

from . import hostcalls
from .abi import BufferType

_raw = hostcalls.raw  # read() calls the host directly (see hostcalls.raw)


class Body:
    """The part of a body (or connection data) Envoy has handed to the current callback.

    When a body callback returns :attr:`Action.PAUSE`, Envoy keeps buffering, and the next call
    sees everything received so far. ``bytes(body)`` / :meth:`read` copy it out;
    :meth:`replace`, :meth:`append`, :meth:`prepend` and :meth:`clear` change what Envoy forwards.
    """

    __slots__ = ("buffer_type", "size")

    def __init__(self, buffer_type: BufferType, size: int) -> None:
        # The dispatcher's body callbacks set these two slots without calling __init__ (a frame
        # less per chunk): a new field must be set there too.
        self.buffer_type = buffer_type
        self.size = size

    def __len__(self) -> int:
        return self.size

    def read(self, start: int = 0, size: int | None = None) -> bytes:
        if self.size == 0:
            return b""
        data: bytes = _raw.get_buffer_bytes(self.buffer_type, start, self.size - start if size is None else size)
        return data

    def __bytes__(self) -> bytes:
        return self.read()

    def text(self, encoding: str = "utf-8", errors: str = "surrogateescape") -> str:
        """The body as text. With the default ``surrogateescape``, bytes that are not valid UTF-8
        survive as lone surrogates: :meth:`replace` with that text writes back the same bytes."""
        return self.read().decode(encoding, errors)

    def replace(self, data: bytes | str) -> None:
        data = hostcalls.to_bytes(data)
        hostcalls.set_buffer(self.buffer_type, 0, self.size, data)
        self.size = len(data)

    def append(self, data: bytes | str) -> None:
        data = hostcalls.to_bytes(data)
        hostcalls.set_buffer(self.buffer_type, self.size, 0, data)
        self.size += len(data)

    def prepend(self, data: bytes | str) -> None:
        data = hostcalls.to_bytes(data)
        hostcalls.set_buffer(self.buffer_type, 0, 0, data)
        self.size += len(data)

    def clear(self) -> None:
        self.replace(b"")

    def __repr__(self) -> str:
        return f"Body({self.buffer_type.name}, {self.size} bytes)"
