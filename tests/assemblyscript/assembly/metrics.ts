// Metrics: a counter of requests, a counter incremented by the x-count header, a gauge set to the
// last path length and a histogram of path lengths. Defined once per VM in on_configure.
export * from "@solo-io/proxy-runtime/proxy";
import {
  Context,
  RootContext,
  registerRootContext,
  FilterHeadersStatusValues,
  stream_context,
} from "@solo-io/proxy-runtime";
import {
  readPluginConfig,
  METRIC_COUNTER,
  METRIC_GAUGE,
  METRIC_HISTOGRAM,
  defineMetric,
  incrementMetric,
  recordMetric,
} from "./common";

class MetricsRoot extends RootContext {
  requests: u32 = 0;
  units: u32 = 0;
  lastPathLen: u32 = 0;
  pathLen: u32 = 0;

  config: string = "";

  onConfigure(configuration_size: u32): bool {
    this.config = readPluginConfig(configuration_size);
    this.requests = defineMetric(METRIC_COUNTER, "as_requests_total");
    this.units = defineMetric(METRIC_COUNTER, "as_units_total");
    this.lastPathLen = defineMetric(METRIC_GAUGE, "as_last_path_len");
    this.pathLen = defineMetric(METRIC_HISTOGRAM, "as_path_len");
    return true;
  }

  createContext(context_id: u32): Context {
    return new Metrics(context_id, this);
  }
}

class Metrics extends Context {
  constructor(context_id: u32, root_context: MetricsRoot) {
    super(context_id, root_context);
  }

  onRequestHeaders(count: u32, end_of_stream: bool): FilterHeadersStatusValues {
    const root = this.root_context as MetricsRoot;
    incrementMetric(root.requests, 1);
    const n = stream_context.headers.request.get("x-count");
    if (n != "") {
      incrementMetric(root.units, I64.parseInt(n));
    }
    const pathLen = <u64>stream_context.headers.request.get(":path").length;
    recordMetric(root.lastPathLen, pathLen);
    recordMetric(root.pathLen, pathLen);
    return FilterHeadersStatusValues.Continue;
  }
}

registerRootContext((context_id: u32) => {
  return new MetricsRoot(context_id);
}, "metrics");
