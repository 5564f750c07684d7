// Body rewriting. Request body: buffered to end of stream, then replaced by
// "request:" + upper-cased original. Response body: buffered, then wrapped as "<<" + original + ">>".
// Unless the plugin configuration is "keep-content-length", content-length is removed from both
// header maps first (the new body has a different length).
export * from "@solo-io/proxy-runtime/proxy";
import {
  Context,
  RootContext,
  registerRootContext,
  FilterHeadersStatusValues,
  FilterDataStatusValues,
  LogLevelValues,
  log,
  stream_context,
} from "@solo-io/proxy-runtime";
import {
  readPluginConfig,
  BUFFER_HTTP_REQUEST_BODY,
  BUFFER_HTTP_RESPONSE_BODY,
  getBufferString,
  setBuffer,
} from "./common";

class BodyRoot extends RootContext {
  config: string = "";

  onConfigure(configuration_size: u32): bool {
    this.config = readPluginConfig(configuration_size);
    return true;
  }

  createContext(context_id: u32): Context {
    return new Body(context_id, this);
  }
}

class Body extends Context {
  constructor(context_id: u32, root_context: BodyRoot) {
    super(context_id, root_context);
  }

  keepLength(): bool {
    return (this.root_context as BodyRoot).config == "keep-content-length";
  }

  onRequestHeaders(count: u32, end_of_stream: bool): FilterHeadersStatusValues {
    if (!this.keepLength()) {
      stream_context.headers.request.remove("content-length");
    }
    return FilterHeadersStatusValues.Continue;
  }

  onRequestBody(size: usize, end_of_stream: bool): FilterDataStatusValues {
    log(LogLevelValues.info, "request body chunk size=" + size.toString() + " eos=" + (end_of_stream ? "1" : "0"));
    if (!end_of_stream) {
      return FilterDataStatusValues.StopIterationAndBuffer;
    }
    const original = getBufferString(BUFFER_HTTP_REQUEST_BODY, 0, <u32>size);
    setBuffer(BUFFER_HTTP_REQUEST_BODY, 0, <u32>size, "request:" + original.toUpperCase());
    return FilterDataStatusValues.Continue;
  }

  onResponseHeaders(count: u32, end_of_stream: bool): FilterHeadersStatusValues {
    if (!this.keepLength()) {
      stream_context.headers.response.remove("content-length");
    }
    return FilterHeadersStatusValues.Continue;
  }

  onResponseBody(size: usize, end_of_stream: bool): FilterDataStatusValues {
    log(LogLevelValues.info, "response body chunk size=" + size.toString() + " eos=" + (end_of_stream ? "1" : "0"));
    if (!end_of_stream) {
      return FilterDataStatusValues.StopIterationAndBuffer;
    }
    const original = getBufferString(BUFFER_HTTP_RESPONSE_BODY, 0, <u32>size);
    setBuffer(BUFFER_HTTP_RESPONSE_BODY, 0, <u32>size, "<<" + original + ">>");
    return FilterDataStatusValues.Continue;
  }
}

registerRootContext((context_id: u32) => {
  return new BodyRoot(context_id);
}, "body");
