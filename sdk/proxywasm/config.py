"""Reading a JSON plugin configuration with messages that name the key and the problem.

Envoy hands ``on_configure`` the plugin configuration as bytes (``PluginConfig.configuration``;
Istio's ``WasmPlugin.spec.pluginConfig`` arrives as JSON). :func:`parse` turns JSON bytes into a
:class:`Config`, whose typed getters record what was read and raise :class:`ConfigError` with the
key's path (``providers[0].issuer``) and what is wrong::

    def on_configure(self, configuration):
        config = proxywasm.config.parse(configuration)
        self.header = config.string("header", default="authorization")
        self.limit = config.integer("limit", minimum=1)            # required
        self.rules = [Rule(r) for r in config.objects("rules", default=[])]
        config.done()                                          # unknown keys are mistakes
        return True

A :class:`ConfigError` raised from ``on_configure`` rejects the configuration (as returning
``False`` does) and is logged as one line, ``proxywasm: configuration rejected: PATH: PROBLEM``,
without a traceback: the operator who wrote the configuration needs the key, not the filter's code.

Small own code rather than a schema library: everything imported into the filter costs memory in
every VM of every Envoy worker, and the filters need only these few checks.
"""

from __future__ import annotations

import json

from .budget import CONFIG_KEY as _BUDGET_KEY
from .errors import ConfigError as ConfigError  # defined with the other exceptions; raised from here

TYPE_CHECKING = False  # typing is not imported at run time: it would cost memory in every VM
if TYPE_CHECKING:
    from collections.abc import Iterable
    from typing import Any


class _Required:
    def __repr__(self) -> str:
        return "REQUIRED"


REQUIRED: Any = _Required()
"""The default of a getter's ``default``: the key must be present."""

_TYPE_NAMES = {str: "a string", int: "an integer", float: "a number", bool: "true or false",
               list: "a list", dict: "an object"}  # fmt: skip


def _describe(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return f"the number {value!r}"
    if isinstance(value, str):
        return f"the string {value[:40]!r}"
    if isinstance(value, list):
        return "a list"
    return "an object"


def _closest(word: str, options: Iterable[str]) -> str | None:
    """The option at edit distance at most 2 from ``word`` (a misspelt key), if any; else the one
    option that begins or ends with ``word``, or that ``word`` begins or ends with, the shorter of
    the two 3 characters or more: ``timeout`` for ``timeout_ms`` (a unit or qualifier left out)."""
    options = list(options)
    best, best_distance = None, 3
    for option in options:
        previous = list(range(len(option) + 1))
        for i, a in enumerate(word, 1):
            current = [i]
            for j, b in enumerate(option, 1):
                current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (a != b)))
            previous = current
        if previous[-1] < best_distance:
            best, best_distance = option, previous[-1]
    if best is None:
        extended = [
            option
            for option in options
            for short, long in [sorted((word, option), key=len)]
            if len(short) >= 3 and (long.startswith(short) or long.endswith(short))
        ]
        if len(extended) == 1:
            best = extended[0]
    return best


def parse(configuration: bytes | str, *, empty: dict[str, Any] | None = None) -> Config:
    """The configuration, a JSON object, as a :class:`Config`. Empty bytes give ``empty`` (default:
    an empty object, so every key takes its default). Raises :class:`ConfigError` when the bytes
    are not JSON (with the line and column) or not an object."""
    text = configuration.decode("utf-8", "replace") if isinstance(configuration, (bytes, bytearray)) else configuration
    if not text.strip():
        return Config(dict(empty or {}))
    try:
        data = json.loads(text)
    except ValueError as err:
        where = f" at line {err.lineno} column {err.colno}" if isinstance(err, json.JSONDecodeError) else ""
        reason = err.msg if isinstance(err, json.JSONDecodeError) else str(err)
        raise ConfigError("", f"the configuration is not JSON{where}: {reason}") from None
    if not isinstance(data, dict):
        raise ConfigError("", f"the configuration must be a JSON object, not {_describe(data)}")
    config = Config(data)
    config.ignore(_BUDGET_KEY)  # the runtime reads the CPU budget (see proxywasm.budget)
    return config


class Config:
    """A JSON object of the configuration at ``path``. Getters raise :class:`ConfigError`;
    :meth:`done` raises on keys no getter read."""

    def __init__(self, data: dict[str, Any], path: str = "") -> None:
        self.data = data
        self.path = path
        self._read: set[str] = set()

    def where(self, key: str) -> str:
        """The path of ``key`` in this object, as messages show it."""
        return f"{self.path}.{key}" if self.path else key

    def __contains__(self, key: str) -> bool:
        return key in self.data

    def error(self, key: str, problem: str) -> ConfigError:
        """A :class:`ConfigError` about ``key`` (for checks the getters do not make)."""
        return ConfigError(self.where(key), problem)

    def _get(self, key: str, kind: type, default: Any) -> Any:
        self._read.add(key)
        if key not in self.data:
            if default is REQUIRED:
                hint = _closest(key, [k for k in self.data if k not in self._read])
                raise self.error(key, f"missing: {_TYPE_NAMES[kind]} is required"
                                      + (f" (is {hint!r} a misspelling?)" if hint else ""))  # fmt: skip
            return default
        value = self.data[key]
        ok = isinstance(value, kind) and not (kind is not bool and isinstance(value, bool))
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value, ok = float(value), True
        if kind is int and isinstance(value, float) and value.is_integer():
            value, ok = int(value), True
        if not ok:
            raise self.error(key, f"must be {_TYPE_NAMES[kind]}, not {_describe(value)}")
        return value

    def string(self, key: str, default: Any = REQUIRED, *, choices: Iterable[str] | None = None,
            non_empty: bool = False) -> Any:  # fmt: skip
        """A string; ``choices`` limits it to those values, ``non_empty`` refuses ``""``."""
        value = self._get(key, str, default)
        if key not in self.data:
            return value
        if non_empty and not value:
            raise self.error(key, "must not be empty")
        if choices is not None:
            options = list(choices)
            if value not in options:
                hint = _closest(value, options)
                listed = ", ".join(repr(o) for o in options)
                raise self.error(key, f"must be one of {listed}, not {value!r}" + (f" (did you mean {hint!r}?)"
                                                                                    if hint else ""))  # fmt: skip
        return value

    def integer(self, key: str, default: Any = REQUIRED, *, minimum: int | None = None,
            maximum: int | None = None) -> Any:  # fmt: skip
        """An integer (``10.0`` counts) within ``[minimum, maximum]``."""
        value = self._get(key, int, default)
        if key in self.data:
            self._bounds(key, value, minimum, maximum)
        return value

    def number(self, key: str, default: Any = REQUIRED, *, minimum: float | None = None,
              maximum: float | None = None) -> Any:  # fmt: skip
        """A number (an integer counts) within ``[minimum, maximum]``."""
        value = self._get(key, float, default)
        if key in self.data:
            self._bounds(key, value, minimum, maximum)
        return value

    def _bounds(self, key: str, value: float, minimum: float | None, maximum: float | None) -> None:
        if minimum is not None and value < minimum:
            raise self.error(key, f"must be at least {minimum}, not {value}")
        if maximum is not None and value > maximum:
            raise self.error(key, f"must be at most {maximum}, not {value}")

    def duration(self, key: str, default: Any = REQUIRED, *, unit: str = "ms", positive: bool = False) -> Any:
        """A duration as Envoy writes one in JSON (``"1s"``, ``"0.5s"``) or in milliseconds
        (``"250ms"``), as an int of ``unit`` (``"ms"`` or ``"ns"``, rounded down); ``default`` is
        such a string (or None, returned as is). ``positive`` refuses zero too."""
        text = self.string(key, default)
        if text is None:
            return None
        millis = text.endswith("ms")
        scale = (1 if millis else 1000) if unit == "ms" else (1_000_000 if millis else 1_000_000_000)
        number = text[:-2] if millis else text[:-1] if text.endswith("s") else None
        try:
            value = float(number) if number is not None else -1.0
        except ValueError:
            value = -1.0
        if value < 0 or (positive and value == 0) or value != value:  # negative, (zero), unparsable or NaN
            kind = "a positive duration" if positive else "a duration"
            raise self.error(key, f'must be {kind} such as "1s" or "250ms", not {text!r}')
        return int(value * scale)

    def boolean(self, key: str, default: Any = REQUIRED) -> Any:
        """``true`` or ``false``."""
        return self._get(key, bool, default)

    def object(self, key: str, default: Any = REQUIRED) -> Any:
        """A nested object as a :class:`Config` (``default`` is returned as given when absent;
        pass ``{}`` to read an absent object's keys with their defaults)."""
        value = self._get(key, dict, default)
        if key not in self.data and not isinstance(value, dict):
            return value
        return Config(value, self.where(key))

    def array(self, key: str, default: Any = REQUIRED, *, of: type | None = None, non_empty: bool = False) -> Any:
        """A list; ``of`` checks every item's type (``str``, ``int``, ``float``, ``bool``)."""
        value = self._get(key, list, default)
        if key not in self.data:
            return value
        if non_empty and not value:
            raise self.error(key, "must not be empty")
        if of is not None:
            for i, item in enumerate(value):
                ok = isinstance(item, of) and not (of is not bool and isinstance(item, bool))
                if of is float and isinstance(item, int) and not isinstance(item, bool):
                    ok = True
                if not ok:
                    raise ConfigError(f"{self.where(key)}[{i}]", f"must be {_TYPE_NAMES[of]}, not {_describe(item)}")
        return list(value)

    def objects(self, key: str, default: Any = REQUIRED, *, non_empty: bool = False) -> Any:
        """A list of objects, each as a :class:`Config` (``rules[0]``, ``rules[1]``...)."""
        value = self._get(key, list, default)
        if key not in self.data:
            return value
        if non_empty and not value:
            raise self.error(key, "must not be empty")
        out = []
        for i, item in enumerate(value):
            where = f"{self.where(key)}[{i}]"
            if not isinstance(item, dict):
                raise ConfigError(where, f"must be an object, not {_describe(item)}")
            out.append(Config(item, where))
        return out

    def mapping(self, key: str, default: Any = REQUIRED, *, of: type | None = None) -> Any:
        """An object used as a map (any keys); ``of`` checks every value's type."""
        value = self._get(key, dict, default)
        if key not in self.data or of is None:
            return value if key not in self.data else dict(value)
        for name, item in value.items():
            ok = isinstance(item, of) and not (of is not bool and isinstance(item, bool))
            if not ok:
                raise ConfigError(f"{self.where(key)}.{name}", f"must be {_TYPE_NAMES[of]}, not {_describe(item)}")
        return dict(value)

    def ignore(self, *keys: str) -> None:
        """Accept ``keys`` without reading them (e.g. keys another component reads)."""
        self._read.update(keys)

    def done(self) -> None:
        """Raise :class:`ConfigError` on the first key no getter read: a misspelt key would
        otherwise silently take its default. Objects from :meth:`object` and
        :meth:`objects` check their own keys when their own ``done()`` is called."""
        for key in self.data:
            if key not in self._read:
                hint = _closest(key, [k for k in self._read if k not in self.data])
                raise self.error(key, "unknown key" + (f" (did you mean {hint!r}?)" if hint else ""))
