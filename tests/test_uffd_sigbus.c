// SPDX-License-Identifier: MIT
/*
 * test_uffd_sigbus.c - what this kernel does with a range registered in UFFD_FEATURE_SIGBUS
 * mode: the facts that decide whether a fault may be resolved on the faulting thread.
 *
 * Asserted (Linux 6.18): an access from user space to a missing page, or a write to a
 * write-protected one, raises SIGBUS (BUS_ADRERR, si_addr the address) on the faulting thread
 * and no message reaches the userfaultfd; a handler that installs the page and returns has
 * the access retried. A system call whose buffer lies on such a page gets no signal and does
 * not wait: read(2) and write(2) fail with EFAULT, or come back short after the pages before
 * it. So an unmodified program whose system calls touch the range cannot run in this mode.
 * A kernel that changes any of this fails here; one that blocks instead hangs the read(2)
 * (a pending SIGALRM does not end it) and fails on the CTest timeout.
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <poll.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "harness.h"

#define PG 4096u

static int uffd = -1;
static uint8_t *region, *src;
static size_t region_len;
static volatile sig_atomic_t sigbus_n;
static volatile uintptr_t sigbus_addr;
static volatile int sigbus_code;
static volatile int fix_mode; /* 0: install the page (MISSING), 1: un-protect (WP) */

static void on_sigbus(int sig, siginfo_t *si, void *uc)
{
	uintptr_t a = (uintptr_t)si->si_addr, pg = a & ~(uintptr_t)(PG - 1);
	int saved = errno;

	(void)uc;
	sigbus_n++;
	sigbus_addr = a;
	sigbus_code = si->si_code;
	if (a < (uintptr_t)region || a >= (uintptr_t)region + region_len) {
		struct sigaction dfl = {.sa_handler = SIG_DFL};
		sigaction(sig, &dfl, NULL);
		return;
	}
	if (fix_mode == 0) {
		struct uffdio_copy cp = {.dst = pg, .src = (uint64_t)(uintptr_t)src, .len = PG};
		if (ioctl(uffd, UFFDIO_COPY, &cp) && errno != EEXIST)
			_exit(T_FAIL);
	} else {
		struct uffdio_writeprotect wp = {.range = {.start = pg, .len = PG}, .mode = 0};
		if (ioctl(uffd, UFFDIO_WRITEPROTECT, &wp))
			_exit(T_FAIL);
	}
	errno = saved;
}

static void on_alarm(int sig)
{
	static const char m[] = "FAIL: a fault in SIGBUS mode blocked (alarm)\n";
	(void)sig;
	if (write(2, m, sizeof(m) - 1) < 0)
		_exit(T_FAIL);
	_exit(T_FAIL);
}

/* No fault message may be queued on the userfaultfd: in SIGBUS mode nobody is waiting. */
static void assert_no_message(void)
{
	struct pollfd p = {.fd = uffd, .events = POLLIN};
	ASSERT_EQ(poll(&p, 1, 0), 0);
}

static int page_present(const void *p)
{
	unsigned char v = 0;
	ASSERT_EQ(mincore((void *)((uintptr_t)p & ~(uintptr_t)(PG - 1)), PG, &v), 0);
	return v & 1;
}

int main(void)
{
	struct uffdio_api api = {.api = UFFD_API};
	struct sigaction sa = {.sa_sigaction = on_sigbus, .sa_flags = SA_SIGINFO};
	struct uffdio_register reg;
	int pfd[2], wp;
	uint8_t buf[2 * PG];
	uint64_t feat;
	ssize_t n;

	t_require_uffd();
	uffd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);
	ASSERT_TRUE(uffd >= 0);
	ASSERT_EQ(ioctl(uffd, UFFDIO_API, &api), 0);
	feat = api.features;
	close(uffd);
	if (!(feat & UFFD_FEATURE_SIGBUS)) {
		printf("SKIP: no UFFD_FEATURE_SIGBUS\n");
		return T_SKIP;
	}
	wp = !!(feat & UFFD_FEATURE_PAGEFAULT_FLAG_WP);

	uffd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);
	ASSERT_TRUE(uffd >= 0);
	api = (struct uffdio_api){.api = UFFD_API,
				  .features = UFFD_FEATURE_SIGBUS |
					      (wp ? UFFD_FEATURE_PAGEFAULT_FLAG_WP : 0)};
	ASSERT_EQ(ioctl(uffd, UFFDIO_API, &api), 0);
	region_len = 16 * PG;
	region = mmap(NULL, region_len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	src = mmap(NULL, PG, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	ASSERT_TRUE(region != MAP_FAILED && src != MAP_FAILED);
	memset(src, 0x5a, PG);
	reg = (struct uffdio_register){
	    .range = {.start = (uint64_t)(uintptr_t)region, .len = region_len},
	    .mode = UFFDIO_REGISTER_MODE_MISSING | (wp ? UFFDIO_REGISTER_MODE_WP : 0)};
	ASSERT_EQ(ioctl(uffd, UFFDIO_REGISTER, &reg), 0);
	sigemptyset(&sa.sa_mask);
	ASSERT_EQ(sigaction(SIGBUS, &sa, NULL), 0);
	signal(SIGALRM, on_alarm);
	alarm(20);
	ASSERT_EQ(pipe(pfd), 0);

	/* (a) read(2) into a missing page: EFAULT, no signal, no message, page still missing. */
	memset(buf, 0xc3, PG);
	ASSERT_EQ(write(pfd[1], buf, PG), PG);
	errno = 0;
	n = read(pfd[0], region, PG);
	ASSERT_EQ(n, -1);
	ASSERT_EQ(errno, EFAULT);
	ASSERT_EQ(sigbus_n, 0);
	assert_no_message();
	ASSERT_EQ(page_present(region), 0);
	/* The data stayed in the pipe: a program retrying would loop, not lose it. */
	ASSERT_EQ(read(pfd[0], buf, PG), PG);
	ASSERT_EQ(buf[0], 0xc3);

	/* (b) write(2) from a missing page: EFAULT likewise. */
	errno = 0;
	n = write(pfd[1], region + PG, PG);
	ASSERT_EQ(n, -1);
	ASSERT_EQ(errno, EFAULT);
	ASSERT_EQ(sigbus_n, 0);
	assert_no_message();

	/* (c) read(2) across a present page and a missing one: short, the first page only. */
	{
		struct uffdio_copy cp = {.dst = (uint64_t)(uintptr_t)(region + 2 * PG),
					 .src = (uint64_t)(uintptr_t)src,
					 .len = PG};
		ASSERT_EQ(ioctl(uffd, UFFDIO_COPY, &cp), 0);
		memset(buf, 0x3c, sizeof(buf));
		ASSERT_EQ(write(pfd[1], buf, sizeof(buf)), sizeof(buf));
		n = read(pfd[0], region + 2 * PG, 2 * PG);
		ASSERT_EQ(n, PG);
		ASSERT_EQ(region[2 * PG], 0x3c);
		ASSERT_EQ(page_present(region + 3 * PG), 0);
		ASSERT_EQ(sigbus_n, 0);
		ASSERT_EQ(read(pfd[0], buf, sizeof(buf)), PG);
	}

	/* (d) an access from user space: SIGBUS on this thread, the handler installs the page,
	 * the access is retried and reads it. */
	fix_mode = 0;
	ASSERT_EQ(*(volatile uint8_t *)(region + 4 * PG + 8), 0x5a);
	ASSERT_EQ(sigbus_n, 1);
	ASSERT_EQ(sigbus_code, BUS_ADRERR);
	ASSERT_EQ(sigbus_addr, (uintptr_t)(region + 4 * PG + 8));
	assert_no_message();
	/* A write to a missing page likewise. */
	*(volatile uint8_t *)(region + 5 * PG) = 0x11;
	ASSERT_EQ(sigbus_n, 2);
	ASSERT_EQ(region[5 * PG], 0x11);
	ASSERT_EQ(region[5 * PG + 1], 0x5a);

	if (!wp) {
		printf("write-protect cases skipped: no UFFD_FEATURE_PAGEFAULT_FLAG_WP\n");
		printf("verified: OK\n");
		return T_PASS;
	}

	/* (e) a write to a write-protected page: SIGBUS too, not a message; the handler takes
	 * the protection off and the write is retried and lands. */
	{
		struct uffdio_copy cp = {.dst = (uint64_t)(uintptr_t)(region + 6 * PG),
					 .src = (uint64_t)(uintptr_t)src,
					 .len = 2 * PG,
					 .mode = UFFDIO_COPY_MODE_WP};
		uint8_t *two =
		    mmap(NULL, 2 * PG, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		ASSERT_TRUE(two != MAP_FAILED);
		memset(two, 0x5a, 2 * PG);
		cp.src = (uint64_t)(uintptr_t)two;
		ASSERT_EQ(ioctl(uffd, UFFDIO_COPY, &cp), 0);
		ASSERT_EQ(cp.copy, 2 * PG);
		munmap(two, 2 * PG);
	}
	ASSERT_EQ(region[6 * PG], 0x5a); /* a read of a protected page is no fault */
	ASSERT_EQ(sigbus_n, 2);
	fix_mode = 1;
	*(volatile uint8_t *)(region + 6 * PG + 16) = 0x22;
	ASSERT_EQ(sigbus_n, 3);
	ASSERT_EQ(sigbus_code, BUS_ADRERR);
	ASSERT_EQ(sigbus_addr, (uintptr_t)(region + 6 * PG + 16));
	ASSERT_EQ(region[6 * PG + 16], 0x22);
	assert_no_message();

	/* (f) read(2) into a write-protected page: EFAULT, the page unchanged. */
	memset(buf, 0x77, PG);
	ASSERT_EQ(write(pfd[1], buf, PG), PG);
	errno = 0;
	n = read(pfd[0], region + 7 * PG, PG);
	ASSERT_EQ(n, -1);
	ASSERT_EQ(errno, EFAULT);
	ASSERT_EQ(sigbus_n, 3);
	ASSERT_EQ(region[7 * PG], 0x5a);
	assert_no_message();

	alarm(0);
	printf("verified: OK\n");
	return T_PASS;
}
