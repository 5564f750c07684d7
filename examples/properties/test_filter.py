"""properties' test: the filter reads the matched route's metadata (``xds.route_metadata``), which
names the header that route requires.

``routes`` gives the host envoy.yaml's route table: each ``Route`` matches a path prefix and
carries its ``metadata.filter_metadata``.
"""

from collections.abc import Callable
from pathlib import Path

import pytest

from proxywasm_host import Host, Route

ROUTES = [
    Route("/one", name="one", metadata={"envoy.filters.http.wasm": {"auth": "cookie"}}),
    Route("/two", name="two", metadata={"envoy.filters.http.wasm": {"auth": "authorization"}}),
    Route("/three", name="three"),
]


@pytest.fixture
def host(proxywasm_host: Callable[..., Host], proxywasm_mode: str) -> Host:
    return proxywasm_host(Path(__file__).parent, mode=proxywasm_mode, routes=ROUTES)


@pytest.mark.parametrize(
    ("path", "headers", "status"),
    [
        ("/one", [], 401),
        ("/one", [("cookie", "value")], 200),
        ("/one", [("authorization", "token")], 401),
        ("/two", [("authorization", "token")], 200),
        ("/three", [], 200),
    ],
)
def test_route_metadata_names_the_required_header(
    host: Host, path: str, headers: list[tuple[str, str]], status: int
) -> None:
    response = host.request("GET", path, headers=headers)
    assert response.status == status
    assert (response.upstream_request is not None) == (status == 200)


def test_logs_what_it_read(host: Host) -> None:
    for path in ("/one", "/two", "/three"):
        host.request("GET", path)
    messages = host.log_messages()
    assert 'auth header is "cookie"' in messages
    assert 'auth header is "authorization"' in messages
    assert "no auth header for route" in messages
    assert sum(m.endswith(" finished") for m in messages) == 3
