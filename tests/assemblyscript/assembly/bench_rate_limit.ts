// Bench workload 3 (twin of bench/filters/python/rate_limit.py): a fixed-window rate limit per
// client, counted in shared data with CAS. The plugin configuration, if any, is the limit per window
// (the bench's rejection check sets a small one; timed runs leave it empty).
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
import { getShared, readPluginConfig, setShared } from "./common";

let LIMIT: i64 = 1000000000; // per one-second window; high so the bench measures the bookkeeping
const WINDOW_NS: u64 = 1000000000;
const CAS_MISMATCH: u32 = 8;

// proxy-runtime 0.1.8 does not export its clock wrapper.
@external("env", "proxy_get_current_time_nanoseconds")
declare function proxy_get_current_time_nanoseconds(out: usize): u32;
const nowOut = memory.data(8);

function nowNanoseconds(): u64 {
  proxy_get_current_time_nanoseconds(nowOut);
  return load<u64>(nowOut);
}

class BenchRateLimitRoot extends RootContext {
  onConfigure(configuration_size: u32): bool {
    const config = readPluginConfig(configuration_size);
    if (config != "") {
      LIMIT = I64.parseInt(config);
      if (LIMIT <= 0) return false; // not a positive number: Envoy rejects the configuration
    }
    return true;
  }

  createContext(context_id: u32): Context {
    return new BenchRateLimit(context_id, this);
  }
}

class BenchRateLimit extends Context {
  constructor(context_id: u32, root_context: BenchRateLimitRoot) {
    super(context_id, root_context);
  }

  onRequestHeaders(count: u32, end_of_stream: bool): FilterHeadersStatusValues {
    let client = stream_context.headers.request.get("x-client");
    if (client == "") client = "anonymous";
    const key = "rl:" + client;
    const window = <i64>(nowNanoseconds() / WINDOW_NS);
    for (let attempt = 0; attempt < 8; attempt++) {
      const found = getShared(key);
      let count: i64 = 0;
      let cas: u32 = 0;
      if (found.result == 0) {
        cas = found.cas;
        const colon = found.value.indexOf(":");
        if (I64.parseInt(found.value.substring(0, colon)) == window) {
          count = I64.parseInt(found.value.substring(colon + 1));
        }
      }
      if (count >= LIMIT) {
        send_local_response(429, "", String.UTF8.encode("rate limited\n"), [], GrpcStatusValues.InvalidCode);
        return FilterHeadersStatusValues.StopIteration;
      }
      const rc = setShared(key, window.toString() + ":" + (count + 1).toString(), cas);
      if (rc != CAS_MISMATCH) {
        return FilterHeadersStatusValues.Continue;
      }
    }
    return FilterHeadersStatusValues.Continue;
  }
}

registerRootContext((context_id: u32) => {
  return new BenchRateLimitRoot(context_id);
}, "bench");
