// L4 (network filter): counts and logs bytes in both directions, and logs connection events.
// Counters: as_tcp_downstream_bytes, as_tcp_upstream_bytes, as_tcp_connections.
export * from "@solo-io/proxy-runtime/proxy";
import {
  Context,
  RootContext,
  registerRootContext,
  FilterStatusValues,
  LogLevelValues,
  log,
} from "@solo-io/proxy-runtime";
import { PeerTypeValues, getContext } from "@solo-io/proxy-runtime/runtime";
import {
  readPluginConfig,
  BUFFER_NETWORK_DOWNSTREAM,
  METRIC_COUNTER,
  defineMetric,
  getBufferString,
  incrementMetric,
} from "./common";

class NetworkRoot extends RootContext {
  connections: u32 = 0;
  downBytes: u32 = 0;
  upBytes: u32 = 0;

  config: string = "";

  onConfigure(configuration_size: u32): bool {
    this.config = readPluginConfig(configuration_size);
    this.connections = defineMetric(METRIC_COUNTER, "as_tcp_connections");
    this.downBytes = defineMetric(METRIC_COUNTER, "as_tcp_downstream_bytes");
    this.upBytes = defineMetric(METRIC_COUNTER, "as_tcp_upstream_bytes");
    return true;
  }

  createContext(context_id: u32): Context {
    return new Network(context_id, this);
  }
}

class Network extends Context {
  constructor(context_id: u32, root_context: NetworkRoot) {
    super(context_id, root_context);
  }

  root(): NetworkRoot {
    return this.root_context as NetworkRoot;
  }

  onNewConnection(): FilterStatusValues {
    incrementMetric(this.root().connections, 1);
    log(LogLevelValues.info, "tcp new connection");
    return FilterStatusValues.Continue;
  }

  onDownstreamData(size: usize, end: bool): FilterStatusValues {
    incrementMetric(this.root().downBytes, <i64>size);
    const data = getBufferString(BUFFER_NETWORK_DOWNSTREAM, 0, <u32>size);
    const firstLine = data.indexOf("\r\n") >= 0 ? data.substring(0, data.indexOf("\r\n")) : data;
    log(LogLevelValues.info, "tcp downstream bytes=" + size.toString() + " end=" + (end ? "1" : "0") + " first=" + firstLine);
    return FilterStatusValues.Continue;
  }

  onUpstreamData(size: usize, end: bool): FilterStatusValues {
    incrementMetric(this.root().upBytes, <i64>size);
    log(LogLevelValues.info, "tcp upstream bytes=" + size.toString() + " end=" + (end ? "1" : "0"));
    return FilterStatusValues.Continue;
  }

  onDownstreamConnectionClose(t: PeerTypeValues): void {
    log(LogLevelValues.info, "tcp downstream close peer=" + t.toString());
  }

  onUpstreamConnectionClose(t: PeerTypeValues): void {
    log(LogLevelValues.info, "tcp upstream close peer=" + t.toString());
  }
}

registerRootContext((context_id: u32) => {
  return new NetworkRoot(context_id);
}, "network");

// proxy-runtime 0.1.8 does not export the L4 entry points, so Envoy would never call them;
// export them here. The cast to Network makes the calls static: asc 0.14 dispatches these
// calls to the base Context methods otherwise.
export function proxy_on_new_connection(context_id: u32): u32 {
  return (getContext(context_id) as Network).onNewConnection();
}

export function proxy_on_downstream_data(context_id: u32, size: u32, end_of_stream: u32): u32 {
  return (getContext(context_id) as Network).onDownstreamData(size, end_of_stream != 0);
}

export function proxy_on_upstream_data(context_id: u32, size: u32, end_of_stream: u32): u32 {
  return (getContext(context_id) as Network).onUpstreamData(size, end_of_stream != 0);
}

export function proxy_on_downstream_connection_close(context_id: u32, peer: u32): void {
  (getContext(context_id) as Network).onDownstreamConnectionClose(peer);
}

export function proxy_on_upstream_connection_close(context_id: u32, peer: u32): void {
  (getContext(context_id) as Network).onUpstreamConnectionClose(peer);
}
