// SPDX-License-Identifier: MIT
/*
 * guest_init.c - the whole userland of the small Linux guest that tests/test_qemu.sh boots in
 * QEMU: linked statically, it is the initramfs's /init. It fills most of the guest's RAM with
 * a pattern that depends on each word's place and a seed, reads all of it back, prints one
 * line on the serial console and powers the guest off.
 * Kernel command line (the kernel hands unknown NAME=VALUE words to init as environment):
 *   fill_pct=N    percent of the guest's RAM to fill (default 75; capped by what is free)
 *   seed=N        the seed written (default 1)
 *   check_seed=N  the seed expected when reading back (default: seed; another value must fail)
 * Prints "guest: verified N MiB" or "guest: FAILED at ..." with the first bad word.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/reboot.h>
#include <sys/stat.h>
#include <sys/sysinfo.h>
#include <time.h>
#include <unistd.h>

#define MIB (1024ul * 1024)

static void console(void)
{
	int fd;

	mkdir("/dev", 0755);
	mount("devtmpfs", "/dev", "devtmpfs", 0, NULL);
	fd = open("/dev/ttyS0", O_RDWR | O_NOCTTY);
	if (fd < 0)
		fd = open("/dev/console", O_RDWR | O_NOCTTY);
	if (fd >= 0) {
		dup2(fd, 1);
		dup2(fd, 2);
	}
	setvbuf(stdout, NULL, _IOLBF, 0);
}

static unsigned long env_num(const char *name, unsigned long dflt)
{
	const char *v = getenv(name);

	return v && *v ? strtoul(v, NULL, 0) : dflt;
}

/* What MemAvailable says can be taken without the guest's OOM killer, in bytes. */
static unsigned long available(void)
{
	unsigned long kb = 0;
	char line[128];
	FILE *f;

	mkdir("/proc", 0555);
	mount("proc", "/proc", "proc", 0, NULL);
	f = fopen("/proc/meminfo", "r");
	if (!f)
		return 0;
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, "MemAvailable: %lu kB", &kb) == 1)
			break;
	fclose(f);
	return kb * 1024;
}

static uint64_t pat(uint64_t seed, uint64_t word)
{
	uint64_t x = (word + 1) * 0x9e3779b97f4a7c15ull ^ seed * 0xbf58476d1ce4e5b9ull;

	return x ^ (x >> 31);
}

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void off(void)
{
	sync();
	reboot(RB_POWER_OFF);
	reboot(RB_AUTOBOOT); /* QEMU's -no-reboot turns this into an exit */
	for (;;)
		pause();
}

int main(void)
{
	unsigned long pct = env_num("fill_pct", 75), seed = env_num("seed", 1);
	unsigned long check = env_num("check_seed", seed), size, avail, n, i;
	struct sysinfo si;
	uint64_t *mem;
	double t0, t1;

	console();
	sysinfo(&si);
	size = (unsigned long)si.totalram * si.mem_unit / 100 * pct;
	avail = available();
	if (avail > 48 * MIB && size > avail - 48 * MIB)
		size = avail - 48 * MIB;
	size &= ~(MIB - 1);
	mem = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (mem == MAP_FAILED) {
		printf("guest: FAILED to map %lu MiB\n", size / MIB);
		off();
	}
	printf("guest: RAM %lu MiB, filling %lu MiB\n",
	       (unsigned long)si.totalram * si.mem_unit / MIB, size / MIB);
	n = size / sizeof(*mem);
	t0 = now();
	for (i = 0; i < n; i++)
		mem[i] = pat(seed, i);
	t1 = now();
	for (i = 0; i < n; i++)
		if (mem[i] != pat(check, i)) {
			printf("guest: FAILED at offset 0x%lx (page %lu): %#llx, expected %#llx\n",
			       i * sizeof(*mem), i * sizeof(*mem) / 4096,
			       (unsigned long long)mem[i], (unsigned long long)pat(check, i));
			off();
		}
	printf("guest: verified %lu MiB (fill %.1f s, check %.1f s)\n", size / MIB, t1 - t0,
	       now() - t1);
	off();
	return 0;
}
