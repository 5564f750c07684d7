/* The host functions of proxy-wasm ABI v0.2.1 as Envoy exports them (module "env"). */
#ifndef PROXYWASM_HOSTCALLS_H
#define PROXYWASM_HOSTCALLS_H

#include <stddef.h>
#include <stdint.h>

#define HOSTCALL(name) __attribute__((import_module("env"), import_name(#name))) extern

typedef uint32_t status_t;

HOSTCALL(proxy_log) status_t proxy_log(uint32_t level, const char *msg, size_t len);
HOSTCALL(proxy_get_log_level) status_t proxy_get_log_level(uint32_t *level);
HOSTCALL(proxy_get_current_time_nanoseconds) status_t proxy_get_current_time_nanoseconds(uint64_t *ns);
HOSTCALL(proxy_set_tick_period_milliseconds) status_t proxy_set_tick_period_milliseconds(uint32_t ms);
HOSTCALL(proxy_set_effective_context) status_t proxy_set_effective_context(uint32_t context_id);
HOSTCALL(proxy_done) status_t proxy_done(void);
HOSTCALL(proxy_call_foreign_function)
status_t proxy_call_foreign_function(const char *name, size_t name_len, const char *args, size_t args_len,
                                     char **result, size_t *result_len);

HOSTCALL(proxy_get_buffer_bytes)
status_t proxy_get_buffer_bytes(uint32_t type, uint32_t start, uint32_t max_size, char **data, size_t *size);
HOSTCALL(proxy_get_buffer_status) status_t proxy_get_buffer_status(uint32_t type, size_t *length, uint32_t *flags);
HOSTCALL(proxy_set_buffer_bytes)
status_t proxy_set_buffer_bytes(uint32_t type, uint32_t start, uint32_t size, const char *data, size_t len);

HOSTCALL(proxy_get_header_map_pairs) status_t proxy_get_header_map_pairs(uint32_t type, char **data, size_t *size);
HOSTCALL(proxy_set_header_map_pairs) status_t proxy_set_header_map_pairs(uint32_t type, const char *data, size_t size);
HOSTCALL(proxy_get_header_map_size) status_t proxy_get_header_map_size(uint32_t type, size_t *size);
HOSTCALL(proxy_get_header_map_value)
status_t proxy_get_header_map_value(uint32_t type, const char *key, size_t key_len, char **value, size_t *value_len);
HOSTCALL(proxy_add_header_map_value)
status_t proxy_add_header_map_value(uint32_t type, const char *key, size_t key_len, const char *value,
                                    size_t value_len);
HOSTCALL(proxy_replace_header_map_value)
status_t proxy_replace_header_map_value(uint32_t type, const char *key, size_t key_len, const char *value,
                                        size_t value_len);
HOSTCALL(proxy_remove_header_map_value)
status_t proxy_remove_header_map_value(uint32_t type, const char *key, size_t key_len);

HOSTCALL(proxy_continue_stream) status_t proxy_continue_stream(uint32_t stream_type);
HOSTCALL(proxy_close_stream) status_t proxy_close_stream(uint32_t stream_type);
HOSTCALL(proxy_send_local_response)
status_t proxy_send_local_response(uint32_t status, const char *details, size_t details_len, const char *body,
                                   size_t body_len, const char *headers, size_t headers_len, int32_t grpc_status);
HOSTCALL(proxy_get_status) status_t proxy_get_status(uint32_t *code, char **message, size_t *message_len);

HOSTCALL(proxy_http_call)
status_t proxy_http_call(const char *upstream, size_t upstream_len, const char *headers, size_t headers_len,
                         const char *body, size_t body_len, const char *trailers, size_t trailers_len,
                         uint32_t timeout_ms, uint32_t *token);
HOSTCALL(proxy_grpc_call)
status_t proxy_grpc_call(const char *service, size_t service_len, const char *service_name, size_t service_name_len,
                         const char *method, size_t method_len, const char *metadata, size_t metadata_len,
                         const char *message, size_t message_len, uint32_t timeout_ms, uint32_t *token);
HOSTCALL(proxy_grpc_stream)
status_t proxy_grpc_stream(const char *service, size_t service_len, const char *service_name,
                           size_t service_name_len, const char *method, size_t method_len, const char *metadata,
                           size_t metadata_len, uint32_t *token);
HOSTCALL(proxy_grpc_send)
status_t proxy_grpc_send(uint32_t token, const char *message, size_t message_len, uint32_t end_stream);
HOSTCALL(proxy_grpc_cancel) status_t proxy_grpc_cancel(uint32_t token);
HOSTCALL(proxy_grpc_close) status_t proxy_grpc_close(uint32_t token);

HOSTCALL(proxy_get_shared_data)
status_t proxy_get_shared_data(const char *key, size_t key_len, char **value, size_t *value_len, uint32_t *cas);
HOSTCALL(proxy_set_shared_data)
status_t proxy_set_shared_data(const char *key, size_t key_len, const char *value, size_t value_len, uint32_t cas);
HOSTCALL(proxy_register_shared_queue)
status_t proxy_register_shared_queue(const char *name, size_t name_len, uint32_t *queue_id);
HOSTCALL(proxy_resolve_shared_queue)
status_t proxy_resolve_shared_queue(const char *vm_id, size_t vm_id_len, const char *name, size_t name_len,
                                    uint32_t *queue_id);
HOSTCALL(proxy_enqueue_shared_queue)
status_t proxy_enqueue_shared_queue(uint32_t queue_id, const char *data, size_t data_len);
HOSTCALL(proxy_dequeue_shared_queue)
status_t proxy_dequeue_shared_queue(uint32_t queue_id, char **data, size_t *data_len);

HOSTCALL(proxy_define_metric)
status_t proxy_define_metric(uint32_t type, const char *name, size_t name_len, uint32_t *metric_id);
HOSTCALL(proxy_increment_metric) status_t proxy_increment_metric(uint32_t metric_id, int64_t offset);
HOSTCALL(proxy_record_metric) status_t proxy_record_metric(uint32_t metric_id, uint64_t value);
HOSTCALL(proxy_get_metric) status_t proxy_get_metric(uint32_t metric_id, uint64_t *value);

HOSTCALL(proxy_get_property)
status_t proxy_get_property(const char *path, size_t path_len, char **value, size_t *value_len);
HOSTCALL(proxy_set_property)
status_t proxy_set_property(const char *path, size_t path_len, const char *value, size_t value_len);

#endif
