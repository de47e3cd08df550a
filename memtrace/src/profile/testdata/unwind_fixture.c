/* The unwinder's fixture (memtrace/src/profile/unwind/tests.rs): a call chain
 * main → chain_a → chain_b → chain_c → chain_d → spin_here, each with its own stack frame and
 * no tail calls, spinning in spin_here until killed (the test waits until `spins` moves, so the
 * thread is in the loop, not still in printf). Built without frame pointers (-O2
 * -fomit-frame-pointer): only .eh_frame can unwind it.
 *
 * Or built in two parts, for framehop's frame-pointer fallback: -DSPIN_PART (spin_here, with
 * .eh_frame) and -DCHAIN_PART (its callers, with frame pointers and no unwind tables). */
#include <stdio.h>

#if !defined(SPIN_PART) && !defined(CHAIN_PART)
#define SPIN_PART
#define CHAIN_PART
#endif

int spin_here(int depth);

#ifdef SPIN_PART
volatile int stop;
volatile unsigned long spins;

__attribute__((noinline)) int spin_here(int depth)
{
    volatile char pad[64];
    pad[depth & 63] = (char)depth;
    printf("ready %p\n", (void *)&spins); /* the test waits for spins to move */
    fflush(stdout);
    while (!stop)
        spins++;
    return pad[depth & 63];
}
#endif

#ifdef CHAIN_PART
__attribute__((noinline)) int chain_d(int depth)
{
    volatile char pad[24];
    pad[0] = (char)depth;
    int result = spin_here(depth + 1);
    return result + pad[0];
}

__attribute__((noinline)) int chain_c(int depth)
{
    volatile char pad[40];
    pad[0] = (char)depth;
    int result = chain_d(depth + 1);
    return result + pad[0];
}

__attribute__((noinline)) int chain_b(int depth)
{
    volatile long pad[3];
    pad[0] = depth;
    int result = chain_c(depth + 1);
    return result + (int)pad[0];
}

__attribute__((noinline)) int chain_a(int depth)
{
    volatile char pad[8];
    pad[0] = (char)depth;
    int result = chain_b(depth + 1);
    return result + pad[0];
}

int main(void)
{
    return chain_a(1) == 12345;
}
#endif
