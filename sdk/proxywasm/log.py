"""Logging to Envoy's log: ``proxywasm.log.info("...")``, ``print`` (info) and ``sys.stderr``
(error), and the standard ``logging`` module when a filter imports it. Envoy drops messages
below its own level (``--log-level`` / ``--component-log-level wasm:debug``)."""

from __future__ import annotations

import sys

from . import hostcalls
from .abi import LogLevel

TYPE_CHECKING = False  # typing is not imported at run time: it would cost memory in every VM
if TYPE_CHECKING:
    from typing import Any

_raw = hostcalls.raw
_TRACE, _DEBUG, _INFO, _WARN, _ERROR, _CRITICAL = (
    LogLevel.TRACE, LogLevel.DEBUG, LogLevel.INFO, LogLevel.WARN, LogLevel.ERROR, LogLevel.CRITICAL,
)  # fmt: skip


def trace(message: str) -> None:
    try:
        _raw.log(_TRACE, message)  # the host directly (see hostcalls.raw); log() handles surrogates
    except UnicodeEncodeError:
        hostcalls.log(LogLevel.TRACE, message)


def debug(message: str) -> None:
    try:
        _raw.log(_DEBUG, message)  # the host directly (see hostcalls.raw); log() handles surrogates
    except UnicodeEncodeError:
        hostcalls.log(LogLevel.DEBUG, message)


def info(message: str) -> None:
    try:
        _raw.log(_INFO, message)  # the host directly (see hostcalls.raw); log() handles surrogates
    except UnicodeEncodeError:
        hostcalls.log(LogLevel.INFO, message)


def warn(message: str) -> None:
    try:
        _raw.log(_WARN, message)  # the host directly (see hostcalls.raw); log() handles surrogates
    except UnicodeEncodeError:
        hostcalls.log(LogLevel.WARN, message)


def error(message: str) -> None:
    try:
        _raw.log(_ERROR, message)  # the host directly (see hostcalls.raw); log() handles surrogates
    except UnicodeEncodeError:
        hostcalls.log(LogLevel.ERROR, message)


def critical(message: str) -> None:
    try:
        _raw.log(_CRITICAL, message)  # the host directly (see hostcalls.raw); log() handles surrogates
    except UnicodeEncodeError:
        hostcalls.log(LogLevel.CRITICAL, message)


def level() -> LogLevel:
    """Envoy's current log level for Wasm."""
    return hostcalls.get_log_level()


class LogWriter:
    """A text stream that sends each complete line to Envoy's log at one level."""

    encoding = "utf-8"
    errors = "replace"

    def __init__(self, level: LogLevel) -> None:
        self.level = level
        self._pending = ""

    def write(self, text: str) -> int:
        self._pending += text
        if "\n" in self._pending:
            *lines, self._pending = self._pending.split("\n")
            for line in lines:
                hostcalls.log(self.level, line)
        return len(text)

    def flush(self) -> None:
        if self._pending:
            hostcalls.log(self.level, self._pending)
            self._pending = ""

    def isatty(self) -> bool:
        return False

    def writable(self) -> bool:
        return True


def install_stdio() -> None:
    sys.stdout = LogWriter(LogLevel.INFO)  # type: ignore[assignment,unused-ignore]
    sys.stderr = LogWriter(LogLevel.ERROR)  # type: ignore[assignment,unused-ignore]


def route_logging() -> None:
    """Send the ``logging`` module's records to Envoy, if the filter uses it."""
    logging: Any = sys.modules.get("logging")
    if logging is None:
        return
    levels = {
        logging.DEBUG: LogLevel.DEBUG,
        logging.INFO: LogLevel.INFO,
        logging.WARNING: LogLevel.WARN,
        logging.ERROR: LogLevel.ERROR,
        logging.CRITICAL: LogLevel.CRITICAL,
    }

    class EnvoyHandler(logging.Handler):  # type: ignore[misc]
        def emit(self, record: Any) -> None:
            level = levels.get(record.levelno, LogLevel.TRACE if record.levelno < logging.DEBUG else LogLevel.ERROR)
            hostcalls.log(level, self.format(record))

    root = logging.getLogger()
    root.handlers[:] = [EnvoyHandler()]
    root.setLevel(logging.DEBUG)
