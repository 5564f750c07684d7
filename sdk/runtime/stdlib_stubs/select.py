"""proxywasm: a stand-in for CPython's ``select`` C module, which the runtime does not link.

``socket`` imports ``selectors``, which imports ``select``: with this module they import (see
``_socket.py``), and waiting on descriptors raises OSError. A filter has none to wait on.
"""

import errno as _errno

error = OSError


def select(rlist, wlist, xlist, timeout=None):
    raise OSError(_errno.ENOTSUP, "no file descriptors to wait on inside Envoy")
