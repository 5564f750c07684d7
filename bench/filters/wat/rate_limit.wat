;; Bench workload 3 in hand-written WebAssembly (twin of bench/filters/python/rate_limit.py): a
;; fixed-window rate limit per client, counted in shared data with CAS as "<window>:<count>", as the
;; Python and AssemblyScript twins store it. The plugin configuration, if any, is the limit per
;; window (the bench's rejection check sets a small one; timed runs leave it empty). No SDK and no
;; language runtime: its overhead is what Envoy's Wasm path costs any filter doing this work.
(module
  (import "env" "proxy_get_header_map_value" (func $get_header (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_get_current_time_nanoseconds" (func $now (param i32) (result i32)))
  (import "env" "proxy_get_shared_data" (func $get_shared (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_set_shared_data" (func $set_shared (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_get_buffer_bytes" (func $get_buffer (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_send_local_response"
    (func $send_local_response (param i32 i32 i32 i32 i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)

  ;; 16, 20: where Envoy writes a returned value's pointer and size; 24: the CAS; 32: the time.
  ;; 1024 on: constant strings. 2048: the value to store. 4096 on: the heap Envoy allocates returned
  ;; values in and the key is built in, emptied at every request (nothing outlives it).
  (data (i32.const 1024) "x-client")
  (data (i32.const 1040) "anonymous")
  (data (i32.const 1056) "rate limited\n")
  (global $heap (mut i32) (i32.const 4096))
  (global $limit (mut i64) (i64.const 1000000000)) ;; per one-second window

  ;; A bump pointer over the memory's one page; 0 (an error for the host call) when it is full.
  (func $malloc (export "proxy_on_memory_allocate") (param $size i32) (result i32) (local $at i32)
    (local.set $at (global.get $heap))
    (if (i32.gt_u (local.get $size) (i32.sub (i32.const 65536) (local.get $at))) (then (return (i32.const 0))))
    (global.set $heap (i32.and (i32.add (i32.add (local.get $at) (local.get $size)) (i32.const 7)) (i32.const -8)))
    (local.get $at))

  ;; The decimal number in [at, at + size); -1 if it is empty or holds anything but digits.
  (func $parse (param $at i32) (param $size i32) (result i64) (local $n i64) (local $digit i32) (local $end i32)
    (if (i32.eqz (local.get $size)) (then (return (i64.const -1))))
    (local.set $end (i32.add (local.get $at) (local.get $size)))
    (loop $next
      (local.set $digit (i32.sub (i32.load8_u (local.get $at)) (i32.const 48)))
      (if (i32.gt_u (local.get $digit) (i32.const 9)) (then (return (i64.const -1))))
      (local.set $n (i64.add (i64.mul (local.get $n) (i64.const 10)) (i64.extend_i32_u (local.get $digit))))
      (local.set $at (i32.add (local.get $at) (i32.const 1)))
      (br_if $next (i32.lt_u (local.get $at) (local.get $end))))
    (local.get $n))

  ;; Writes the decimal digits of $n (not negative) at $out; returns where they end.
  (func $format (param $n i64) (param $out i32) (result i32) (local $digits i32) (local $end i32) (local $rest i64)
    (local.set $digits (i32.const 1))
    (local.set $rest (local.get $n))
    (block $done (loop $count
      (br_if $done (i64.lt_u (local.get $rest) (i64.const 10)))
      (local.set $rest (i64.div_u (local.get $rest) (i64.const 10)))
      (local.set $digits (i32.add (local.get $digits) (i32.const 1)))
      (br $count)))
    (local.set $end (i32.add (local.get $out) (local.get $digits)))
    (local.set $out (local.get $end))
    (loop $write
      (local.set $out (i32.sub (local.get $out) (i32.const 1)))
      (i64.store8 (local.get $out) (i64.add (i64.rem_u (local.get $n) (i64.const 10)) (i64.const 48)))
      (local.set $n (i64.div_u (local.get $n) (i64.const 10)))
      (br_if $write (i64.ne (local.get $n) (i64.const 0))))
    (local.get $end))

  (func (export "proxy_abi_version_0_2_1"))
  (func (export "proxy_on_context_create") (param i32 i32))
  (func (export "proxy_on_vm_start") (param i32 i32) (result i32) (i32.const 1))

  ;; A configuration that is not a positive number: false, and Envoy rejects it.
  (func (export "proxy_on_configure") (param $root i32) (param $size i32) (result i32)
    (if (i32.eqz (local.get $size)) (then (return (i32.const 1))))
    (global.set $heap (i32.const 4096))
    (if (call $get_buffer (i32.const 7) (i32.const 0) (local.get $size) (i32.const 16) (i32.const 20))
      (then (return (i32.const 0))))
    (global.set $limit (call $parse (i32.load (i32.const 16)) (i32.load (i32.const 20))))
    (i64.gt_s (global.get $limit) (i64.const 0)))

  (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
    (local $client i32) (local $client_size i32) (local $key i32) (local $key_size i32) (local $window i64)
    (local $attempt i32) (local $count i64) (local $cas i32) (local $value i32) (local $colon i32) (local $end i32)
    (global.set $heap (i32.const 4096))
    ;; key = "rl:" + the x-client header ("anonymous" without one)
    (local.set $client (i32.const 1040))
    (local.set $client_size (i32.const 9))
    (if (i32.eqz (call $get_header (i32.const 0) (i32.const 1024) (i32.const 8) (i32.const 16) (i32.const 20)))
      (then (if (i32.load (i32.const 20)) (then
        (local.set $client (i32.load (i32.const 16)))
        (local.set $client_size (i32.load (i32.const 20)))))))
    (local.set $key_size (i32.add (local.get $client_size) (i32.const 3)))
    (local.set $key (call $malloc (local.get $key_size)))
    (if (i32.eqz (local.get $key)) (then (unreachable)))  ;; a client name near 60 KB: fail the request
    (i32.store8 (local.get $key) (i32.const 114))  ;; r
    (i32.store8 offset=1 (local.get $key) (i32.const 108))  ;; l
    (i32.store8 offset=2 (local.get $key) (i32.const 58))  ;; :
    (memory.copy (i32.add (local.get $key) (i32.const 3)) (local.get $client) (local.get $client_size))
    (drop (call $now (i32.const 32)))
    (local.set $window (i64.div_u (i64.load (i32.const 32)) (i64.const 1000000000)))
    (loop $attempts
      (local.set $count (i64.const 0))
      (local.set $cas (i32.const 0))
      (if (i32.eqz (call $get_shared (local.get $key) (local.get $key_size) (i32.const 16) (i32.const 20)
                                     (i32.const 24)))
        (then
          (local.set $cas (i32.load (i32.const 24)))
          (local.set $value (i32.load (i32.const 16)))
          (local.set $end (i32.add (local.get $value) (i32.load (i32.const 20))))
          (local.set $colon (local.get $value))
          (block $found (loop $find
            (br_if $found (i32.ge_u (local.get $colon) (local.get $end)))
            (br_if $found (i32.eq (i32.load8_u (local.get $colon)) (i32.const 58)))
            (local.set $colon (i32.add (local.get $colon) (i32.const 1)))
            (br $find)))
          (if (i64.eq (call $parse (local.get $value) (i32.sub (local.get $colon) (local.get $value)))
                      (local.get $window))
            (then (if (i32.lt_u (local.get $colon) (local.get $end)) (then
              (local.set $count (call $parse (i32.add (local.get $colon) (i32.const 1))
                                             (i32.sub (i32.sub (local.get $end) (local.get $colon)) (i32.const 1))))
              (if (i64.lt_s (local.get $count) (i64.const 0)) (then (local.set $count (i64.const 0))))))))))
      (if (i64.ge_s (local.get $count) (global.get $limit))
        (then
          (drop (call $send_local_response (i32.const 429) (i32.const 0) (i32.const 0) (i32.const 1056)
                                           (i32.const 13) (i32.const 0) (i32.const 0) (i32.const -1)))
          (return (i32.const 1))))
      ;; value = "<window>:<count + 1>" at 2048
      (local.set $end (call $format (local.get $window) (i32.const 2048)))
      (i32.store8 (local.get $end) (i32.const 58))
      (local.set $end (call $format (i64.add (local.get $count) (i64.const 1)) (i32.add (local.get $end) (i32.const 1))))
      (if (i32.ne (call $set_shared (local.get $key) (local.get $key_size) (i32.const 2048)
                                    (i32.sub (local.get $end) (i32.const 2048)) (local.get $cas))
                  (i32.const 8))  ;; not CasMismatch: stored (or failed for good), go on
        (then (return (i32.const 0))))
      (local.set $attempt (i32.add (local.get $attempt) (i32.const 1)))
      (br_if $attempts (i32.lt_u (local.get $attempt) (i32.const 8))))
    (i32.const 0))

  (func (export "proxy_on_done") (param i32) (result i32) (i32.const 1))
  (func (export "proxy_on_log") (param i32))
  (func (export "proxy_on_delete") (param i32)))
