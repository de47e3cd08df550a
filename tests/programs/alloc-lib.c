/* The dlopen'd library of alloc-sites: 10 x 5000 bytes leaked from lib_alloc_site. */
#include <stdlib.h>

static void *volatile lib_sink[16];

__attribute__((noinline)) void lib_alloc_site(void) {
    for (int i = 0; i < 10; i++)
        lib_sink[i] = malloc(5000);
}
