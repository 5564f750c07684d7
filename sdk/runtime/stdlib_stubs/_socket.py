"""proxywasm: a stand-in for CPython's ``_socket`` C module, which the runtime does not link.

A filter has no sockets inside Envoy (it talks to other services through Envoy: ``http_call``,
``grpc_call``). But many pure-Python packages import ``socket`` (through ``http.client``,
``urllib.request``, ``email.utils``) without opening one where a filter uses them: PyJWT's
``jwks_client``, for one, made ``import jwt`` fail. With this module ``import socket`` works, and
creating a socket or resolving a name raises OSError saying why. Small and own code on purpose: it
is in the memory of every VM whose filter imports ``socket``.
"""

import errno as _errno

NO_SOCKETS = (
    "no sockets inside Envoy: a filter talks to other services through Envoy's clusters "
    "(self.http_call, self.grpc_call)"
)

error = OSError
timeout = TimeoutError


class herror(OSError):
    pass


class gaierror(OSError):
    pass


has_ipv6 = False

# The constants socket.py and its importers read at import time (Linux values).
AF_UNSPEC, AF_UNIX, AF_INET, AF_INET6 = 0, 1, 2, 10
SOCK_STREAM, SOCK_DGRAM, SOCK_RAW = 1, 2, 3
SOL_SOCKET, SO_REUSEADDR, SO_KEEPALIVE, SO_ERROR, SO_TYPE = 1, 2, 9, 4, 3
SOL_TCP = IPPROTO_TCP = 6
IPPROTO_IP, IPPROTO_UDP, IPPROTO_IPV6 = 0, 17, 41
IPV6_V6ONLY, TCP_NODELAY = 26, 1
MSG_PEEK, MSG_WAITALL = 2, 256
AI_PASSIVE, AI_CANONNAME, AI_NUMERICHOST = 1, 2, 4
NI_NUMERICHOST, NI_NUMERICSERV = 1, 2
SHUT_RD, SHUT_WR, SHUT_RDWR = 0, 1, 2
SOMAXCONN = 4096
INADDR_ANY = 0


def _refuse(*args, **kwargs):
    raise OSError(_errno.ENOTSUP, NO_SOCKETS)


class socket:
    """``socket.socket``'s base: making one raises OSError."""

    __slots__ = ()

    def __init__(self, family=-1, type=-1, proto=-1, fileno=None):
        _refuse()


SocketType = socket
getaddrinfo = gethostbyname = gethostbyname_ex = gethostbyaddr = getnameinfo = _refuse
gethostname = getservbyname = getservbyport = getprotobyname = socketpair = dup = close = _refuse


def htons(x):
    return ((x & 0xFF) << 8) | ((x >> 8) & 0xFF)


def htonl(x):
    return int.from_bytes((x & 0xFFFFFFFF).to_bytes(4, "little"), "big")


ntohs, ntohl = htons, htonl


def inet_aton(text):
    parts = text.split(".")
    if len(parts) != 4 or not all(p.isdigit() and int(p) < 256 for p in parts):
        raise OSError("illegal IP address string passed to inet_aton")
    return bytes(int(p) for p in parts)


def inet_ntoa(packed):
    if len(packed) != 4:
        raise OSError("packed IP wrong length for inet_ntoa")
    return ".".join(str(b) for b in packed)


def inet_pton(family, text):
    if family == AF_INET:
        return inet_aton(text)
    import ipaddress

    return ipaddress.IPv6Address(text).packed


def inet_ntop(family, packed):
    if family == AF_INET:
        return inet_ntoa(packed)
    import ipaddress

    return str(ipaddress.IPv6Address(bytes(packed)))


def getdefaulttimeout():
    return None


def setdefaulttimeout(timeout):
    pass
