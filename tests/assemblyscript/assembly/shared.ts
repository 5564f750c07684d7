// Shared data: every request increments key "hits" with a CAS retry loop (shared by all VMs with
// the same vm_id, i.e. across workers), and counts requests in a VM-local global too.
// x-shared-set: "key=value" stores a value; x-shared-get: "key" reads one. Results go into
// response headers: x-shared-hits, x-vm-hits, x-shared-get-status, x-shared-value.
export * from "@solo-io/proxy-runtime/proxy";
import {
  Context,
  RootContext,
  registerRootContext,
  FilterHeadersStatusValues,
  LogLevelValues,
  WasmResultValues,
  log,
  stream_context,
} from "@solo-io/proxy-runtime";
import { readPluginConfig, getShared, setShared } from "./common";

let vmHits: u32 = 0;

function incrementShared(key: string): string {
  for (let attempt = 0; attempt < 100; attempt++) {
    const current = getShared(key);
    const next = current.result == WasmResultValues.Ok ? I32.parseInt(current.value) + 1 : 1;
    const cas = current.result == WasmResultValues.Ok ? current.cas : 0;
    const rc = setShared(key, next.toString(), cas);
    if (rc == WasmResultValues.Ok) {
      return next.toString();
    }
    log(LogLevelValues.warn, "cas retry rc=" + rc.toString());
  }
  return "cas-failed";
}

class SharedRoot extends RootContext {
  config: string = "";

  onConfigure(configuration_size: u32): bool {
    this.config = readPluginConfig(configuration_size);
    return true;
  }

  createContext(context_id: u32): Context {
    return new Shared(context_id, this);
  }
}

class Shared extends Context {
  hits: string = "";
  local: string = "";
  getStatus: string = "";
  value: string = "";

  constructor(context_id: u32, root_context: SharedRoot) {
    super(context_id, root_context);
  }

  onRequestHeaders(count: u32, end_of_stream: bool): FilterHeadersStatusValues {
    vmHits += 1;
    this.local = vmHits.toString();
    this.hits = incrementShared("hits");
    log(LogLevelValues.info, "shared hits=" + this.hits + " vm_hits=" + this.local);
    const toSet = stream_context.headers.request.get("x-shared-set");
    if (toSet != "") {
      const eq = toSet.indexOf("=");
      setShared(toSet.substring(0, eq), toSet.substring(eq + 1), 0);
    }
    const toGet = stream_context.headers.request.get("x-shared-get");
    if (toGet != "") {
      const got = getShared(toGet);
      this.getStatus = got.result.toString();
      this.value = got.value;
    }
    return FilterHeadersStatusValues.Continue;
  }

  onResponseHeaders(count: u32, end_of_stream: bool): FilterHeadersStatusValues {
    stream_context.headers.response.add("x-shared-hits", this.hits);
    stream_context.headers.response.add("x-vm-hits", this.local);
    if (this.getStatus != "") {
      stream_context.headers.response.add("x-shared-get-status", this.getStatus);
      stream_context.headers.response.add("x-shared-value", this.value);
    }
    return FilterHeadersStatusValues.Continue;
  }
}

registerRootContext((context_id: u32) => {
  return new SharedRoot(context_id);
}, "shared");
