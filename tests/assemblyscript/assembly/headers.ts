// Header manipulation: adds a request header (seen by the upstream) and response headers
// (seen by the client), echoes one request header back in the response, and reports the header
// names it saw in each map (x-seen-request-headers / x-seen-response-headers). With x-inject, it
// writes a header of the client's choosing, e.g. one Envoy cannot send (which the Python SDK refuses
// at the write): see injectInto.
export * from "@solo-io/proxy-runtime/proxy";
import {
  Context,
  RootContext,
  registerRootContext,
  FilterHeadersStatusValues,
  HeaderPair,
  stream_context,
} from "@solo-io/proxy-runtime";
import {
  HeaderMapTypeValues,
  add_header_map_value_string,
  replace_header_map_value_string,
} from "@solo-io/proxy-runtime/runtime";
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

// Header names of a map, in order, comma-separated.
function names(pairs: HeaderPair[]): string {
  const out: string[] = [];
  for (let i = 0; i < pairs.length; i++) {
    out.push(String.UTF8.decode(pairs[i].key));
  }
  return out.join(",");
}

// x-inject: "<map>-<write>" (request / response, add / replace). The header written is named
// x-inject-name (default x-injected); its value is "a" ("/a" for :path), then the code points
// listed in x-inject-chars (hex, comma-separated, e.g. "d,a"), then "b"; or x-inject-value as it is.
function injectInto(map: HeaderMapTypeValues, how: string, name: string, chars: string, exact: string): void {
  let value = name == ":path" ? "/a" : "a";
  if (chars != "") {
    const codes = chars.split(",");
    for (let i = 0; i < codes.length; i++) {
      value += String.fromCharCode(I32.parseInt(codes[i], 16));
    }
  }
  value += "b";
  if (exact != "") value = exact;
  if (name == "") name = "x-injected";
  if (how.endsWith("-replace")) replace_header_map_value_string(map, name, value);
  else add_header_map_value_string(map, name, value);
}

class Headers extends Context {
  echo: string = "";
  seenRequest: string = "";

  constructor(context_id: u32, root_context: HeadersRoot) {
    super(context_id, root_context);
  }

  inject: string = "";
  injectName: string = "";
  injectChars: string = "";
  injectValue: string = "";

  onRequestHeaders(count: u32, end_of_stream: bool): FilterHeadersStatusValues {
    this.inject = stream_context.headers.request.get("x-inject");
    this.injectName = stream_context.headers.request.get("x-inject-name");
    this.injectChars = stream_context.headers.request.get("x-inject-chars");
    this.injectValue = stream_context.headers.request.get("x-inject-value");
    if (this.inject.startsWith("request")) {
      injectInto(HeaderMapTypeValues.RequestHeaders, this.inject, this.injectName, this.injectChars, this.injectValue);
    }
    this.echo = stream_context.headers.request.get("x-echo");
    this.seenRequest = names(stream_context.headers.request.get_headers());
    stream_context.headers.request.add("x-as-request", "added-by-as");
    // replace() on a header the client sent; upstream must see only the new value.
    stream_context.headers.request.replace("x-replace-me", "replaced");
    stream_context.headers.request.remove("x-remove-me");
    return FilterHeadersStatusValues.Continue;
  }

  onResponseHeaders(count: u32, end_of_stream: bool): FilterHeadersStatusValues {
    const seenResponse = names(stream_context.headers.response.get_headers());
    stream_context.headers.response.add("x-as-response", "hello");
    stream_context.headers.response.add("x-seen-request-headers", this.seenRequest);
    stream_context.headers.response.add("x-seen-response-headers", seenResponse);
    if (this.echo != "") {
      stream_context.headers.response.add("x-echo-back", this.echo);
    }
    if (this.inject.startsWith("response")) {
      injectInto(HeaderMapTypeValues.ResponseHeaders, this.inject, this.injectName, this.injectChars, this.injectValue);
    }
    return FilterHeadersStatusValues.Continue;
  }
}

registerRootContext((context_id: u32) => {
  return new HeadersRoot(context_id);
}, "headers");
