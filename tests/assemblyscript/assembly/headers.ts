// Header manipulation: adds a request header (seen by the upstream) and response headers
// (seen by the client), and echoes one request header back in the response.
export * from "@solo-io/proxy-runtime/proxy";
import {
  Context,
  RootContext,
  registerRootContext,
  FilterHeadersStatusValues,
  stream_context,
} from "@solo-io/proxy-runtime";
import { readPluginConfig } from "./common";

class HeadersRoot extends RootContext {
  config: string = "";

  onConfigure(configuration_size: u32): bool {
    this.config = readPluginConfig(configuration_size);
    return true;
  }

  createContext(context_id: u32): Context {
    return new Headers(context_id, this);
  }
}

class Headers extends Context {
  echo: string = "";

  constructor(context_id: u32, root_context: HeadersRoot) {
    super(context_id, root_context);
  }

  onRequestHeaders(count: u32, end_of_stream: bool): FilterHeadersStatusValues {
    this.echo = stream_context.headers.request.get("x-echo");
    stream_context.headers.request.add("x-as-request", "added-by-as");
    // replace() on a header the client sent; upstream must see only the new value.
    stream_context.headers.request.replace("x-replace-me", "replaced");
    stream_context.headers.request.remove("x-remove-me");
    return FilterHeadersStatusValues.Continue;
  }

  onResponseHeaders(count: u32, end_of_stream: bool): FilterHeadersStatusValues {
    stream_context.headers.response.add("x-as-response", "hello");
    if (this.echo != "") {
      stream_context.headers.response.add("x-echo-back", this.echo);
    }
    return FilterHeadersStatusValues.Continue;
  }
}

registerRootContext((context_id: u32) => {
  return new HeadersRoot(context_id);
}, "headers");
