// Local replies: 403 when the request has no x-token header (status overridable with
// x-local-status), and a local reply from the response path when x-deny-on-response is set.
// The response-headers hook marks every response it sees, to show whether it runs for local replies.
// x-deny-reason-crlf puts a CR LF and a header line of its own into the local reply's x-deny-reason.
export * from "@solo-io/proxy-runtime/proxy";
import {
  Context,
  RootContext,
  registerRootContext,
  FilterHeadersStatusValues,
  GrpcStatusValues,
  HeaderPair,
  send_local_response,
  stream_context,
} from "@solo-io/proxy-runtime";
import { readPluginConfig } from "./common";

function pair(key: string, value: string): HeaderPair {
  return new HeaderPair(String.UTF8.encode(key), String.UTF8.encode(value));
}

class DenyRoot extends RootContext {
  config: string = "";

  onConfigure(configuration_size: u32): bool {
    this.config = readPluginConfig(configuration_size);
    return true;
  }

  createContext(context_id: u32): Context {
    return new Deny(context_id, this);
  }
}

class Deny extends Context {
  denyOnResponse: bool = false;

  constructor(context_id: u32, root_context: DenyRoot) {
    super(context_id, root_context);
  }

  onRequestHeaders(count: u32, end_of_stream: bool): FilterHeadersStatusValues {
    this.denyOnResponse = stream_context.headers.request.get("x-deny-on-response") != "";
    if (stream_context.headers.request.get("x-token") != "") {
      return FilterHeadersStatusValues.Continue;
    }
    const requested = stream_context.headers.request.get("x-local-status");
    const status: u32 = requested == "" ? 403 : <u32>I32.parseInt(requested);
    const reason = stream_context.headers.request.get("x-deny-reason-crlf") != "" ? "missing\r\nx-evil: 1" : "missing-token";
    send_local_response(
      status,
      "as_denied",
      String.UTF8.encode("denied by as\n"),
      [pair("x-deny-reason", reason), pair("content-type", "text/plain")],
      GrpcStatusValues.InvalidCode,
    );
    return FilterHeadersStatusValues.StopIteration;
  }

  onResponseHeaders(count: u32, end_of_stream: bool): FilterHeadersStatusValues {
    stream_context.headers.response.add("x-deny-response-hook", "ran");
    if (this.denyOnResponse) {
      this.denyOnResponse = false;
      send_local_response(
        502,
        "as_denied_response",
        String.UTF8.encode("response denied by as\n"),
        [pair("x-deny-reason", "on-response")],
        GrpcStatusValues.InvalidCode,
      );
      return FilterHeadersStatusValues.StopIteration;
    }
    return FilterHeadersStatusValues.Continue;
  }
}

registerRootContext((context_id: u32) => {
  return new DenyRoot(context_id);
}, "deny");
