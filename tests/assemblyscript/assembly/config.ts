// Plugin configuration: read at on_configure and returned in the x-plugin-config response header.
// The configuration "reject" makes on_configure return false.
export * from "@solo-io/proxy-runtime/proxy";
import {
  Context,
  RootContext,
  registerRootContext,
  FilterHeadersStatusValues,
  stream_context,
} from "@solo-io/proxy-runtime";
import { readPluginConfig } from "./common";

class ConfigRoot extends RootContext {
  config: string = "";

  onConfigure(configuration_size: u32): bool {
    this.config = readPluginConfig(configuration_size);
    return this.config != "reject";
  }

  createContext(context_id: u32): Context {
    return new Config(context_id, this);
  }
}

class Config extends Context {
  constructor(context_id: u32, root_context: ConfigRoot) {
    super(context_id, root_context);
  }

  onResponseHeaders(count: u32, end_of_stream: bool): FilterHeadersStatusValues {
    stream_context.headers.response.add("x-plugin-config", (this.root_context as ConfigRoot).config);
    return FilterHeadersStatusValues.Continue;
  }
}

registerRootContext((context_id: u32) => {
  return new ConfigRoot(context_id);
}, "config");
