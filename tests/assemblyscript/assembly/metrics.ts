// Metrics: a counter of requests, a counter incremented by the x-count header, a gauge set to the
// last path length and a histogram of path lengths. Defined once per VM in on_configure.
export * from "@solo-io/proxy-runtime/proxy";
import {
  Context,
  registerRootContext,
  FilterHeadersStatusValues,
  Counter,
  Gauge,
  Histogram,
  stream_context,
} from "@solo-io/proxy-runtime";
import { record_metric } from "@solo-io/proxy-runtime/runtime";
import { ConfiguredRoot } from "./common";

class MetricsRoot extends ConfiguredRoot {
  requests: Counter | null = null;
  units: Counter | null = null;
  lastPathLen: Gauge | null = null;
  pathLen: Histogram | null = null;

  configured(): bool {
    this.requests = new Counter("as_requests_total");
    this.units = new Counter("as_units_total");
    this.lastPathLen = new Gauge("as_last_path_len");
    this.pathLen = new Histogram("as_path_len");
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
    (root.requests as Counter).increment(1);
    const n = stream_context.headers.request.get("x-count");
    if (n != "") {
      (root.units as Counter).increment(<u32>I32.parseInt(n));
    }
    const pathLen = <u64>stream_context.headers.request.get(":path").length;
    record_metric((root.lastPathLen as Gauge).metric_id, pathLen);
    record_metric((root.pathLen as Histogram).metric_id, pathLen);
    return FilterHeadersStatusValues.Continue;
  }
}

registerRootContext((context_id: u32) => {
  return new MetricsRoot(context_id);
}, "metrics");
