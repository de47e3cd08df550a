/* touch-sites: known first-touch and growth sites for `memtrace profile` (tests/tests/privileged/
 * profile_sites.rs builds it with gcc, with and without frame pointers).
 *
 * Waits for a line on stdin (so the profiler can attach first), then:
 *   - touch_big():   maps 64 MiB (mmap, anonymous) and writes one byte per page;
 *   - touch_small(): maps 16 MiB and writes one byte per page;
 *   - grow_brk():    moves the break up by 4 MiB with sbrk and touches nothing;
 *   - read_zero():   maps 4 MiB and fills it with one read(2) of /dev/zero: the faults are
 *                    taken in the kernel, copying to user memory;
 * every mapping with transparent huge pages off, so each page is one fault. Then prints "done"
 * and waits for stdin to close. Each site is its own noinline function, called from main. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define MIB (1024UL * 1024UL)

static volatile char sink;

__attribute__((noinline)) static char *map_no_thp(size_t len)
{
	char *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED) {
		perror("mmap");
		exit(1);
	}
	madvise(p, len, MADV_NOHUGEPAGE);
	return p;
}

/* One write per page: expanded in each site, so the faulting instruction is in the site itself
 * (the exact leaf needs no frame pointer to be right). */
#define TOUCH_PAGES(p, len)                                                    \
	do {                                                                   \
		long page_ = sysconf(_SC_PAGESIZE);                            \
		for (size_t off_ = 0; off_ < (len); off_ += (size_t)page_)     \
			((volatile char *)(p))[off_] = 1;                      \
	} while (0)

/* The first-touch sites: 64 MiB and 16 MiB, 4:1. */
__attribute__((noinline)) void touch_big(void)
{
	char *p = map_no_thp(64 * MIB);
	TOUCH_PAGES(p, 64 * MIB);
}

__attribute__((noinline)) void touch_small(void)
{
	char *p = map_no_thp(16 * MIB);
	TOUCH_PAGES(p, 16 * MIB);
}

/* An mmap site of its own: 8 MiB mapped, never touched. */
__attribute__((noinline)) void map_only(void)
{
	char *p = mmap(NULL, 8 * MIB, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED) {
		perror("mmap");
		exit(1);
	}
	sink = (char)(unsigned long)p;
}

/* A brk site: the break moves up by 4 MiB. */
__attribute__((noinline)) void grow_brk(void)
{
	if (sbrk(4 * MIB) == (void *)-1) {
		perror("sbrk");
		exit(1);
	}
}

/* Kernel-mode first touches: 4 MiB filled by read(2). */
__attribute__((noinline)) void read_zero(void)
{
	char *p = map_no_thp(4 * MIB);
	int fd = open("/dev/zero", O_RDONLY);
	if (fd < 0 || read(fd, p, 4 * MIB) != (ssize_t)(4 * MIB)) {
		perror("read /dev/zero");
		exit(1);
	}
	close(fd);
}

int main(void)
{
	char line[64];
	setvbuf(stdout, NULL, _IOLBF, 0);
	printf("ready %d\n", getpid());
	if (!fgets(line, sizeof line, stdin))
		return 0;
	touch_big();
	touch_small();
	map_only();
	grow_brk();
	read_zero();
	printf("done\n");
	while (fgets(line, sizeof line, stdin))
		;
	return 0;
}
