"""jwt_auth: verify JSON Web Tokens (RFC 7519) on requests, as Envoy's jwt_authn filter does.

Tokens come from a header (default ``authorization: Bearer <token>``) or a cookie; signatures are
checked with keys from an inline JWKS or one fetched from a cluster (shared by the workers through
shared data and refreshed on tick). HS256/384/512, RS256/384/512, PS256/384/512 and ES256/384 are
verified in pure Python: the VM has no C crypto library, so RSA is ``pow()`` with the padding
checks of RFC 8017 and ECDSA is own P-256/P-384 arithmetic. Verified signatures are cached.

Configuration and behaviour: README.md beside this file.
"""

from __future__ import annotations

import binascii
import hashlib
import hmac
import json

import proxywasm
from proxywasm import CasMismatch, Counter, HostCallError, HttpContext, PluginContext, log, shared_data

TYPE_CHECKING = False  # typing is not imported at run time: it would cost memory in every VM
if TYPE_CHECKING:
    from typing import Any

    from proxywasm.callouts import HttpCallResponse
    from proxywasm.config import Config
    from proxywasm.headers import Headers
    from proxywasm.tasks import Future

# Declared at module level, so `proxywasm build` writes the stats_tags of their labels.
requests_total = Counter("jwt_auth_requests_total", labels=("result",))  # allowed, skipped, denied
denied_total = Counter("jwt_auth_denied_total", labels=("reason",))
jwks_fetches_total = Counter("jwt_auth_jwks_fetches_total", labels=("provider", "result"))
signature_cache_total = Counter("jwt_auth_signature_cache_total", labels=("result",))  # hit, miss


# ---------------------------------------------------------------------------------------------
# base64url (RFC 7515 section 2: no padding). binascii is built in; the base64 module imports re.

_TO_STANDARD = str.maketrans("-_", "+/")
_TO_URLSAFE = bytes.maketrans(b"+/", b"-_")


def b64url_decode(text: str) -> bytes:
    """Bytes of unpadded base64url ``text``; ValueError for anything else."""
    if not text.isascii() or "+" in text or "/" in text or "=" in text or len(text) % 4 == 1:
        raise ValueError("not base64url")
    padded = text.translate(_TO_STANDARD) + "=" * (-len(text) % 4)
    try:
        return binascii.a2b_base64(padded.encode("ascii"), strict_mode=True)
    except binascii.Error:
        raise ValueError("not base64url") from None


def b64url_encode(data: bytes) -> str:
    return binascii.b2a_base64(data, newline=False).translate(_TO_URLSAFE).rstrip(b"=").decode("ascii")


def b64url_int(text: str) -> int:
    return int.from_bytes(b64url_decode(text), "big")


# ---------------------------------------------------------------------------------------------
# RSA signature checks (RFC 8017): the public operation is pow(); the padding is checked here.

# DER DigestInfo prefixes of EMSA-PKCS1-v1_5 (RFC 8017 section 9.2, note 1).
_DIGEST_INFO = {
    "sha256": bytes.fromhex("3031300d060960864801650304020105000420"),
    "sha384": bytes.fromhex("3041300d060960864801650304020205000430"),
    "sha512": bytes.fromhex("3051300d060960864801650304020305000440"),
}


def _rsa_public(n: int, e: int, signature: bytes) -> int | None:
    """The RSA public operation on a signature of the modulus' length (RSAVP1), or None."""
    if len(signature) != (n.bit_length() + 7) // 8:
        return None
    s = int.from_bytes(signature, "big")
    return pow(s, e, n) if s < n else None


def rsa_pkcs1v15_verify(n: int, e: int, hash_name: str, message: bytes, signature: bytes) -> bool:
    """RSASSA-PKCS1-v1_5 (RS256/384/512)."""
    m = _rsa_public(n, e, signature)
    if m is None:
        return False
    k = len(signature)
    digest = _DIGEST_INFO[hash_name] + hashlib.new(hash_name, message).digest()
    if k < len(digest) + 11:
        return False
    expected = b"\x00\x01" + b"\xff" * (k - len(digest) - 3) + b"\x00" + digest
    return hmac.compare_digest(m.to_bytes(k, "big"), expected)


def _mgf1(hash_name: str, seed: bytes, length: int) -> bytes:
    out = b""
    counter = 0
    while len(out) < length:
        out += hashlib.new(hash_name, seed + counter.to_bytes(4, "big")).digest()
        counter += 1
    return out[:length]


def rsa_pss_verify(n: int, e: int, hash_name: str, message: bytes, signature: bytes) -> bool:
    """RSASSA-PSS with MGF1 of the same hash and a salt as long as the hash (PS256/384/512, as
    RFC 7518 section 3.5 requires)."""
    m = _rsa_public(n, e, signature)
    if m is None:
        return False
    em_bits = n.bit_length() - 1
    em_len = (em_bits + 7) // 8
    if m.bit_length() > em_bits:
        return False
    em = m.to_bytes(em_len, "big")
    m_hash = hashlib.new(hash_name, message).digest()
    h_len = s_len = len(m_hash)
    if em_len < h_len + s_len + 2 or em[-1] != 0xBC:
        return False
    masked_db, h = em[: em_len - h_len - 1], em[em_len - h_len - 1 : -1]
    unused_bits = 8 * em_len - em_bits
    if masked_db[0] >> (8 - unused_bits) if unused_bits else 0:
        return False
    mask = _mgf1(hash_name, h, len(masked_db))
    db = bytearray(a ^ b for a, b in zip(masked_db, mask, strict=True))
    db[0] &= 0xFF >> unused_bits
    zeros = em_len - h_len - s_len - 2
    if any(db[:zeros]) or db[zeros] != 0x01:
        return False
    salt = bytes(db[-s_len:])
    return hmac.compare_digest(h, hashlib.new(hash_name, b"\x00" * 8 + m_hash + salt).digest())


# ---------------------------------------------------------------------------------------------
# ECDSA on P-256 and P-384 (FIPS 186-4; curve constants from SEC 2). Both curves have a = -3,
# which the point doubling uses. Points are in Jacobian coordinates (X, Y, Z): x = X/Z^2,
# y = Y/Z^3, so no inversion is needed until the end.


class Curve:
    __slots__ = ("b", "g", "hash_name", "n", "name", "p", "size")

    def __init__(self, name: str, p: int, b: int, n: int, gx: int, gy: int, hash_name: str) -> None:
        self.name, self.p, self.b, self.n, self.g, self.hash_name = name, p, b, n, (gx, gy), hash_name
        self.size = (p.bit_length() + 7) // 8

    def on_curve(self, x: int, y: int) -> bool:
        p = self.p
        return 0 <= x < p and 0 <= y < p and (y * y - (x * x * x - 3 * x + self.b)) % p == 0


P256 = Curve(
    "P-256",
    p=0xFFFFFFFF00000001000000000000000000000000FFFFFFFFFFFFFFFFFFFFFFFF,
    b=0x5AC635D8AA3A93E7B3EBBD55769886BC651D06B0CC53B0F63BCE3C3E27D2604B,
    n=0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551,
    gx=0x6B17D1F2E12C4247F8BCE6E563A440F277037D812DEB33A0F4A13945D898C296,
    gy=0x4FE342E2FE1A7F9B8EE7EB4A7C0F9E162BCE33576B315ECECBB6406837BF51F5,
    hash_name="sha256",
)
P384 = Curve(
    "P-384",
    p=int("FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEFFFFFFFF0000000000000000FFFFFFFF", 16),
    b=int("B3312FA7E23EE7E4988E056BE3F82D19181D9C6EFE8141120314088F5013875AC656398D8A2ED19D2A85C8EDD3EC2AEF", 16),
    n=int("FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFC7634D81F4372DDF581A0DB248B0A77AECEC196ACCC52973", 16),
    gx=int("AA87CA22BE8B05378EB1C71EF320AD746E1D3B628BA79B9859F741E082542A385502F25DBF55296C3A545E3872760AB7", 16),
    gy=int("3617DE4A96262C6F5D9E98BF9292DC29F8F41DBD289A147CE9DA3113B5F0B8C00A60B1CE1D7E819D7A431D7C90EA0E5F", 16),
    hash_name="sha384",
)
CURVES = {"P-256": P256, "P-384": P384}

Point = tuple[int, int, int]  # Jacobian (X, Y, Z); Z == 0 is the point at infinity


def _double(pt: Point, p: int) -> Point:
    x, y, z = pt
    if not y or not z:
        return (1, 1, 0)
    delta = z * z % p
    gamma = y * y % p
    beta = x * gamma % p
    alpha = 3 * (x - delta) * (x + delta) % p  # a = -3
    x3 = (alpha * alpha - 8 * beta) % p
    z3 = ((y + z) ** 2 - gamma - delta) % p
    y3 = (alpha * (4 * beta - x3) - 8 * gamma * gamma) % p
    return (x3, y3, z3)


def _add_affine(pt: Point, x2: int, y2: int, p: int) -> Point:
    """pt + (x2, y2), the second point affine (Z = 1)."""
    x1, y1, z1 = pt
    if not z1:
        return (x2, y2, 1)
    z1z1 = z1 * z1 % p
    u2 = x2 * z1z1 % p
    s2 = y2 * z1 * z1z1 % p
    h = (u2 - x1) % p
    r = 2 * (s2 - y1) % p
    if not h:
        return _double(pt, p) if not r else (1, 1, 0)
    hh = h * h % p
    i = 4 * hh % p
    j = h * i % p
    v = x1 * i % p
    x3 = (r * r - j - 2 * v) % p
    y3 = (r * (v - x3) - 2 * y1 * j) % p
    z3 = ((z1 + h) ** 2 - z1z1 - hh) % p
    return (x3, y3, z3)


def _affine(pt: Point, p: int) -> tuple[int, int] | None:
    x, y, z = pt
    if not z:
        return None
    zi = pow(z, -1, p)
    zi2 = zi * zi % p
    return (x * zi2 % p, y * zi2 * zi % p)


def ecdsa_verify(curve: Curve, qx: int, qy: int, message: bytes, signature: bytes) -> bool:
    """ECDSA verification (SEC 1 section 4.1.4) of a JWS signature: r and s as fixed-size
    big-endian halves (RFC 7518 section 3.4). The key was checked to be on the curve."""
    size, n, p = curve.size, curve.n, curve.p
    if len(signature) != 2 * size:
        return False
    r = int.from_bytes(signature[:size], "big")
    s = int.from_bytes(signature[size:], "big")
    if not (0 < r < n and 0 < s < n):
        return False
    e = int.from_bytes(hashlib.new(curve.hash_name, message).digest(), "big")  # as long as n: no truncation
    w = pow(s, -1, n)
    u1, u2 = e * w % n, r * w % n
    # u1*G + u2*Q in one pass over the bits (Shamir's trick), adding G, Q or G+Q.
    gx, gy = curve.g
    both = _affine(_add_affine((qx, qy, 1), gx, gy, p), p)
    acc: Point = (1, 1, 0)
    for bit in range(max(u1.bit_length(), u2.bit_length()) - 1, -1, -1):
        acc = _double(acc, p)
        b1, b2 = (u1 >> bit) & 1, (u2 >> bit) & 1
        if b1 and b2:
            if both is None:  # Q = -G: G + Q is the point at infinity, adding it changes nothing
                continue
            acc = _add_affine(acc, both[0], both[1], p)
        elif b1:
            acc = _add_affine(acc, gx, gy, p)
        elif b2:
            acc = _add_affine(acc, qx, qy, p)
    point = _affine(acc, p)
    return point is not None and point[0] % n == r


# ---------------------------------------------------------------------------------------------
# Keys (RFC 7517) and algorithms (RFC 7518 section 3.1).

# alg -> (key type, hash, scheme)
ALGORITHMS = {
    "HS256": ("oct", "sha256", "hmac"), "HS384": ("oct", "sha384", "hmac"), "HS512": ("oct", "sha512", "hmac"),
    "RS256": ("RSA", "sha256", "pkcs1"), "RS384": ("RSA", "sha384", "pkcs1"), "RS512": ("RSA", "sha512", "pkcs1"),
    "PS256": ("RSA", "sha256", "pss"), "PS384": ("RSA", "sha384", "pss"), "PS512": ("RSA", "sha512", "pss"),
    "ES256": ("EC", "sha256", "P-256"), "ES384": ("EC", "sha384", "P-384"),
}  # fmt: skip
MIN_RSA_BITS = 2048  # RFC 7518 section 3.3: 2048 bits or larger MUST be used


class Key:
    """One verification key of a JWKS."""

    __slots__ = ("alg", "curve", "e", "kid", "kty", "n", "secret", "x", "y")

    def __init__(self, jwk: dict[str, Any]) -> None:
        """Raises ValueError saying what is wrong with ``jwk`` (a JSON object)."""
        self.kty = _text_field(jwk, "kty", required=True)
        self.kid = _text_field(jwk, "kid")
        self.alg = _text_field(jwk, "alg")
        self.n = self.e = self.x = self.y = 0
        self.secret = b""
        self.curve: Curve | None = None
        try:
            if self.kty == "RSA":
                self.n, self.e = b64url_int(_text_field(jwk, "n", True)), b64url_int(_text_field(jwk, "e", True))
                if self.n.bit_length() < MIN_RSA_BITS:
                    raise ValueError(f"RSA key of {self.n.bit_length()} bits: at least {MIN_RSA_BITS} are required")
                if self.e < 3 or not self.e & 1:
                    raise ValueError("RSA key with an invalid exponent")
            elif self.kty == "EC":
                crv = _text_field(jwk, "crv", True)
                self.curve = CURVES.get(crv)
                if self.curve is None:
                    raise ValueError(f"unsupported EC curve {crv!r} (P-256 and P-384 are supported)")
                self.x, self.y = b64url_int(_text_field(jwk, "x", True)), b64url_int(_text_field(jwk, "y", True))
                if not self.curve.on_curve(self.x, self.y):
                    raise ValueError(f"EC key is not a point of {crv}")
            elif self.kty == "oct":
                self.secret = b64url_decode(_text_field(jwk, "k", True))
                if not self.secret:
                    raise ValueError("empty oct key")
            else:
                raise ValueError(f"unsupported key type {self.kty!r}")
        except ValueError as err:
            if str(err) == "not base64url":
                raise ValueError("a key field is not base64url") from None
            raise
        if self.alg is not None and self.alg not in ALGORITHMS:
            raise ValueError(f"unsupported alg {self.alg!r}")

    def fits(self, alg: str) -> bool:
        """Whether this key may verify a token signed with ``alg``."""
        kty, _hash, scheme = ALGORITHMS[alg]
        if self.kty != kty or (self.alg is not None and self.alg != alg):
            return False
        return self.curve is None or self.curve.name == scheme

    def verify(self, alg: str, message: bytes, signature: bytes) -> bool:
        _kty, hash_name, scheme = ALGORITHMS[alg]
        if scheme == "hmac":
            return hmac.compare_digest(hmac.new(self.secret, message, hash_name).digest(), signature)
        if scheme == "pkcs1":
            return rsa_pkcs1v15_verify(self.n, self.e, hash_name, message, signature)
        if scheme == "pss":
            return rsa_pss_verify(self.n, self.e, hash_name, message, signature)
        assert self.curve is not None
        return ecdsa_verify(self.curve, self.x, self.y, message, signature)


def _text_field(obj: dict[str, Any], name: str, required: bool = False) -> Any:
    value = obj.get(name)
    if value is None and not required:
        return None
    if not isinstance(value, str):
        raise ValueError(f"[{name}] is {'missing' if value is None else 'not a string'}")
    return value


def parse_jwks(data: Any) -> tuple[list[Key], list[str]]:
    """The usable keys of a JWKS (JSON text, bytes or an already parsed object) and a note per
    key left out. Raises ValueError when the JWKS itself is malformed or has no usable key."""
    if isinstance(data, (bytes, str)):
        try:
            data = json.loads(data)
        except ValueError as err:
            raise ValueError(f"not JSON: {err}") from None
    if not isinstance(data, dict) or not isinstance(data.get("keys"), list):
        raise ValueError('a JWKS is a JSON object with a "keys" list')
    keys: list[Key] = []
    skipped: list[str] = []
    for i, jwk in enumerate(data["keys"]):
        if not isinstance(jwk, dict):
            skipped.append(f"keys[{i}]: not an object")
            continue
        if jwk.get("use") not in (None, "sig"):
            continue  # an encryption key: not for signatures
        try:
            keys.append(Key(jwk))
        except ValueError as err:
            skipped.append(f"keys[{i}]: {err}")
    if not keys:
        raise ValueError("no usable key" + (f" ({'; '.join(skipped)})" if skipped else ""))
    return keys, skipped


# ---------------------------------------------------------------------------------------------
# Tokens


class JwtError(Exception):
    """Why a token is refused: ``reason`` is the metric label, the message goes to the client
    (Envoy's jwt_authn wording where it has one)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


MALFORMED = "Jwt is not in the form of Header.Payload.Signature with two dots and 3 sections"


class Jwt:
    __slots__ = ("alg", "header", "kid", "payload", "payload_b64", "signature", "signing_input", "token")

    def __init__(self, token: str) -> None:
        parts = token.split(".")
        if len(parts) != 3:
            raise JwtError("malformed", MALFORMED)
        self.token = token
        try:
            header = json.loads(b64url_decode(parts[0]))
        except ValueError:
            raise JwtError("malformed", "Jwt header is an invalid Base64url encoded or an invalid JSON") from None
        try:
            payload = json.loads(b64url_decode(parts[1]))
        except ValueError:
            raise JwtError("malformed", "Jwt payload is an invalid Base64url encoded or an invalid JSON") from None
        try:
            self.signature = b64url_decode(parts[2])
        except ValueError:
            raise JwtError("malformed", "Jwt signature is an invalid Base64url encoded") from None
        if not isinstance(header, dict) or not isinstance(payload, dict):
            raise JwtError("malformed", "Jwt header or payload is not a JSON object")
        alg = header.get("alg")
        if not isinstance(alg, str) or alg not in ALGORITHMS:
            # "none" lands here too: an unsigned token is never accepted.
            raise JwtError("unsupported_alg", f"Jwt header [alg] {str(alg)[:20]!r} is not supported")
        if "crit" in header:  # RFC 7515 section 4.1.11: extensions we do not understand must be refused
            raise JwtError("unsupported_alg", "Jwt header [crit] is not supported")
        kid = header.get("kid")
        if kid is not None and not isinstance(kid, str):
            raise JwtError("malformed", "Jwt header [kid] field is not a string")
        self.header, self.payload, self.alg, self.kid = header, payload, alg, kid
        self.payload_b64 = parts[1]
        self.signing_input = f"{parts[0]}.{parts[1]}".encode("ascii")

    def number_claim(self, name: str) -> float | None:
        value = self.payload.get(name)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise JwtError("malformed", f"Jwt payload [{name}] field is not a number")
        return float(value)


# ---------------------------------------------------------------------------------------------
# Configuration


class RemoteJwks:
    """A JWKS fetched from a cluster: this VM's parsed copy, and the shared-data record all VMs
    of the Envoy process share (``<fetched ms> <JWKS JSON>``, written by whichever VM fetched)."""

    def __init__(self, config: Config, provider: str, plugin_name: str) -> None:
        self.provider = provider
        self.cluster = config.string("cluster", non_empty=True)
        self.path = config.string("path", non_empty=True)
        self.authority = config.string("authority", default=None)
        self.cache_duration_ms = config.integer("cache_duration_s", default=300, minimum=1) * 1000
        self.timeout_ms = config.integer("timeout_ms", default=1000, minimum=1, maximum=60_000)
        config.done()
        # Shared data is per vm_id: the cluster and path keep providers of other plugins apart.
        base = f"jwt_auth/{plugin_name}/{self.cluster}{self.path}"
        self.record_key, self.lease_key = base + "/jwks", base + "/lease"
        self.keys: list[Key] | None = None
        self.generation = 0  # bumped whenever the keys change (invalidates cached signatures)
        self.fetched_ms = 0
        self.cas = 0  # of the shared record this VM's keys came from
        self.failed_ms = -(10**12)  # when this VM's last fetch failed
        self.leased = False  # this VM holds the refresh lease (its fetch is in flight)
        self.lease = b""  # the lease's value this VM wrote: it gives the lease back only if still its own
        self.inflight: Future[None] | None = None

    def adopt_shared(self) -> None:
        """Take the JWKS another VM (or this one) stored in shared data, if it is newer."""
        found = shared_data.get(self.record_key)
        if found is None or found[1] == self.cas:
            return
        stamp, _, body = found[0].partition(b" ")
        try:
            keys, _skipped = parse_jwks(body)
        except ValueError as err:
            log.warn(f"jwt_auth: provider {self.provider!r}: the shared JWKS is unusable: {err}")
            self.cas = found[1]
            return
        self.install(keys, int(stamp or 0), found[1])

    def install(self, keys: list[Key], fetched_ms: int, cas: int) -> None:
        self.keys, self.fetched_ms, self.cas = keys, fetched_ms, cas
        self.generation += 1


class Provider:
    def __init__(self, name: str, config: Config, plugin_name: str) -> None:
        self.name = name
        self.issuer = config.string("issuer", default=None)
        self.audiences = set(config.array("audiences", default=[], of=str))
        self.clock_skew_s = config.integer("clock_skew_seconds", default=60, minimum=0)
        self.require_expiration = config.boolean("require_expiration", default=False)
        self.forward = config.boolean("forward", default=False)
        self.forward_payload_header = _header_name(config, "forward_payload_header")
        self.claim_to_headers: list[tuple[str, list[str]]] = []
        for item in config.objects("claim_to_headers", default=[]):
            header = _header_name(item, "header_name", required=True)
            claim = item.string("claim_name", non_empty=True)
            item.done()
            self.claim_to_headers.append((header, claim.split(".")))
        self.from_headers: list[tuple[str, str]] = [("authorization", "Bearer ")]
        if "from_headers" in config:
            self.from_headers = []
            for item in config.objects("from_headers"):
                header = _header_name(item, "name", required=True)
                self.from_headers.append((header, item.string("value_prefix", default="")))
                item.done()
        self.from_cookies = config.array("from_cookies", default=[], of=str)
        self.local_keys: list[Key] | None = None
        self.remote: RemoteJwks | None = None
        if "local_jwks" in config:
            if "remote_jwks" in config:
                raise config.error("remote_jwks", "give local_jwks or remote_jwks, not both")
            raw = config.data["local_jwks"]
            config.ignore("local_jwks")
            if not isinstance(raw, (str, dict)):
                raise config.error("local_jwks", "must be a JWKS: a JSON object, or a string holding one")
            try:
                self.local_keys, skipped = parse_jwks(raw)
            except ValueError as err:
                raise config.error("local_jwks", str(err)) from None
            for note in skipped:
                log.warn(f"jwt_auth: providers.{name}.local_jwks: {note}: left out")
        elif "remote_jwks" in config:
            self.remote = RemoteJwks(config.object("remote_jwks"), name, plugin_name)
        else:
            raise config.error("local_jwks", "missing: give local_jwks (an inline JWKS) or remote_jwks")
        config.done()

    def output_headers(self) -> list[str]:
        names = [h for h, _ in self.claim_to_headers]
        return [*names, self.forward_payload_header] if self.forward_payload_header else names

    def extract(self, headers: Headers) -> tuple[str, str | None] | None:
        """(token, header to remove when not forwarding) from this provider's locations."""
        for name, prefix in self.from_headers:
            value = headers.get(name)
            if value is not None and value[: len(prefix)].lower() == prefix.lower():
                token = value[len(prefix) :].strip()
                if token:
                    return token, name
        if self.from_cookies:
            for cookie_header in headers.get_all("cookie"):
                for part in cookie_header.split(";"):
                    key, eq, value = part.strip().partition("=")
                    if eq and key in self.from_cookies and value:
                        return value.strip('"'), None
        return None

    def keys_generation(self) -> tuple[list[Key] | None, int]:
        if self.remote is not None:
            return self.remote.keys, self.remote.generation
        return self.local_keys, 0


def _header_name(config: Config, key: str, required: bool = False) -> Any:
    value = config.string(key, default=None) if not required else config.string(key)
    if value is None:
        return None
    if not value or not value.isascii() or any(c in value for c in " :\r\n\t") or value != value.lower():
        raise config.error(key, f"must be a lower-case HTTP header name, not {value!r}")
    return value


class Requirement:
    """Which providers may vouch for a request (any one of them), and whether a request without a
    token passes (``allow_missing``: a token, if present, must still be valid)."""

    __slots__ = ("allow_missing", "providers")

    def __init__(self, providers: list[Provider], allow_missing: bool) -> None:
        self.providers, self.allow_missing = providers, allow_missing


USE_RULES = Requirement([], False)  # a route that sets no requirement of its own
ROUTE_BROKEN = Requirement([], False)  # a route whose metadata is wrong: its requests get a 500


def _requirement(config: Config, providers: dict[str, Provider]) -> Requirement | None:
    """A rule's or a route's ``providers`` + ``allow_missing``; None when no provider is named
    (the request needs no token)."""
    names = config.array("providers", default=[], of=str)
    chosen = []
    for i, name in enumerate(names):
        if name not in providers:
            raise proxywasm.ConfigError(
                f"{config.where('providers')}[{i}]", f"no provider named {name!r} (known: {', '.join(providers)})"
            )
        chosen.append(providers[name])
    allow_missing = config.boolean("allow_missing", default=False)
    return Requirement(chosen, allow_missing) if chosen else None


# ---------------------------------------------------------------------------------------------
# The filter


class JwtAuth(HttpContext):
    async def on_request_headers(self, headers: Headers, end_of_stream: bool) -> None:
        plugin: JwtAuthPlugin = self.plugin  # type: ignore[assignment]
        # Headers this filter vouches for must come from it, never from the client.
        for name in plugin.output_headers:
            del headers[name]
        requirement = plugin.requirement_for(headers.get(":path") or "/", self.route_config)
        if requirement is None:
            requests_total.labels(result="skipped").increment()
            return
        if requirement is ROUTE_BROKEN:
            requests_total.labels(result="denied").increment()
            denied_total.labels(reason="route_config").increment()
            self.send_response(500, "jwt_auth: this route's configuration is invalid\n")
            return
        errors: list[JwtError] = []
        for provider in requirement.providers:
            found = provider.extract(headers)
            if found is None:
                continue
            token, header = found
            try:
                jwt = Jwt(token)
                plugin.check_claims(provider, jwt)
                if provider.remote is not None and provider.remote.keys is None:
                    provider.remote.adopt_shared()  # another worker may have it already
                    if provider.remote.keys is None and plugin.may_fetch_now(provider.remote):
                        await plugin.fetch_jwks(provider.remote)  # the first requests wait for the keys
                plugin.check_signature(provider, jwt)
            except JwtError as err:
                errors.append(err)
                continue
            self.accept(provider, jwt, headers, header)
            return
        if not errors:
            if requirement.allow_missing:
                requests_total.labels(result="allowed").increment()
                return
            self.deny(headers, JwtError("missing", "Jwt is missing"))
            return
        # With several providers, an issuer mismatch only says the token was for another one.
        self.deny(headers, next((e for e in errors if e.reason != "bad_issuer"), errors[0]))

    def accept(self, provider: Provider, jwt: Jwt, headers: Headers, header: str | None) -> None:
        if header is not None and not provider.forward:
            del headers[header]
        if provider.forward_payload_header:
            headers[provider.forward_payload_header] = jwt.payload_b64
        for name, path in provider.claim_to_headers:
            value = _claim_text(jwt.payload, path)
            if value is not None:
                headers[name] = value
        requests_total.labels(result="allowed").increment()

    def deny(self, headers: Headers, err: JwtError) -> None:
        plugin: JwtAuthPlugin = self.plugin  # type: ignore[assignment]
        requests_total.labels(result="denied").increment()
        denied_total.labels(reason=err.reason).increment()
        log.debug(f"jwt_auth: {headers.get(':path', '')}: denied ({err.reason}): {err}")
        realm = plugin.realm
        if realm is None:  # Envoy's jwt_authn: the request's URL without its query
            path = (headers.get(":path") or "/").partition("?")[0]
            realm = f"{headers.get(':scheme', 'http')}://{headers.get(':authority', '')}{path}"
        challenge = 'Bearer realm="' + realm.replace("\\", "\\\\").replace('"', '\\"') + '"'
        if err.reason != "missing":  # RFC 6750 section 3.1: no error code when no token was sent
            challenge += ', error="invalid_token"'
        self.send_response(401, str(err), [("www-authenticate", challenge), ("content-type", "text/plain")])


def _claim_text(payload: dict[str, Any], path: list[str]) -> str | None:
    """A claim (``a.b`` nested) as a header value: strings as they are, numbers and booleans as
    JSON writes them, lists of those joined by commas; None for objects or a missing claim."""
    value: Any = payload
    for part in path:
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    items = value if isinstance(value, list) else [value]
    texts = []
    for item in items:
        if isinstance(item, str):
            texts.append(item)
        elif isinstance(item, (bool, int, float)):
            texts.append(json.dumps(item))
        else:
            return None
    text = ",".join(texts)
    return text if text.isprintable() else None  # no control characters in a header value


@proxywasm.register
class JwtAuthPlugin(PluginContext):
    http_context = JwtAuth
    TICK_MS = 1000  # how often each VM looks at the shared JWKS records and their age
    FETCH_RETRY_MS = 1000  # after a failed fetch, requests do not start another one for this long

    def on_configure(self, configuration: bytes) -> bool:
        config = proxywasm.config.parse(configuration)
        providers: dict[str, Provider] = {}
        section = config.object("providers")
        for name in section.data:
            if not isinstance(section.data[name], dict):
                raise section.error(name, "must be an object (a provider)")
            providers[name] = Provider(name, section.object(name), self.plugin_name)
        if not providers:
            raise config.error("providers", "must name at least one provider")
        rules: list[tuple[str, Requirement | None]] = []
        if "rules" in config:
            for rule in config.objects("rules"):
                prefix = rule.string("prefix")
                if not prefix.startswith("/"):
                    raise rule.error("prefix", f"must start with '/', not {prefix!r}")
                rules.append((prefix, _requirement(rule, providers)))
                rule.done()
        else:  # no rules: every request needs a token from any provider
            rules.append(("/", Requirement(list(providers.values()), False)))
        self.realm = config.string("realm", default=None)
        self.cache_size = config.integer("signature_cache_size", default=1024, minimum=0, maximum=1_000_000)
        config.done()
        self.providers, self.rules = providers, rules
        self.output_headers = sorted({h for p in providers.values() for h in p.output_headers()})
        # sha256 of a verified token -> (provider, key generation) it was verified for; insertion
        # order is recency order (hits move to the end), the oldest go first.
        self.verified: dict[bytes, tuple[str, int]] = {}
        self.route_requirements: dict[int, tuple[dict[str, Any], Requirement | None]] = {}
        self.remotes = [p.remote for p in providers.values() if p.remote is not None]
        for remote in self.remotes:
            if shared_data.get(remote.lease_key) is None:
                shared_data.set(remote.lease_key, b"0")  # exists from now on, so leases go by CAS
            remote.adopt_shared()
        self.set_tick_period(self.TICK_MS if self.remotes else 0)
        return True

    # ---- which providers a request needs ----

    def requirement_for(self, path: str, route: dict[str, Any]) -> Requirement | None:
        if route:
            requirement = self.route_requirement(route)
            if requirement is not USE_RULES:
                return requirement
        path = path.partition("?")[0]
        for prefix, requirement in self.rules:
            if path.startswith(prefix):
                return requirement
        return None  # no rule matches: no token needed (as in Envoy's jwt_authn)

    def route_requirement(self, route: dict[str, Any]) -> Requirement | None:
        """The route's own requirement (its metadata under the plugin's name): ``{"disabled":
        true}`` (None: no token needed), or ``{"providers": [...], "allow_missing": bool}``;
        USE_RULES when it sets neither, ROUTE_BROKEN when its metadata is wrong. Parsed once per
        route (the SDK hands out the same dict for a route while it caches it)."""
        cached = self.route_requirements.get(id(route))
        if cached is not None and cached[0] is route:
            return cached[1]
        check = proxywasm.config.Config(route, f"route metadata {self.plugin_name}")
        result: Requirement | None
        try:
            if check.boolean("disabled", default=False):
                result = None
            elif "providers" in check:
                result = _requirement(check, self.providers)
            else:
                result = USE_RULES
            check.ignore("providers", "allow_missing")
            check.done()
        except proxywasm.ConfigError as err:
            # An operator's mistake on one route: its requests are refused (fail closed), the log says why.
            log.error(f"jwt_auth: {err}: the route's requests are refused with 500")
            result = ROUTE_BROKEN
        if len(self.route_requirements) >= 64:
            self.route_requirements.clear()
        self.route_requirements[id(route)] = (route, result)
        return result

    # ---- verification ----

    def check_claims(self, provider: Provider, jwt: Jwt) -> None:
        """iss, exp, nbf and aud, with the provider's clock skew (Envoy checks these before the
        signature too: no crypto for a token that cannot pass)."""
        if provider.issuer is not None and jwt.payload.get("iss") != provider.issuer:
            raise JwtError("bad_issuer", "Jwt issuer is not configured")
        now = proxywasm.now_ns() / 1e9
        skew = provider.clock_skew_s
        exp = jwt.number_claim("exp")
        if exp is None:
            if provider.require_expiration:
                raise JwtError("no_expiration", "Jwt has no exp claim")
        elif now > exp + skew:
            raise JwtError("expired", "Jwt is expired")
        nbf = jwt.number_claim("nbf")
        if nbf is not None and now + skew < nbf:
            raise JwtError("not_yet_valid", "Jwt not yet valid")
        if provider.audiences:
            aud = jwt.payload.get("aud")
            auds = aud if isinstance(aud, list) else [aud]
            if not any(isinstance(a, str) and a in provider.audiences for a in auds):
                raise JwtError("bad_audience", "Audiences in Jwt are not allowed")

    def check_signature(self, provider: Provider, jwt: Jwt) -> None:
        keys, generation = provider.keys_generation()
        if keys is None:
            raise JwtError("jwks_unavailable", "Jwks remote fetch is failed")
        digest = b""
        if self.cache_size:
            digest = hashlib.sha256(jwt.token.encode()).digest()
            entry = self.verified.pop(digest, None)
            if entry == (provider.name, generation):
                self.verified[digest] = entry  # most recently used: to the end
                signature_cache_total.labels(result="hit").increment()
                return
            signature_cache_total.labels(result="miss").increment()
        candidates = [k for k in keys if k.fits(jwt.alg) and (jwt.kid is None or k.kid in (None, jwt.kid))]
        if not candidates:
            raise JwtError("unknown_key", "Jwks doesn't have key to match kid or alg from Jwt")
        if not any(k.verify(jwt.alg, jwt.signing_input, jwt.signature) for k in candidates):
            raise JwtError("bad_signature", "Jwt verification fails")
        if self.cache_size:
            if len(self.verified) >= self.cache_size:
                del self.verified[next(iter(self.verified))]  # the least recently used
            self.verified[digest] = (provider.name, generation)

    # ---- remote JWKS ----

    def on_tick(self) -> None:
        now_ms = proxywasm.now_ns() // 1_000_000
        for remote in self.remotes:
            remote.adopt_shared()
            # A wall clock that stepped back a second or more (fetched "in the future") makes the keys
            # stale too, or they would not be refreshed until it caught up.
            age_ms = now_ms - remote.fetched_ms
            stale = remote.keys is None or not -1000 < age_ms < remote.cache_duration_ms
            if stale and (remote.inflight is None or remote.inflight.done()) and self.take_lease(remote, now_ms):
                remote.leased = True
                self.fetch_jwks(remote)

    def may_fetch_now(self, remote: RemoteJwks) -> bool:
        """Whether a request without keys may start a fetch: not within a second of a failed one
        (requests are refused at once then, instead of each one asking an IdP that is down)."""
        pending = remote.inflight is not None and not remote.inflight.done()
        return pending or proxywasm.now_ns() // 1_000_000 - remote.failed_ms >= self.FETCH_RETRY_MS

    def take_lease(self, remote: RemoteJwks, now_ms: int) -> bool:
        """One VM refreshes a JWKS at a time: the lease (its deadline: the fetch's timeout and a
        second) is taken with CAS, and given back when the answer is in. A deadline further ahead
        than any lease runs (the wall clock stepped back) is taken over."""
        found = shared_data.get(remote.lease_key)
        longest = max(remote.timeout_ms + 1000, self.FETCH_RETRY_MS)
        if found is not None and now_ms < int(found[0] or 0) <= now_ms + longest:
            return False
        lease = str(now_ms + remote.timeout_ms + 1000).encode()
        try:
            shared_data.set(remote.lease_key, lease, found[1] if found else 0)
        except CasMismatch:
            return False
        remote.lease = lease
        return True

    def fetch_jwks(self, remote: RemoteJwks) -> Future[None]:
        """Fetch the JWKS (one fetch per VM at a time); the Future completes when the answer is
        handled, whatever it was (the keys are then in ``remote.keys``, or not)."""
        if remote.inflight is not None and not remote.inflight.done():
            return remote.inflight
        done: Future[None] = proxywasm.Future()
        remote.inflight = done
        try:
            # From the plugin context, detached: the fetch belongs to no stream, and every
            # stream of this VM that needs the keys awaits `done`.
            self.http_call(
                remote.cluster,
                lambda response: self.jwks_answer(remote, response, done),
                path=remote.path,
                authority=remote.authority,
                headers=[("accept", "application/json")],
                timeout_ms=remote.timeout_ms,
                detach=True,
            )
        except HostCallError as err:
            log.error(f"jwt_auth: provider {remote.provider!r}: cannot fetch the JWKS: {err}")
            remote.failed_ms = proxywasm.now_ns() // 1_000_000
            remote.leased = False  # the lease runs out by itself
            jwks_fetches_total.labels(provider=remote.provider, result="failure").increment()
            done.set_result(None)
        return done

    def jwks_answer(self, remote: RemoteJwks, response: HttpCallResponse, done: Future[None]) -> None:
        ok = False
        try:
            where = f"jwt_auth: provider {remote.provider!r}: JWKS from cluster {remote.cluster!r} {remote.path}"
            if response.status != 200:
                reason = "no response" if response.failed else f"status {response.status}: {response.text()[:120]!r}"
                log.warn(f"{where}: fetch failed ({reason}); {'keeping the old keys' if remote.keys else 'no keys'}")
                jwks_fetches_total.labels(provider=remote.provider, result="failure").increment()
                return
            try:
                keys, skipped = parse_jwks(response.body)
            except ValueError as err:
                log.warn(f"{where}: unusable JWKS: {err}")
                jwks_fetches_total.labels(provider=remote.provider, result="failure").increment()
                return
            for note in skipped:
                log.warn(f"{where}: {note}: left out")
            now_ms = proxywasm.now_ns() // 1_000_000
            record = str(now_ms).encode() + b" " + response.body
            shared_data.set(remote.record_key, record)
            found = shared_data.get(remote.record_key)
            # Another VM's record may have replaced ours already: then CAS 0, so the next tick adopts it.
            remote.install(keys, now_ms, found[1] if found is not None and found[0] == record else 0)
            jwks_fetches_total.labels(provider=remote.provider, result="success").increment()
            log.info(f"{where}: {len(keys)} keys")
            ok = True
        finally:
            now_ms = proxywasm.now_ns() // 1_000_000
            if not ok:
                remote.failed_ms = now_ms
            if remote.leased:
                remote.leased = False
                # Given back; after a failure only a second later, so VMs do not hammer a failing IdP.
                # Not if another VM took it over meanwhile (this answer came after the deadline).
                found = shared_data.get(remote.lease_key)
                if found is not None and found[0] == remote.lease:
                    try:
                        shared_data.set(remote.lease_key, b"0" if ok else str(now_ms + self.FETCH_RETRY_MS), found[1])
                    except CasMismatch:
                        pass  # taken over between the two calls
            done.set_result(None)
