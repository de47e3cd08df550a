/* The symbolizer's fixture (memtrace/src/profile/symbolize/tests.rs): prints the addresses of
 * its own code that a profiler would capture, then waits until stdin closes.
 * Line numbers are asserted by the test: keep the marked lines where they are. */
#include <stdio.h>
#include <unistd.h>

__attribute__((noinline)) void *fixture_callee(void)
{
    return __builtin_return_address(0);
}

__attribute__((noinline)) void *fixture_caller(void)
{
    void *ret = fixture_callee(); /* line 14: the call the return address points after */
    __asm__ volatile("" ::: "memory");
    return ret;
}

static inline __attribute__((always_inline)) void *fixture_inlined(void)
{
    return fixture_callee(); /* line 21: the call inside the inlined function */
}

__attribute__((noinline)) void *fixture_outer(void)
{
    void *ret = fixture_inlined(); /* line 26: where fixture_inlined is inlined */
    __asm__ volatile("" ::: "memory");
    return ret;
}

int main(void)
{
    void *from_caller = fixture_caller();
    void *from_outer = fixture_outer();
    printf("%p %p %p\n", (void *)fixture_callee, from_caller, from_outer);
    fflush(stdout);
    char byte;
    while (read(0, &byte, 1) > 0) {
    }
    return 0;
}
