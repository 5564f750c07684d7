/* Keeps garbage out of the build-time snapshot: while the runtime initialises, freed heap
 * blocks and the unused part of the stack are zeroed. Zero bytes need no data segment, so the
 * module is smaller and each Envoy worker touches fewer pages. At run time this costs nothing. */
#include <malloc.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "runtime.h"

/* Linked with --stack-first: the stack occupies the bottom of memory, below the data, so an
 * overflow traps instead of silently overwriting CPython's static objects. */
#define STACK_LOW 1024

static int zero_freed;

void __real_free(void *ptr);
void *__real_realloc(void *ptr, size_t size);

void __wrap_free(void *ptr) {
    if (zero_freed && ptr != NULL) memset(ptr, 0, malloc_usable_size(ptr));
    __real_free(ptr);
}

void *__wrap_realloc(void *ptr, size_t size) {
    if (!zero_freed || ptr == NULL || size == 0) return __real_realloc(ptr, size);
    /* A moving realloc frees the old block inside the allocator, where we cannot see it. */
    size_t old = malloc_usable_size(ptr);
    if (size <= old) return ptr;
    void *moved = malloc(size);
    if (moved == NULL) return NULL;
    memcpy(moved, ptr, old);
    __wrap_free(ptr);
    return moved;
}

void snapshot_hygiene_begin(void) { zero_freed = 1; }

void snapshot_hygiene_end(void) {
    zero_freed = 0;
    volatile unsigned char marker = 0;
    uintptr_t sp = (uintptr_t)&marker - 4096; /* keep a margin below the live frames */
    if (sp > STACK_LOW) memset((void *)STACK_LOW, 0, sp - STACK_LOW);
}
