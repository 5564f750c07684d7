// http_call: on request headers, GET /callout on the cluster named by the x-callout-cluster request
// header (default: the plugin configuration, else "callout"), pause the request, and on the
// response add x-callout-status / x-callout-body / x-callout-reply request headers for the upstream.
// A dispatch error answers 500 locally; a failed call (no response headers) answers 503.
export * from "@solo-io/proxy-runtime/proxy";
import {
  Context,
  RootContext,
  registerRootContext,
  FilterHeadersStatusValues,
  GrpcStatusValues,
  HeaderPair,
  LogLevelValues,
  WasmResultValues,
  log,
  send_local_response,
  stream_context,
} from "@solo-io/proxy-runtime";
import { readPluginConfig, BUFFER_HTTP_CALL_RESPONSE_BODY, getBufferString } from "./common";

function pair(key: string, value: string): HeaderPair {
  return new HeaderPair(String.UTF8.encode(key), String.UTF8.encode(value));
}

function onCalloutResponse(origin: Context, headers: u32, body_size: usize, trailers: u32): void {
  log(LogLevelValues.info, "callout response headers=" + headers.toString() + " body_size=" + body_size.toString());
  if (headers == 0) {
    send_local_response(503, "as_callout_failed", String.UTF8.encode("callout failed\n"), [], GrpcStatusValues.InvalidCode);
    return;
  }
  const status = stream_context.headers.http_callback.get(":status");
  const reply = stream_context.headers.http_callback.get("x-callout-reply");
  const body = getBufferString(BUFFER_HTTP_CALL_RESPONSE_BODY, 0, <u32>body_size);
  stream_context.headers.request.add("x-callout-status", status);
  stream_context.headers.request.add("x-callout-body", body);
  stream_context.headers.request.add("x-callout-reply", reply);
  origin.continueRequest();
}

class CalloutRoot extends RootContext {
  config: string = "";

  onConfigure(configuration_size: u32): bool {
    this.config = readPluginConfig(configuration_size);
    return true;
  }

  createContext(context_id: u32): Context {
    return new Callout(context_id, this);
  }
}

class Callout extends Context {
  constructor(context_id: u32, root_context: CalloutRoot) {
    super(context_id, root_context);
  }

  onRequestHeaders(count: u32, end_of_stream: bool): FilterHeadersStatusValues {
    const root = this.root_context as CalloutRoot;
    let cluster = stream_context.headers.request.get("x-callout-cluster");
    if (cluster == "") {
      cluster = root.config == "" ? "callout" : root.config;
    }
    const headers: HeaderPair[] = [
      pair(":method", "GET"),
      pair(":path", "/callout?from=as"),
      pair(":authority", "callout.local"),
      pair("x-from-as", "1"),
    ];
    // x-callout-inject-chars: hex code points (comma-separated) put into a callout header's value
    // between "a" and "b", e.g. "d,a": a header Envoy cannot send.
    const inject = stream_context.headers.request.get("x-callout-inject-chars");
    if (inject != "") {
      let value = "a";
      const codes = inject.split(",");
      for (let i = 0; i < codes.length; i++) {
        value += String.fromCharCode(I32.parseInt(codes[i], 16));
      }
      headers.push(pair("x-injected", value + "b"));
    }
    const rc = root.httpCall(cluster, headers, new ArrayBuffer(0), [], 2000, this, onCalloutResponse);
    log(LogLevelValues.info, "http_call cluster=" + cluster + " rc=" + rc.toString());
    if (rc != WasmResultValues.Ok) {
      send_local_response(
        500,
        "as_callout_dispatch_failed",
        String.UTF8.encode("http_call failed: " + rc.toString() + "\n"),
        [pair("x-http-call-result", rc.toString())],
        GrpcStatusValues.InvalidCode,
      );
    }
    return FilterHeadersStatusValues.StopIteration;
  }
}

registerRootContext((context_id: u32) => {
  return new CalloutRoot(context_id);
}, "callout");
