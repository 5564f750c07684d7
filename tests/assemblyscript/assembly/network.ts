// L4 (network filter): counts and logs bytes in both directions, and logs connection events.
// Counters: as_tcp_downstream_bytes, as_tcp_upstream_bytes, as_tcp_connections.
export * from "@solo-io/proxy-runtime/proxy";
import {
  Context,
  registerRootContext,
  Counter,
  FilterStatusValues,
  LogLevelValues,
  log,
} from "@solo-io/proxy-runtime";
import { PeerTypeValues } from "@solo-io/proxy-runtime/runtime";
import { ConfiguredRoot, BUFFER_NETWORK_DOWNSTREAM, getBufferString } from "./common";

class NetworkRoot extends ConfiguredRoot {
  connections: Counter | null = null;
  downBytes: Counter | null = null;
  upBytes: Counter | null = null;

  configured(): bool {
    this.connections = new Counter("as_tcp_connections");
    this.downBytes = new Counter("as_tcp_downstream_bytes");
    this.upBytes = new Counter("as_tcp_upstream_bytes");
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
    (this.root().connections as Counter).increment(1);
    log(LogLevelValues.info, "tcp new connection");
    return FilterStatusValues.Continue;
  }

  onDownstreamData(size: usize, end: bool): FilterStatusValues {
    (this.root().downBytes as Counter).increment(<u32>size);
    const data = getBufferString(BUFFER_NETWORK_DOWNSTREAM, 0, <u32>size);
    const firstLine = data.indexOf("\r\n") >= 0 ? data.substring(0, data.indexOf("\r\n")) : data;
    log(LogLevelValues.info, "tcp downstream bytes=" + size.toString() + " end=" + (end ? "1" : "0") + " first=" + firstLine);
    return FilterStatusValues.Continue;
  }

  onUpstreamData(size: usize, end: bool): FilterStatusValues {
    (this.root().upBytes as Counter).increment(<u32>size);
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
