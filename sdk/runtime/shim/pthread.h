/* Debian's 2022 wasi-libc ships no pthread.h; CPython's headers only need the types. They are
 * wasi-libc's own (musl's bits/alltypes.h), as in the pthread.h CPython was compiled with: the
 * internal headers budget.c includes lay out _PyRuntime with them (budget.c checks the offsets). */
#ifndef PROXYWASM_PTHREAD_SHIM_H
#define PROXYWASM_PTHREAD_SHIM_H
#define __NEED_pthread_key_t 1
#define __NEED_pthread_mutex_t 1
#define __NEED_pthread_cond_t 1
#include <bits/alltypes.h>
#endif
