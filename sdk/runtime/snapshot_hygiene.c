/* Keeps garbage out of the build-time snapshot: while the runtime initialises, freed heap
 * blocks are zeroed (the snapshotter zeroes the dead part of the stack). Zero bytes need no data
 * segment, so the module is smaller and each Envoy worker touches fewer pages. At run time this
 * costs nothing. */
#include <malloc.h>
#include <stdlib.h>
#include <string.h>

#include "runtime.h"

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

void snapshot_hygiene_end(void) { zero_freed = 0; }
