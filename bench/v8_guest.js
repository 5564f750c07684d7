// The bench's workloads run in V8 without Envoy: a minimal proxy-wasm host in JavaScript, for
// timing only. Run by bench/v8_guest.py, which builds the modules and writes the spec (the
// workload's timed request and configuration, from bench.py); see that file for what it measures.
//
//   node --no-liftoff bench/v8_guest.js SPEC.json
//
// --no-liftoff: Envoy's V8 compiles Wasm with TurboFan only (proxy-wasm-cpp-host turns Liftoff off).
// The host functions do what Envoy does for these workloads and no more (header maps, buffers, an
// http_call answered 200 "ok" once the callback returns, shared data with CAS, the root context's
// lifecycle); anything else answers NOT_FOUND / ENOSYS. It is not a test host: the local host on
// wasmtime (host/) is the one that must behave as Envoy does.
'use strict';
const fs = require('fs');
const enc = new TextEncoder(), dec = new TextDecoder();

function makeVm(path, opts) {
  // opts: rootId, config (the plugin configuration, a string), evict (bytes swept before each callback)
  const bytes = fs.readFileSync(path);
  const mod = new WebAssembly.Module(bytes);
  let mem, ex;
  const maps = {}, buffers = {};
  const calls = [];
  let token = 0, replies = 0;
  const shared = new Map();
  const u8 = () => new Uint8Array(mem.buffer);
  const dv = () => new DataView(mem.buffer);
  const str = (p, l) => dec.decode(u8().subarray(p, p + l));
  const alloc = (b) => {
    const p = ex.malloc(b.length || 1);
    u8().set(b, p);
    return p;
  };
  const ret = (b, pp, sp) => {
    const p = alloc(b);
    dv().setUint32(pp, p, true);
    dv().setUint32(sp, b.length, true);
    return 0;
  };
  const serialize = (pairs) => {
    const ks = pairs.map(([k, v]) => [enc.encode(k), enc.encode(v)]);
    let size = 4 + ks.length * 8;
    for (const [k, v] of ks) size += k.length + v.length + 2;
    const out = new Uint8Array(size);
    const d = new DataView(out.buffer);
    d.setUint32(0, ks.length, true);
    let o = 4;
    for (const [k, v] of ks) { d.setUint32(o, k.length, true); d.setUint32(o + 4, v.length, true); o += 8; }
    for (const [k, v] of ks) { out.set(k, o); o += k.length + 1; out.set(v, o); o += v.length + 1; }
    return out;
  };
  const deserialize = (p, l) => {
    const b = u8().slice(p, p + l), d = new DataView(b.buffer);
    const n = d.getUint32(0, true); const sizes = []; let o = 4;
    for (let i = 0; i < n; i++) { sizes.push([d.getUint32(o, true), d.getUint32(o + 4, true)]); o += 8; }
    const out = [];
    for (const [kl, vl] of sizes) { const k = dec.decode(b.subarray(o, o + kl)); o += kl + 1; const v = dec.decode(b.subarray(o, o + vl)); o += vl + 1; out.push([k, v]); }
    return out;
  };
  const env = {
    proxy_log: (lvl, p, l) => { if (lvl >= 3) console.error('log', lvl, str(p, l)); return 0; },
    proxy_get_log_level: (p) => { dv().setUint32(p, 2, true); return 0; },
    proxy_get_buffer_bytes: (t, start, len, pp, sp) => {
      const b = buffers[t]; if (!b) return 1;
      return ret(b.subarray(start, start + len), pp, sp);
    },
    proxy_get_buffer_status: (t, lp, fp) => { const b = buffers[t]; if (!b) return 1; dv().setUint32(lp, b.length, true); dv().setUint32(fp, 0, true); return 0; },
    proxy_set_buffer_bytes: () => 0,
    proxy_get_header_map_pairs: (t, pp, sp) => ret(serialize(maps[t] || []), pp, sp),
    proxy_set_header_map_pairs: (t, p, l) => { maps[t] = deserialize(p, l); return 0; },
    proxy_get_header_map_size: (t, sp) => { dv().setUint32(sp, serialize(maps[t] || []).length, true); return 0; },
    proxy_get_header_map_value: (t, kp, kl, pp, sp) => {
      const k = str(kp, kl); const f = (maps[t] || []).find(([a]) => a === k);
      if (!f) return 1;
      return ret(enc.encode(f[1]), pp, sp);
    },
    proxy_add_header_map_value: (t, kp, kl, vp, vl) => { (maps[t] = maps[t] || []).push([str(kp, kl), str(vp, vl)]); return 0; },
    proxy_replace_header_map_value: (t, kp, kl, vp, vl) => {
      const k = str(kp, kl), v = str(vp, vl); const m = (maps[t] = maps[t] || []);
      const f = m.find(([a]) => a === k); if (f) f[1] = v; else m.push([k, v]); return 0;
    },
    proxy_remove_header_map_value: (t, kp, kl) => { const k = str(kp, kl); maps[t] = (maps[t] || []).filter(([a]) => a !== k); return 0; },
    proxy_continue_stream: () => 0,
    proxy_close_stream: () => 0,
    proxy_send_local_response: () => { replies++; return 0; },
    proxy_get_status: (cp, pp, sp) => { dv().setUint32(cp, 0, true); return ret(new Uint8Array(0), pp, sp); },
    proxy_http_call: (up, ul, hp, hl, bp, bl, tp, tl, timeout, tokp) => {
      token++; calls.push({ token, headers: deserialize(hp, hl) }); dv().setUint32(tokp, token, true); return 0;
    },
    proxy_set_effective_context: () => 0,
    proxy_done: () => 0,
    proxy_get_current_time_nanoseconds: (p) => { dv().setBigUint64(p, process.hrtime.bigint(), true); return 0; },
    proxy_set_tick_period_milliseconds: () => 0,
    proxy_get_property: (pp, pl, rp, sp) => {
      const path = str(pp, pl).split('\0').filter(Boolean).join('.');
      if (path === 'plugin_root_id') return ret(enc.encode(opts.rootId || ''), rp, sp);
      if (path === 'plugin_name') return ret(enc.encode('bench'), rp, sp);
      return 1;
    },
    proxy_set_property: () => 0,
    proxy_define_metric: (t, np, nl, idp) => { dv().setUint32(idp, 1, true); return 0; },
    proxy_increment_metric: () => 0, proxy_record_metric: () => 0, proxy_get_metric: () => 1,
    proxy_get_shared_data: (kp, kl, vpp, vsp, casp) => {
      const e = shared.get(str(kp, kl)); if (!e) return 1;
      dv().setUint32(casp, e.cas, true); return ret(e.value, vpp, vsp);
    },
    proxy_set_shared_data: (kp, kl, vp, vl, cas) => {
      const k = str(kp, kl), e = shared.get(k);
      if (cas && e && e.cas !== cas) return 8;  // CAS_MISMATCH
      shared.set(k, { value: u8().slice(vp, vp + vl), cas: (e ? e.cas : 0) + 1 }); return 0;
    },
    proxy_register_shared_queue: () => 0, proxy_resolve_shared_queue: () => 1, proxy_enqueue_shared_queue: () => 0, proxy_dequeue_shared_queue: () => 7,
    proxy_call_foreign_function: () => 1,
    proxy_grpc_call: () => 1, proxy_grpc_stream: () => 1, proxy_grpc_send: () => 1, proxy_grpc_cancel: () => 1, proxy_grpc_close: () => 1,
  };
  const wasi = {
    environ_sizes_get: (cp, sp) => { dv().setUint32(cp, 0, true); dv().setUint32(sp, 0, true); return 0; },
    environ_get: () => 0,
    clock_time_get: (id, prec, p) => { dv().setBigUint64(p, process.hrtime.bigint(), true); return 0; },
    clock_res_get: (id, p) => { dv().setBigUint64(p, 1n, true); return 0; },
    fd_write: (fd, iovs, n, np) => {
      let total = 0; const d = dv();
      for (let i = 0; i < n; i++) { const p = d.getUint32(iovs + 8 * i, true), l = d.getUint32(iovs + 8 * i + 4, true); total += l; if (fd === 2 || fd === 1) process.stderr.write(str(p, l)); }
      d.setUint32(np, total, true); return 0;
    },
    random_get: (p, l) => { const a = u8(); for (let i = 0; i < l; i++) a[p + i] = (Math.random() * 256) | 0; return 0; },
    proc_exit: (c) => { throw new Error('proc_exit ' + c); },
    sched_yield: () => 0,
  };
  const imports = { env: {}, wasi_snapshot_preview1: {} };
  for (const imp of WebAssembly.Module.imports(mod)) {
    if (imp.kind !== 'function') continue;
    const table = imp.module === 'env' ? env : wasi;
    const f = table[imp.name] || (() => { return imp.module === 'env' ? 1 : 52; });
    (imports[imp.module] = imports[imp.module] || {})[imp.name] = f;
  }
  const inst = new WebAssembly.Instance(mod, imports);
  ex = inst.exports; mem = ex.memory;
  if (opts.evict > 0) ex = timedExports(ex);
  if (ex._initialize) ex._initialize();
  const vmConfig = enc.encode(''), pluginConfig = enc.encode(opts.config || '');
  buffers[6] = vmConfig; buffers[7] = pluginConfig;
  ex.proxy_on_context_create(1, 0);
  if (!ex.proxy_on_vm_start(1, vmConfig.length)) throw new Error('vm start failed');
  if (!ex.proxy_on_configure(1, pluginConfig.length)) throw new Error('configure failed');
  let ctx = 1;
  return {
    exports: () => ex,
    // One stream, as Envoy calls the filter for the timed request.
    request(w) { this.batch(w, 1); return { replies, request: maps[0], response: maps[2] }; },
    // k streams at once: each one's request callbacks, then the callouts' answers, then each
    // one's response callbacks (wrk -c4 keeps that many in flight in Envoy).
    batch(w, k) {
      replies = 0;
      const ids = [];
      for (let j = 0; j < k; j++) {
        const id = ++ctx; ids.push(id);
        maps[0] = w.headers.slice();
        buffers[0] = w.body;
        ex.proxy_on_context_create(id, 1);
        ex.proxy_on_request_headers(id, maps[0].length, w.body.length === 0 ? 1 : 0);
        if (w.body.length) ex.proxy_on_request_body(id, w.body.length, 1);
      }
      while (calls.length) {
        const c = calls.shift();
        maps[6] = [[':status', '200'], ['content-length', '3']];
        buffers[4] = enc.encode('ok\n');
        ex.proxy_on_http_call_response(1, c.token, 2, 3, 0);
      }
      for (const id of ids) {
        maps[2] = [[':status', '200'], ['content-length', '0']];
        ex.proxy_on_response_headers(id, 2, 1);
        ex.proxy_on_log(id);
        ex.proxy_on_done(id);
        ex.proxy_on_delete(id);
      }
    },
  };
}


// --evict BYTES: before each callback, write one byte per 64-byte line of a BYTES-sized buffer, so
// the guest starts each callback with caches holding someone else's data, as in Envoy, where
// parsing, routing, the upstream and the kernel run between a stream's callbacks; then only the
// time inside the callbacks is counted (the sweeps are not).
let guestNs = 0n;
let timing = null;  // the variant whose rounds are timed: each callback's time is kept by name (--evict)
const callbackNs = {};
let evictBuffer = new Uint8Array(0);
function evict() {
  const b = evictBuffer;
  for (let i = 0; i < b.length; i += 64) b[i]++;
}
function timedExports(raw) {
  const out = {};
  for (const [name, f] of Object.entries(raw)) {
    out[name] = typeof f !== 'function' || !name.startsWith('proxy_on_') ? f : (...args) => {
      evict();
      const t0 = process.hrtime.bigint();
      const result = f(...args);
      const ns = process.hrtime.bigint() - t0;
      guestNs += ns;
      if (timing !== null) ((callbackNs[timing] ||= {})[name] ||= []).push(Number(ns) / 1000);
      return result;
    };
  }
  return out;
}

const median = (a) => { const s = a.slice().sort((x, y) => x - y); return s[s.length >> 1]; };

function main() {
  const spec = JSON.parse(fs.readFileSync(process.argv[2], 'utf8'));
  const w = { headers: spec.headers, body: Buffer.from(spec.body, 'base64') };
  evictBuffer = new Uint8Array(spec.evict || 0);
  const opts = { rootId: spec.rootId, config: spec.config, evict: spec.evict || 0 };
  const vms = spec.variants.map((v) => ({ ...v, vm: makeVm(v.path, opts) }));
  const checks = {};
  for (const v of vms) {
    checks[v.label] = v.vm.request(w);
    for (let i = 0; i < spec.warmup; i++) v.vm.request(w);
  }
  if (spec.profile) {  // bench/hot_functions.py: its instrumented modules count function entries
    const prefix = 'proxywasm_profile_';
    const counts = (vm) => Object.entries(vm.exports()).filter(([k]) => k.startsWith(prefix))
      .map(([k, g]) => [k.slice(prefix.length), g.value]);
    const profiles = {};
    for (const v of vms) {
      const before = Object.fromEntries(counts(v.vm));
      for (let k = 0; k < spec.requests; k += spec.concurrent) v.vm.batch(w, Math.min(spec.concurrent, spec.requests - k));
      profiles[v.label] = Object.fromEntries(counts(v.vm).filter(([k, n]) => n !== before[k])
        .map(([k, n]) => [k, (n - before[k]) / spec.requests]));
    }
    process.stdout.write(JSON.stringify({ checks, profiles }) + '\n');
    return;
  }
  const samples = Object.fromEntries(vms.map((v) => [v.label, []]));
  for (let r = 0; r < spec.rounds; r++) {
    const order = vms.slice(r % vms.length).concat(vms.slice(0, r % vms.length));
    for (const v of order) {
      const t0 = process.hrtime.bigint(), g0 = guestNs;
      timing = v.label;
      if (spec.concurrent > 1) for (let k = 0; k < spec.requests; k += spec.concurrent) v.vm.batch(w, spec.concurrent);
      else for (let k = 0; k < spec.requests; k++) v.vm.request(w);
      timing = null;
      const ns = spec.evict ? guestNs - g0 : process.hrtime.bigint() - t0;
      samples[v.label].push(Number(ns) / spec.requests / 1000);
    }
  }
  const first = vms[0].label;
  const out = vms.map((v) => ({
    label: v.label,
    us: median(samples[v.label]),
    paired: median(samples[v.label].map((x, i) => x / samples[first][i])),
    callbacks: Object.fromEntries(Object.entries(callbackNs[v.label] || {}).map(([k, a]) => [k, median(a)])),
  }));
  process.stdout.write(JSON.stringify({ checks, results: out }) + '\n');
}

main();
