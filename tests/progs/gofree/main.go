// SPDX-License-Identifier: MIT
// A cgo Go program that holds several times heca's local budget in byte slices with a
// pattern, drops and allocates slices between rounds and calls debug.FreeOSMemory() each
// round, so that Go's runtime gives memory back with madvise system calls that no C wrapper
// sees. Every live slice is verified each round; the checksum printed at the end must match a
// run without heca.
package main

/*
#include <stdlib.h>
static int twice(int x) { return 2 * x; }
*/
import "C"

import (
	"fmt"
	"os"
	"runtime/debug"
)

const (
	slices = 48
	size   = 4 << 20
	rounds = 6
)

func fill(b []byte, seed uint64) {
	x := seed*0x9e3779b97f4a7c15 + 1
	for i := 0; i < len(b); i += 64 {
		x ^= x << 13
		x ^= x >> 7
		x ^= x << 17
		b[i] = byte(x)
	}
}

func check(b []byte, seed uint64) bool {
	x := seed*0x9e3779b97f4a7c15 + 1
	for i := 0; i < len(b); i += 64 {
		x ^= x << 13
		x ^= x >> 7
		x ^= x << 17
		if b[i] != byte(x) {
			return false
		}
	}
	return true
}

func main() {
	live := make([][]byte, slices)
	seeds := make([]uint64, slices)
	var sum uint64
	for r := 0; r < rounds; r++ {
		for i := 0; i < slices; i++ {
			if live[i] == nil || (i+r)%3 == 0 {
				live[i] = nil
				debug.FreeOSMemory()
				live[i] = make([]byte, size)
				seeds[i] = uint64(r*slices + i + 1)
				fill(live[i], seeds[i])
			}
		}
		debug.FreeOSMemory()
		for i := 0; i < slices; i++ {
			if !check(live[i], seeds[i]) {
				fmt.Printf("round %d slice %d: wrong content\n", r, i)
				os.Exit(1)
			}
			sum += seeds[i] * uint64(live[i][64])
		}
	}
	fmt.Printf("ok %d %d\n", int(C.twice(C.int(slices))), sum)
	// Through libc's exit, so that heca's statistics are written (os.Exit is a raw
	// exit_group: heca frees the sponsors' pages then too, but says nothing).
	C.exit(0)
}
