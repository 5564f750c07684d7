"""properties: reads the route's metadata (Envoy's ``xds.route_metadata`` attribute), whose
``auth`` names a header the route requires, and answers 401 to requests that lack that header.

Port of the proxy-wasm Go SDK's ``examples/properties``.
"""

import proxywasm
from proxywasm import Action, GrpcStatus, HttpContext, log, properties


@proxywasm.register
class RequireAuthHeader(HttpContext):
    def on_request_headers(self, headers, end_of_stream):
        auth = properties.get_str("xds", "route_metadata", "filter_metadata", "envoy.filters.http.wasm", "auth")
        if auth is None:
            log.info("no auth header for route")
            return Action.CONTINUE
        log.info(f'auth header is "{auth}"')
        if auth not in headers:
            self.send_response(401, grpc_status=GrpcStatus.UNAUTHENTICATED)
            return Action.PAUSE
        return Action.CONTINUE

    def on_done(self):
        log.info(f"{self.context_id} finished")
        return True
