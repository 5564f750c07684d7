"""The SDK's fast paths (issue 14) give what the plain code they replace gave: the header-map wire
codec against a pair-by-pair reference, the header-name cache and the msgpack fast paths (outside a
VM), and header values that are not UTF-8 through the header map's fast paths (in the local host's
Wasm VM; tests/sdk/test_mistakes_and_fixes.py runs such values through real Envoy)."""

from __future__ import annotations

import random
import struct
from typing import Any

import pytest

from proxywasm import abi, headers, msgpack, properties
from proxywasm_host import Host


def reference_encode(pairs: list[tuple[bytes, bytes]]) -> bytes:
    out = struct.pack("<I", len(pairs))
    for key, value in pairs:
        out += struct.pack("<II", len(key), len(value))
    for key, value in pairs:
        out += key + b"\0" + value + b"\0"
    return out


def reference_decode(data: bytes) -> list[tuple[bytes, bytes]]:
    """Walk the sizes pair by pair (ignores the NULs and anything after the last pair)."""
    if not data:
        return []
    if len(data) < 4:
        raise ValueError("short")
    (count,) = struct.unpack_from("<I", data)
    if 4 + 8 * count > len(data):
        raise ValueError("count")
    sizes = struct.unpack_from(f"<{2 * count}I", data, 4)
    pos, out = 4 + 8 * count, []
    for i in range(count):
        klen, vlen = sizes[2 * i], sizes[2 * i + 1]
        if pos + klen + vlen + 2 > len(data):
            raise ValueError("pair")
        out.append((data[pos : pos + klen], data[pos + klen + 1 : pos + klen + 1 + vlen]))
        pos += klen + vlen + 2
    return out


def random_bytes(rng: random.Random) -> bytes:
    return bytes(rng.choice(b"ab:\0") for _ in range(rng.randint(0, 4)))  # NULs inside names and values too


def test_header_map_codec_matches_the_reference() -> None:
    rng = random.Random(14)
    for _ in range(5000):
        pairs = [(random_bytes(rng), random_bytes(rng)) for _ in range(rng.randint(0, 5))]
        encoded = abi.encode_map(pairs)
        assert encoded == reference_encode(pairs) == abi.encode_map(iter(pairs))
        assert abi.decode_map(encoded) == pairs == abi.decode_map(memoryview(encoded))
        damaged = encoded + random_bytes(rng)  # bytes after the last pair are ignored
        if rng.random() < 0.5 and len(damaged) > 4:
            i = rng.randrange(len(damaged))
            damaged = damaged[:i] + bytes([rng.randrange(256)]) + damaged[i + 1 :]
        if rng.random() < 0.2:
            damaged = damaged[: rng.randrange(len(damaged) + 1)]
        try:
            expected = reference_decode(damaged)
        except ValueError:
            with pytest.raises(ValueError):
                abi.decode_map(damaged)
        else:
            assert abi.decode_map(damaged) == expected


def test_encode_map_refuses_what_is_not_a_pair() -> None:
    with pytest.raises(ValueError):
        abi.encode_map([(b"a", b"b", b"c")])  # type: ignore[list-item]
    with pytest.raises(TypeError):
        abi.encode_map([("a", b"b")])  # type: ignore[list-item]


def test_header_name_cache_is_bounded_and_case_insensitive() -> None:
    headers._KEYS.clear()
    assert headers._key("X-Api-Key") == b"x-api-key"
    assert headers._KEYS["X-Api-Key"] == b"x-api-key"
    assert headers._key(b"X-B") == b"x-b"
    for i in range(headers._KEYS_MAX * 2):
        assert headers._key(f"H{i}") == f"h{i}".encode()
    assert len(headers._KEYS) == headers._KEYS_MAX

    class Name(str):
        pass

    assert headers._key(Name("X-Sub")) == b"x-sub"  # a str subclass works, is not kept
    assert not any(type(k) is Name for k in headers._KEYS)
    headers._KEYS.clear()


MSGPACK_VALUES = [
    None, True, False, 0, 1, 127, 128, 255, 256, 65535, 65536, 2**32 - 1, 2**32, 2**64 - 1, -1, -32, -33, -128,
    -129, -(2**15), -(2**15) - 1, -(2**31), -(2**31) - 1, -(2**63), 0.5, -2.25, "", "a", "x" * 31, "x" * 32,
    "é" * 200, "y" * 70000, b"", b"\x00\xff", b"z" * 300, [], [1, "a", None], (1, 2), list(range(20)), {},
    {"a": 1, "b": [True, {"c": b"d"}]}, {i: i for i in range(20)},
]  # fmt: skip


# The encodings the MessagePack specification gives these values (the smallest form that fits).
MSGPACK_WIRE = [
    (0, b"\x00"), (127, b"\x7f"), (128, b"\xcc\x80"), (255, b"\xcc\xff"), (256, b"\xcd\x01\x00"),
    (65536, b"\xce\x00\x01\x00\x00"), (2**32, b"\xcf\x00\x00\x00\x01\x00\x00\x00\x00"), (-1, b"\xff"),
    (-32, b"\xe0"), (-33, b"\xd0\xdf"), (-129, b"\xd1\xff\x7f"), ("", b"\xa0"), ("ab", b"\xa2ab"),
    ("\u00e9", b"\xa2\xc3\xa9"), ("x" * 31, b"\xbf" + b"x" * 31), ("x" * 32, b"\xd9\x20" + b"x" * 32),
    ("\u00e9" * 16, b"\xd9\x20" + "\u00e9".encode() * 16), (None, b"\xc0"), (True, b"\xc3"), (False, b"\xc2"),
    ([], b"\x90"), ({}, b"\x80"), (b"", b"\xc4\x00"),
]  # fmt: skip


@pytest.mark.parametrize(("value", "wire"), MSGPACK_WIRE, ids=repr)
def test_msgpack_writes_the_specified_encoding(value: object, wire: bytes) -> None:
    assert msgpack.packb(value) == wire
    assert msgpack.unpackb(wire) == value


@pytest.mark.parametrize("value", MSGPACK_VALUES, ids=repr)
def test_msgpack_round_trips(value: object) -> None:
    packed = msgpack.packb(value)
    expected = list(value) if isinstance(value, tuple) else value
    assert msgpack.unpackb(packed) == expected
    assert type(msgpack.unpackb(packed)) is type(expected)


COPY_FILTER = """
import proxywasm
from proxywasm import HttpContext, log


@proxywasm.register
class Copy(HttpContext):
    def on_request_headers(self, headers, end_of_stream):
        value = headers["X-Raw"]  # text with surrogates when the bytes are not UTF-8
        log.info(f"raw {value}")  # logged with escapes, not an exception
        headers["x-copy"] = value
        headers.add("x-added", value)
        headers["x-get"] = headers.get("x-raw", "")
        headers["x-bytes"] = headers.get_bytes(b"x-raw")
        headers["x-present"] = str("x-raw" in headers and b"X-RAW" in headers and 5 not in headers)
"""


@pytest.mark.parametrize("raw", [b"plain", "caf\u00e9".encode(), b"caf\xe9 \xff"], ids=["ascii", "utf-8", "not-utf-8"])
def test_header_values_keep_their_bytes_through_the_fast_paths(build_filter: Any, raw: bytes) -> None:
    host = Host.load(build_filter(COPY_FILTER))
    sent = host.request("GET", "/", headers=[("x-raw", raw)]).upstream_request
    assert sent is not None
    received = sent.header("x-raw")  # the host's text form of the bytes
    assert received is not None
    assert sent.header("x-copy") == sent.header("x-added") == sent.header("x-get") == sent.header("x-bytes") == received
    assert sent.header("x-present") == "True"
    logged = (
        raw.decode("utf-8", "surrogateescape").encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    )
    assert (2, f"raw {logged}") in host.logs


class FakeProperties:
    """Stands for the builtin module's get_property: Envoy's answers by encoded path, and each read."""

    def __init__(self, served: dict[bytes, bytes]) -> None:
        self.served = served
        self.reads: list[bytes] = []

    def get_property(self, path: bytes) -> bytes | None:
        self.reads.append(path)
        return self.served.get(path)


def test_route_and_cluster_names_read_once(monkeypatch: pytest.MonkeyPatch) -> None:
    # Envoy 1.40 answers "" for an unnamed route: that is the answer, not a reason to read the
    # pre-xds path too (each read costs a crossing into Envoy: bench/README.md, "Attribute reads").
    fake = FakeProperties({b"xds\0route_name": b"", b"xds\0cluster_name": b"backend", b"route_name": b"stale"})
    monkeypatch.setattr(properties, "_raw", fake)
    assert properties.route_name() is None
    assert properties.cluster_name() == "backend"
    assert fake.reads == [b"xds\0route_name", b"xds\0cluster_name"]
    # An Envoy that does not serve "xds" (before 1.3x): the top-level attribute.
    fake = FakeProperties({b"route_name": b"api", b"cluster_name": b"\xffc"})
    monkeypatch.setattr(properties, "_raw", fake)
    assert (properties.route_name(), properties.cluster_name()) == ("api", "\udcffc")
    assert fake.reads == [b"xds\0route_name", b"route_name", b"xds\0cluster_name", b"cluster_name"]


def test_property_paths_encode_as_before(monkeypatch: pytest.MonkeyPatch) -> None:
    served = {
        b"request\0path": b"/a?b",
        b"response\0code": (503).to_bytes(8, "little"),
        b"request\0headers": abi.encode_map([(b"k", b"v")]),
        b"filter_state\0wasm.\xffk": b"raw",
    }
    fake = FakeProperties(served)
    monkeypatch.setattr(properties, "_raw", fake)
    monkeypatch.setattr(properties, "_encoded", {})
    for _ in range(2):  # encoded, then from the cache
        assert properties.get_str("request", "path") == "/a?b"
        assert properties.get_int("response", "code") == 503
        assert properties.get_map("request", "headers") == [(b"k", b"v")]
        assert properties.get("filter_state", b"wasm.\xffk") == b"raw"  # type: ignore[arg-type]
        assert properties.get("never") is None
    paths: list[tuple[str | bytes, ...]] = [("request", "path"), ("response", "code"), ("request", "headers")]
    paths += [("filter_state", b"wasm.\xffk"), ("never",)]
    assert fake.reads == [abi.encode_property_path(p) for p in paths] * 2
    # Paths built from data stay bounded, and still read what they name; long ones are not kept.
    for i in range(300):
        served[f"p{i}".encode()] = str(i).encode()
        assert properties.get_str(f"p{i}") == str(i)
        assert 0 < len(properties._encoded) <= 256
    assert len(properties._encoded) < 256
    long = "k" * 200
    served[b"filter_state\0" + long.encode()] = b"v"
    assert properties.get("filter_state", long) == b"v"
    assert ("filter_state", long) not in properties._encoded
    # A bytearray segment (unhashable) still reads, as encode_property_path joins it.
    assert properties.get("filter_state", bytearray(long.encode())) == b"v"  # type: ignore[arg-type]
