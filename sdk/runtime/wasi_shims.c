/* Link-time stand-ins for symbols the Envoy host cannot or must not provide. */
#include <errno.h>
#include <stdint.h>

/* Envoy 1.40 declares these two WASI imports with the wrong parameter count, so a module that
 * imports them fails to load. Defining the import symbols here removes the imports. */
int32_t __imported_wasi_snapshot_preview1_path_link(int32_t a, int32_t b, int32_t c, int32_t d, int32_t e,
                                                    int32_t f, int32_t g) {
    return 52; /* __WASI_ERRNO_NOSYS */
}
int32_t __imported_wasi_snapshot_preview1_path_symlink(int32_t a, int32_t b, int32_t c, int32_t d, int32_t e) {
    return 52;
}

/* CPython references the dynamic loader; there is none in a wasm sandbox. */
void *dlopen(const char *file, int mode) { return 0; }
void *dlsym(void *handle, const char *name) { return 0; }
int dlclose(void *handle) { return 0; }
char *dlerror(void) { return "dynamic loading is not supported"; }
