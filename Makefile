# SPDX-License-Identifier: MIT
# Thin wrapper over CMake: `make demo` and `make test` work on a fresh Debian 12 machine as root.

BUILD ?= build
JOBS ?= $(shell nproc)
CMAKE_FLAGS ?=

.PHONY: all deps build demo test test-fast test-asan test-tsan fuzz clean

all: build

deps:
	@scripts/install-deps.sh

build: deps
	cmake -S . -B $(BUILD) $(CMAKE_FLAGS) >/dev/null
	cmake --build $(BUILD) -j $(JOBS)

demo: build
	$(BUILD)/heca demo

# Everything CI runs: the plain build with -Werror and every test, then the unit and stress
# tests under AddressSanitizer+UBSan and ThreadSanitizer, then the fuzzers for a bounded time.
test: deps
	scripts/run-tests.sh

test-fast: build
	cd $(BUILD) && ctest --output-on-failure -j 2

clean:
	rm -rf build build-*
