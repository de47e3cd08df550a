/*
 * alloc-sites: allocation sites of known sizes for `memtrace profile --alloc`'s tests
 * (tests/tests/privileged/profile_alloc.rs). Built at test time three ways: with frame pointers,
 * without (-fomit-frame-pointer), and stripped.
 *
 * Protocol: prints "ready" and waits for a line on stdin (the profiler attaches meanwhile), runs
 * every site once, prints "done" and waits for a second line before exiting (the profiler reads
 * what is still outstanding meanwhile).
 *
 * Every site is a `noinline` function calling the allocator directly (so it is the leaf), called
 * at a known depth: main -> run_sites -> <site>. Sizes are distinct per site so that a stripped
 * build's sites are told apart by their values. The expected figures are in EXPECTED below and in
 * the test; keep them together.
 *
 * Build: gcc -O1 -g -fno-builtin -fno-optimize-sibling-calls [-fno-omit-frame-pointer |
 *        -fomit-frame-pointer] -pthread alloc-sites.c -o alloc-sites -ldl
 *        gcc -O1 -g -fno-builtin -shared -fPIC alloc-lib.c -o libdlsites.so
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <malloc.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define NOINLINE __attribute__((noinline))

/* Where pointers go, so no call is optimised away or into a tail call. */
static void *volatile sink[4096];
static volatile int sink_next;

static NOINLINE void keep(void *p) { sink[sink_next++ % 4096] = p; }

/* 16 x 4096 = 65536 bytes, all leaked. */
NOINLINE void leak_site_a(void) {
    for (int i = 0; i < 16; i++) {
        void *p = malloc(4096);
        keep(p);
    }
}

/* calloc(100, 10) x 8 = 8000 bytes, all leaked. */
NOINLINE void leak_site_b(void) {
    for (int i = 0; i < 8; i++) {
        void *p = calloc(100, 10);
        keep(p);
    }
}

/* 1000 x 256 = 256000 bytes, none outstanding. */
NOINLINE void temp_site(void) {
    for (int i = 0; i < 1000; i++) {
        char *volatile p = malloc(256);
        p[0] = 1;
        free(p);
    }
}

/* realloc(NULL, 24) then doubling to 3072: 24+48+...+3072 = 6120 bytes allocated, the last one
 * (3072) leaked. */
NOINLINE void realloc_chain(void) {
    void *p = NULL;
    for (size_t size = 24; size <= 3072; size *= 2) {
        p = realloc(p, size);
        keep(p);
    }
}

/* posix_memalign 4 x 1000 leaked. */
NOINLINE void posix_memalign_site(void) {
    for (int i = 0; i < 4; i++) {
        void *p = NULL;
        if (posix_memalign(&p, 64, 1000) == 0)
            keep(p);
    }
}

/* aligned_alloc 4 x 1088, freed. */
NOINLINE void aligned_alloc_site(void) {
    for (int i = 0; i < 4; i++) {
        void *volatile p = aligned_alloc(64, 1088);
        free(p);
    }
}

/* memalign 4 x 2000 leaked. */
NOINLINE void memalign_site(void) {
    for (int i = 0; i < 4; i++) {
        void *p = memalign(4096, 2000);
        keep(p);
    }
}

/* valloc 4 x 3000, freed. */
NOINLINE void valloc_site(void) {
    for (int i = 0; i < 4; i++) {
        void *volatile p = valloc(3000);
        free(p);
    }
}

/* 2 x 256 KiB (glibc's mmap path), leaked. */
NOINLINE void big_site(void) {
    for (int i = 0; i < 2; i++) {
        void *p = malloc(256 * 1024);
        keep(p);
    }
}

/* Each of 4 threads: 5000 x 160 freed, 1 x 512 leaked. */
NOINLINE void thread_site(void) {
    for (int i = 0; i < 5000; i++) {
        char *volatile p = malloc(160);
        p[0] = 1;
        free(p);
    }
    keep(malloc(512));
}

static void *thread_main(void *arg) {
    (void)arg;
    thread_site();
    return NULL;
}

NOINLINE void threads(void) {
    pthread_t t[4];
    for (int i = 0; i < 4; i++)
        pthread_create(&t[i], NULL, thread_main, NULL);
    for (int i = 0; i < 4; i++)
        pthread_join(t[i], NULL);
}

/* A child's allocations are not the profiled process's. */
NOINLINE void fork_child_site(void) {
    for (int i = 0; i < 100; i++)
        keep(malloc(7777));
}

NOINLINE void fork_and_exec(void) {
    pid_t child = fork();
    if (child == 0) {
        fork_child_site();
        _exit(0);
    }
    waitpid(child, NULL, 0);
    child = fork();
    if (child == 0) {
        execl("/bin/true", "true", (char *)NULL);
        _exit(127);
    }
    waitpid(child, NULL, 0);
}

/* The dlopen'd library's site: 10 x 5000 leaked (alloc-lib.c). */
NOINLINE void dlopen_site(const char *lib) {
    void *handle = dlopen(lib, RTLD_NOW);
    if (!handle) {
        fprintf(stderr, "dlopen %s: %s\n", lib, dlerror());
        exit(2);
    }
    void (*lib_alloc_site)(void) = (void (*)(void))dlsym(handle, "lib_alloc_site");
    lib_alloc_site();
}

NOINLINE void run_sites(const char *lib) {
    /* The dynamic loader's and stdio's own allocations happen before the sites. */
    dlopen_site(lib);
    leak_site_a();
    leak_site_b();
    temp_site();
    realloc_chain();
    posix_memalign_site();
    aligned_alloc_site();
    memalign_site();
    valloc_site();
    big_site();
    threads();
    fork_and_exec();
}

/* Also a throughput loop for the malloc/free benchmark: `alloc-sites --loop N --threads T`
 * prints ns per malloc/free pair. */
static long loop_iterations;

static void *loop_main(void *arg) {
    (void)arg;
    for (long i = 0; i < loop_iterations; i++) {
        char *volatile p = malloc(64);
        p[0] = 1;
        free(p);
    }
    return NULL;
}

static int run_loop(long iterations, int nthreads) {
    struct timespec a, b;
    pthread_t t[64];
    loop_iterations = iterations;
    if (nthreads < 1 || nthreads > 64)
        return 2;
    clock_gettime(CLOCK_MONOTONIC, &a);
    for (int i = 0; i < nthreads; i++)
        pthread_create(&t[i], NULL, loop_main, NULL);
    for (int i = 0; i < nthreads; i++)
        pthread_join(t[i], NULL);
    clock_gettime(CLOCK_MONOTONIC, &b);
    double ns = (b.tv_sec - a.tv_sec) * 1e9 + (b.tv_nsec - a.tv_nsec);
    printf("%.2f\n", ns / (double)iterations);
    return 0;
}

/* `alloc-sites --paced N USEC`: N malloc(1000)/free pairs at paced_site, one every USEC µs: an
 * allocation rate the probes' traps hardly change (a trap is microseconds, the pause is a
 * millisecond), for --duty-cycle's test. Same protocol as the sites: "ready", a line, "done", a
 * line. */
NOINLINE void paced_site(long n, long usec) {
    for (long i = 0; i < n; i++) {
        char *volatile p = malloc(1000);
        p[0] = 1;
        free(p);
        usleep(usec);
    }
}

int main(int argc, char **argv) {
    char line[64];
    if (argc >= 4 && strcmp(argv[1], "--paced") == 0) {
        printf("ready\n");
        fflush(stdout);
        if (!fgets(line, sizeof line, stdin))
            return 1;
        paced_site(atol(argv[2]), atol(argv[3]));
        printf("done\n");
        fflush(stdout);
        /* Alive until told, so that the profiler can still read its mappings. */
        fgets(line, sizeof line, stdin);
        return 0;
    }
    if (argc >= 4 && strcmp(argv[1], "--loop") == 0) {
        /* --loop N THREADS: wait for a line (the tracer attaches), then time the loop. */
        printf("ready\n");
        fflush(stdout);
        if (!fgets(line, sizeof line, stdin))
            return 1;
        return run_loop(atol(argv[2]), atoi(argv[3]));
    }
    if (argc < 2) {
        fprintf(stderr, "usage: alloc-sites LIB.so | --loop N THREADS | --paced N USEC\n");
        return 2;
    }
    printf("ready\n");
    fflush(stdout);
    if (!fgets(line, sizeof line, stdin))
        return 1;
    run_sites(argv[1]);
    printf("done\n");
    fflush(stdout);
    if (!fgets(line, sizeof line, stdin))
        return 0;
    return 0;
}
