// VM failure: x-trap: abort throws, i.e. calls AssemblyScript abort() (which logs critical and calls
// proc_exit(255) under --use abort=abort_proc_exit); x-trap: unreachable executes `unreachable`.
// Every response gets x-vm-requests, the number of requests this VM instance has seen (a fresh VM
// starts again at 1).
export * from "@solo-io/proxy-runtime/proxy";
import {
  Context,
  RootContext,
  registerRootContext,
  FilterHeadersStatusValues,
  stream_context,
} from "@solo-io/proxy-runtime";
import { readPluginConfig } from "./common";

let vmRequests: u32 = 0;

class TrapRoot extends RootContext {
  config: string = "";

  onConfigure(configuration_size: u32): bool {
    this.config = readPluginConfig(configuration_size);
    return true;
  }

  createContext(context_id: u32): Context {
    return new Trap(context_id, this);
  }
}

class Trap extends Context {
  constructor(context_id: u32, root_context: TrapRoot) {
    super(context_id, root_context);
  }

  onRequestHeaders(count: u32, end_of_stream: bool): FilterHeadersStatusValues {
    vmRequests += 1;
    const how = stream_context.headers.request.get("x-trap");
    if (how == "abort") {
      // A throw compiles to a call of the configured abort (abort_proc_exit).
      throw new Error("trap requested");
    } else if (how == "unreachable") {
      unreachable();
    }
    return FilterHeadersStatusValues.Continue;
  }

  onResponseHeaders(count: u32, end_of_stream: bool): FilterHeadersStatusValues {
    stream_context.headers.response.add("x-vm-requests", vmRequests.toString());
    return FilterHeadersStatusValues.Continue;
  }
}

registerRootContext((context_id: u32) => {
  return new TrapRoot(context_id);
}, "trap");
