/* Debian's 2022 wasi-libc ships no pthread.h; CPython's headers only need the types. */
#ifndef PROXYWASM_PTHREAD_SHIM_H
#define PROXYWASM_PTHREAD_SHIM_H
typedef unsigned pthread_key_t;
#endif
