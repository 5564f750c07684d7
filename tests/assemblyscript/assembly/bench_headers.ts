// Bench workload 1 (twin of bench/filters/python/headers.py): check an API key header, add a
// request and a response header.
export * from "@solo-io/proxy-runtime/proxy";
import {
  Context,
  RootContext,
  registerRootContext,
  FilterHeadersStatusValues,
  GrpcStatusValues,
  send_local_response,
  stream_context,
} from "@solo-io/proxy-runtime";
import { readPluginConfig } from "./common";

class BenchHeadersRoot extends RootContext {
  onConfigure(configuration_size: u32): bool {
    readPluginConfig(configuration_size);
    return true;
  }

  createContext(context_id: u32): Context {
    return new BenchHeaders(context_id, this);
  }
}

class BenchHeaders extends Context {
  constructor(context_id: u32, root_context: BenchHeadersRoot) {
    super(context_id, root_context);
  }

  onRequestHeaders(count: u32, end_of_stream: bool): FilterHeadersStatusValues {
    if (stream_context.headers.request.get("x-api-key") == "") {
      send_local_response(401, "", String.UTF8.encode("missing x-api-key\n"), [], GrpcStatusValues.InvalidCode);
      return FilterHeadersStatusValues.StopIteration;
    }
    stream_context.headers.request.replace("x-bench", "1");
    return FilterHeadersStatusValues.Continue;
  }

  onResponseHeaders(count: u32, end_of_stream: bool): FilterHeadersStatusValues {
    stream_context.headers.response.replace("x-filtered", "assemblyscript");
    return FilterHeadersStatusValues.Continue;
  }
}

registerRootContext((context_id: u32) => {
  return new BenchHeadersRoot(context_id);
}, "bench");
