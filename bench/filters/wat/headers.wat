;; Bench workload 1 in hand-written WebAssembly (twin of bench/filters/python/headers.py): check an
;; API key header, add a request and a response header. No SDK and no language runtime: the three
;; host calls and nothing else, so its overhead is what Envoy's Wasm path costs any filter doing
;; this work (the floor under AssemblyScript and Python).
(module
  (import "env" "proxy_get_header_map_value" (func $get_header (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_replace_header_map_value" (func $replace_header (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_send_local_response"
    (func $send_local_response (param i32 i32 i32 i32 i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)

  ;; 16, 20: where Envoy writes the found value's pointer and size. 1024 on: constant strings.
  ;; 4096 on: the heap Envoy allocates the value in, emptied at every request (nothing outlives it).
  (data (i32.const 1024) "x-api-key")
  (data (i32.const 1040) "x-bench")
  (data (i32.const 1048) "1")
  (data (i32.const 1056) "x-filtered")
  (data (i32.const 1072) "wat")
  (data (i32.const 1080) "missing x-api-key\n")
  (global $heap (mut i32) (i32.const 4096))

  ;; Envoy's allocator for the values it returns: a bump pointer over the memory's one page; 0 (an
  ;; error for the host call) when a value does not fit.
  (func (export "proxy_on_memory_allocate") (param $size i32) (result i32) (local $at i32)
    (local.set $at (global.get $heap))
    (if (i32.gt_u (local.get $size) (i32.sub (i32.const 65536) (local.get $at))) (then (return (i32.const 0))))
    (global.set $heap (i32.and (i32.add (i32.add (local.get $at) (local.get $size)) (i32.const 7)) (i32.const -8)))
    (local.get $at))

  (func (export "proxy_abi_version_0_2_1"))
  (func (export "proxy_on_context_create") (param i32 i32))
  (func (export "proxy_on_vm_start") (param i32 i32) (result i32) (i32.const 1))
  (func (export "proxy_on_configure") (param i32 i32) (result i32) (i32.const 1))

  ;; No x-api-key (or an empty one): 401 and stop; else x-bench: 1 and continue.
  (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
    (global.set $heap (i32.const 4096))
    (if (i32.or (call $get_header (i32.const 0) (i32.const 1024) (i32.const 9) (i32.const 16) (i32.const 20))
                (i32.eqz (i32.load (i32.const 20))))
      (then
        (drop (call $send_local_response (i32.const 401) (i32.const 0) (i32.const 0) (i32.const 1080) (i32.const 18)
                                         (i32.const 0) (i32.const 0) (i32.const -1)))
        (return (i32.const 1))))
    (drop (call $replace_header (i32.const 0) (i32.const 1040) (i32.const 7) (i32.const 1048) (i32.const 1)))
    (i32.const 0))

  (func (export "proxy_on_response_headers") (param i32 i32 i32) (result i32)
    (drop (call $replace_header (i32.const 2) (i32.const 1056) (i32.const 10) (i32.const 1072) (i32.const 3)))
    (i32.const 0))

  (func (export "proxy_on_done") (param i32) (result i32) (i32.const 1))
  (func (export "proxy_on_log") (param i32))
  (func (export "proxy_on_delete") (param i32)))
