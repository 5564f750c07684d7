// Bench workload 2 (twin of bench/filters/python/json_body.py): buffer a JSON request body and
// reject it unless it is an object naming a user. The body is fully validated as JSON, as
// Python's json.loads does (assemblyscript-json trips the runtime's allocator under asc 0.14).
export * from "@solo-io/proxy-runtime/proxy";
import {
  Context,
  RootContext,
  registerRootContext,
  FilterDataStatusValues,
  GrpcStatusValues,
  send_local_response,
} from "@solo-io/proxy-runtime";
import { BUFFER_HTTP_REQUEST_BODY, getBuffer, readPluginConfig } from "./common";

// A validating JSON scanner over bytes; `userSeen` records a top-level "user" key.
class Scanner {
  pos: i32 = 0;
  userSeen: bool = false;
  constructor(public data: Uint8Array) {}

  peek(): i32 {
    while (this.pos < this.data.length) {
      const c = <i32>this.data[this.pos];
      if (c != 0x20 && c != 0x09 && c != 0x0a && c != 0x0d) return c;
      this.pos++;
    }
    return -1;
  }

  value(depth: i32): bool {
    const c = this.peek();
    if (c == 0x7b) return this.object(depth);
    if (c == 0x5b) return this.array(depth);
    if (c == 0x22) return this.str() >= 0;
    if (c == 0x2d || (c >= 0x30 && c <= 0x39)) return this.number();
    return this.literal("true") || this.literal("false") || this.literal("null");
  }

  literal(word: string): bool {
    for (let i = 0; i < word.length; i++) {
      if (this.pos + i >= this.data.length || <i32>this.data[this.pos + i] != word.charCodeAt(i)) return false;
    }
    this.pos += word.length;
    return true;
  }

  number(): bool {
    const start = this.pos;
    while (this.pos < this.data.length) {
      const c = <i32>this.data[this.pos];
      if (!((c >= 0x30 && c <= 0x39) || c == 0x2d || c == 0x2b || c == 0x2e || c == 0x65 || c == 0x45)) break;
      this.pos++;
    }
    return this.pos > start;
  }

  // Returns the string's start offset (after the quote), or -1.
  str(): i32 {
    this.pos++;
    const start = this.pos;
    while (this.pos < this.data.length) {
      const c = <i32>this.data[this.pos++];
      if (c == 0x5c) this.pos++;
      else if (c == 0x22) return start;
    }
    return -1;
  }

  object(depth: i32): bool {
    this.pos++;
    if (this.peek() == 0x7d) { this.pos++; return true; }
    while (true) {
      if (this.peek() != 0x22) return false;
      const start = this.str();
      if (start < 0) return false;
      if (depth == 0 && this.pos - start - 1 == 4 && this.data[start] == 0x75 && this.data[start + 1] == 0x73
          && this.data[start + 2] == 0x65 && this.data[start + 3] == 0x72) {
        this.userSeen = true;
      }
      if (this.peek() != 0x3a) return false;
      this.pos++;
      if (!this.value(depth + 1)) return false;
      const c = this.peek();
      this.pos++;
      if (c == 0x7d) return true;
      if (c != 0x2c) return false;
    }
  }

  array(depth: i32): bool {
    this.pos++;
    if (this.peek() == 0x5d) { this.pos++; return true; }
    while (true) {
      if (!this.value(depth + 1)) return false;
      const c = this.peek();
      this.pos++;
      if (c == 0x5d) return true;
      if (c != 0x2c) return false;
    }
  }
}

class BenchJsonRoot extends RootContext {
  onConfigure(configuration_size: u32): bool {
    readPluginConfig(configuration_size);
    return true;
  }

  createContext(context_id: u32): Context {
    return new BenchJson(context_id, this);
  }
}

class BenchJson extends Context {
  constructor(context_id: u32, root_context: BenchJsonRoot) {
    super(context_id, root_context);
  }

  onRequestBody(size: usize, end_of_stream: bool): FilterDataStatusValues {
    if (!end_of_stream) {
      return FilterDataStatusValues.StopIterationAndBuffer;
    }
    const body = getBuffer(BUFFER_HTTP_REQUEST_BODY, 0, <u32>size);
    let ok = false;
    if (body != null) {
      const scanner = new Scanner(Uint8Array.wrap(body));
      ok = scanner.peek() == 0x7b && scanner.value(0) && scanner.peek() == -1 && scanner.userSeen;
    }
    if (!ok) {
      send_local_response(400, "", String.UTF8.encode("a JSON object with a user is required\n"), [],
        GrpcStatusValues.InvalidCode);
      return FilterDataStatusValues.StopIterationNoBuffer;
    }
    return FilterDataStatusValues.Continue;
  }
}

registerRootContext((context_id: u32) => {
  return new BenchJsonRoot(context_id);
}, "bench");
