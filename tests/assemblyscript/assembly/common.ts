// Helpers shared by the fixture filters. They work around gaps in @solo-io/proxy-runtime 0.1.8:
// its onConfigure traps on an empty configuration, its shared-data wrappers pass the wrong
// pointers, and it has no wrapper for proxy_set_buffer_bytes.
import {
  WasmResultValues,
  LogLevelValues,
  log,
} from "@solo-io/proxy-runtime";

// BufferType values from the proxy-wasm ABI.
export const BUFFER_HTTP_REQUEST_BODY: u32 = 0;
export const BUFFER_HTTP_RESPONSE_BODY: u32 = 1;
export const BUFFER_NETWORK_DOWNSTREAM: u32 = 2;
export const BUFFER_NETWORK_UPSTREAM: u32 = 3;
export const BUFFER_HTTP_CALL_RESPONSE_BODY: u32 = 4;
export const BUFFER_PLUGIN_CONFIGURATION: u32 = 7;

@external("env", "proxy_get_buffer_bytes")
declare function proxy_get_buffer_bytes(typ: u32, start: u32, length: u32, ptr_ptr: usize, size_ptr: usize): u32;

@external("env", "proxy_set_buffer_bytes")
declare function proxy_set_buffer_bytes(typ: u32, start: u32, length: u32, data: usize, size: usize): u32;

@external("env", "proxy_get_shared_data")
declare function proxy_get_shared_data(key: usize, key_size: usize, value_ptr_ptr: usize, value_size_ptr: usize, cas_ptr: usize): u32;

@external("env", "proxy_set_shared_data")
declare function proxy_set_shared_data(key: usize, key_size: usize, value: usize, value_size: usize, cas: u32): u32;

// Out-parameters for host calls: the host writes a malloc'ed pointer and a size here.
const outPtr = memory.data(8);
const outSize = memory.data(8);
const outCas = memory.data(8);

// Copy `size` bytes the host malloc'ed at `ptr` into a fresh ArrayBuffer (leaks the host block:
// fine for short-lived test fixtures).
function takeBytes(ptr: usize, size: usize): ArrayBuffer {
  const result = new ArrayBuffer(<i32>size);
  memory.copy(changetype<usize>(result), ptr, size);
  return result;
}

// Read `length` bytes of a buffer from `start`; returns null when the host says it is not available.
export function getBuffer(typ: u32, start: u32, length: u32): ArrayBuffer | null {
  store<usize>(outPtr, 0);
  store<usize>(outSize, 0);
  const rc = proxy_get_buffer_bytes(typ, start, length, outPtr, outSize);
  if (rc != WasmResultValues.Ok) {
    return null;
  }
  return takeBytes(load<usize>(outPtr), load<usize>(outSize));
}

export function getBufferString(typ: u32, start: u32, length: u32): string {
  const bytes = getBuffer(typ, start, length);
  return bytes === null ? "" : String.UTF8.decode(bytes);
}

// Replace `length` bytes at `start` of a buffer with `data` (start=0,length=size replaces all).
export function setBuffer(typ: u32, start: u32, length: u32, data: string): u32 {
  const bytes = String.UTF8.encode(data);
  return proxy_set_buffer_bytes(typ, start, length, changetype<usize>(bytes), bytes.byteLength);
}

export class SharedValue {
  constructor(public result: u32, public value: string, public cas: u32) {}
}

export function getShared(key: string): SharedValue {
  const k = String.UTF8.encode(key);
  store<usize>(outPtr, 0);
  store<usize>(outSize, 0);
  store<u32>(outCas, 0);
  const rc = proxy_get_shared_data(changetype<usize>(k), k.byteLength, outPtr, outSize, outCas);
  if (rc != WasmResultValues.Ok) {
    return new SharedValue(rc, "", 0);
  }
  const value = String.UTF8.decode(takeBytes(load<usize>(outPtr), load<usize>(outSize)));
  return new SharedValue(rc, value, load<u32>(outCas));
}

export function setShared(key: string, value: string, cas: u32): u32 {
  const k = String.UTF8.encode(key);
  const v = String.UTF8.encode(value);
  return proxy_set_shared_data(changetype<usize>(k), k.byteLength, changetype<usize>(v), v.byteLength, cas);
}

// Read the plugin configuration in on_configure. The SDK's own onConfigure traps when the
// configuration is empty, so every fixture root overrides onConfigure and calls this instead.
// (Roots extend RootContext directly: asc 0.14 traps with `unreachable` when a method
// overridden two levels down the class chain is called virtually.)
export function readPluginConfig(configuration_size: u32): string {
  const config = configuration_size == 0
    ? ""
    : getBufferString(BUFFER_PLUGIN_CONFIGURATION, 0, configuration_size);
  log(LogLevelValues.info, "on_configure: config=" + config);
  return config;
}

@external("env", "proxy_define_metric")
declare function proxy_define_metric(typ: u32, name: usize, name_size: usize, id_ptr: usize): u32;

@external("env", "proxy_increment_metric")
declare function proxy_increment_metric(id: u32, offset: i64): u32;

@external("env", "proxy_record_metric")
declare function proxy_record_metric(id: u32, value: u64): u32;

export const METRIC_COUNTER: u32 = 0;
export const METRIC_GAUGE: u32 = 1;
export const METRIC_HISTOGRAM: u32 = 2;

const outId = memory.data(8);

// Define a metric and return its id (the SDK's Metric classes trap in this toolchain).
export function defineMetric(typ: u32, name: string): u32 {
  const n = String.UTF8.encode(name);
  const rc = proxy_define_metric(typ, changetype<usize>(n), n.byteLength, outId);
  if (rc != WasmResultValues.Ok) {
    log(LogLevelValues.error, "define_metric " + name + " failed rc=" + rc.toString());
  }
  return load<u32>(outId);
}

export function incrementMetric(id: u32, offset: i64): u32 {
  return proxy_increment_metric(id, offset);
}

export function recordMetric(id: u32, value: u64): u32 {
  return proxy_record_metric(id, value);
}
