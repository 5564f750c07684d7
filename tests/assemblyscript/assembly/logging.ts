// Logging: one line per level on every request, tagged with the request path.
export * from "@solo-io/proxy-runtime/proxy";
import {
  Context,
  RootContext,
  registerRootContext,
  FilterHeadersStatusValues,
  LogLevelValues,
  log,
  stream_context,
} from "@solo-io/proxy-runtime";
import { readPluginConfig } from "./common";

class LoggingRoot extends RootContext {
  config: string = "";

  onConfigure(configuration_size: u32): bool {
    this.config = readPluginConfig(configuration_size);
    return true;
  }

  createContext(context_id: u32): Context {
    return new Logging(context_id, this);
  }
}

class Logging extends Context {
  constructor(context_id: u32, root_context: LoggingRoot) {
    super(context_id, root_context);
  }

  onRequestHeaders(count: u32, end_of_stream: bool): FilterHeadersStatusValues {
    const path = stream_context.headers.request.get(":path");
    log(LogLevelValues.trace, "log-test level=trace path=" + path);
    log(LogLevelValues.debug, "log-test level=debug path=" + path);
    log(LogLevelValues.info, "log-test level=info path=" + path);
    log(LogLevelValues.warn, "log-test level=warn path=" + path);
    log(LogLevelValues.error, "log-test level=error path=" + path);
    log(LogLevelValues.critical, "log-test level=critical path=" + path);
    return FilterHeadersStatusValues.Continue;
  }
}

registerRootContext((context_id: u32) => {
  return new LoggingRoot(context_id);
}, "logging");
