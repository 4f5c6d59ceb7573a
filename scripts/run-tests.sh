#!/bin/bash
# SPDX-License-Identifier: MIT
# What `make test` runs: the -Werror build with every test, the tests again under ASan+UBSan and
# TSan, then each fuzzer for a bounded time. Every stage runs even if an earlier one failed.
#
# Knobs: HECA_TEST_STAGES  stages to run, in order (default "plain asan tsan fuzz")
#        HECA_FUZZ_SECONDS time per fuzzer (default 60)
#        HECA_CTEST_JOBS   parallel tests per stage (default 2); JOBS: parallel compiles
#        HECA_BUILD_DIR    build directory (default build; the others get -asan, -tsan, -fuzz)
# Counting: each ctest test counts once as passed, skipped (exit 77: a kernel feature or a
# privilege this machine lacks) or failed, each fuzzer is one test, and a stage whose configure
# or build fails, or that runs no test, counts one failure, so a broken build can never read as
# "0 failed". Each stage and the end name the skipped tests, with the reason each gave; the
# last line is "make test: N passed, N skipped, N failed".
set -uo pipefail

cd "$(dirname "$0")/.." || exit 1
root=$PWD

stages=${HECA_TEST_STAGES:-plain asan tsan fuzz}
fuzz_seconds=${HECA_FUZZ_SECONDS:-60}
ctest_jobs=${HECA_CTEST_JOBS:-2}
jobs=${JOBS:-$(nproc)}
b=${HECA_BUILD_DIR:-build}

# Stop at the first report so it is the one printed; user-set options still win (last wins).
export ASAN_OPTIONS="halt_on_error=1:abort_on_error=0${ASAN_OPTIONS:+:$ASAN_OPTIONS}"
export UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1${UBSAN_OPTIONS:+:$UBSAN_OPTIONS}"
export TSAN_OPTIONS="halt_on_error=1:second_deadlock_stack=1${TSAN_OPTIONS:+:$TSAN_OPTIONS}"

passed=0
failed=0
skipped=0
failures=()
skips=()

header() {
	echo
	echo "==== make test: stage $1: $2 ===="
}

fail() {
	failed=$((failed + 1))
	failures+=("$1")
	echo "---- FAILED: $1"
}

# configure DIR ARGS...: cmake configure; returns non-zero (and counts a failure) if it fails.
configure() {
	local dir=$1 log
	shift
	log=$(mktemp)
	if ! cmake -S "$root" -B "$dir" "$@" >"$log" 2>&1; then
		cat "$log"
		rm -f "$log"
		fail "$dir: cmake configure"
		return 1
	fi
	rm -f "$log"
}

# build DIR [TARGET...]: build, keeping going past errors so that every test that can be built
# still runs; a failed build counts one failure.
build() {
	local dir=$1 keep=()
	shift
	local targets=()
	for t in "$@"; do targets+=(--target "$t"); done
	[ -f "$dir/Makefile" ] && keep=(-- -k)
	if ! cmake --build "$dir" -j "$jobs" "${targets[@]}" "${keep[@]}"; then
		fail "$dir: build${*:+ of $*}"
		return 1
	fi
}

# skip_reason DIR TEST: what a skipped test said about it, from ctest's log of the run.
skip_reason() {
	awk -v start="\"$2\" start time:" '
		index($0, start) == 1 { on = 1; next }
		on && /^<end of output>$/ { exit }
		on && /^(Output:|-+)$/ { next }
		on && /[Ss][Kk][Ii][Pp]/ && n < 3 { why[n++] = $0 }
		on && NF { last = $0 }
		END {
			if (!n && last != "") why[n++] = last
			for (i = 0; i < n; i++) print why[i]
		}' "$1/Testing/Temporary/LastTest.log" 2>/dev/null
}

# run_ctest DIR [CTEST ARGS...]: run tests, add their counts to the totals.
run_ctest() {
	local dir=$1 log rc p=0 f=0 s=0 total summary n names=()
	shift
	log=$(mktemp)
	(cd "$dir" && ${wrap:-} ctest --output-on-failure -j "$ctest_jobs" "$@") 2>&1 | tee "$log"
	rc=${PIPESTATUS[0]}
	summary=$(grep -E '[0-9]+% tests passed, [0-9]+ tests? failed out of [0-9]+' "$log" | tail -1)
	if [ -n "$summary" ]; then
		f=$(sed -E 's/.* ([0-9]+) tests? failed out of.*/\1/' <<<"$summary")
		total=$(sed -E 's/.* failed out of ([0-9]+).*/\1/' <<<"$summary")
		mapfile -t names < <(sed -nE 's/^[[:space:]]*[0-9]+ - (.*) \(Skipped\)$/\1/p' "$log")
		s=${#names[@]}
		p=$((total - f - s))
	fi
	rm -f "$log"
	passed=$((passed + p))
	skipped=$((skipped + s))
	if [ -z "$summary" ]; then
		fail "$dir: no test ran (ctest exited $rc)"
	elif [ "$f" -gt 0 ]; then
		failed=$((failed + f))
		failures+=("$dir: $f test(s)")
	elif [ "$rc" -ne 0 ]; then
		fail "$dir: ctest exited $rc"
	fi
	echo "---- $dir: $p passed, $s skipped, $f failed"
	[ "$s" -gt 0 ] && skips+=("$dir: ${names[*]}")
	for n in "${names[@]}"; do
		echo "  skipped: $n"
		skip_reason "$dir" "$n" | sed 's/^/    /'
	done
}

stage_plain() {
	header plain "$b/ with -Werror, every test"
	configure "$b" -DHECA_WERROR=ON -DHECA_SANITIZE= -DHECA_FUZZ=OFF || return
	build "$b"
	run_ctest "$b"
}

stage_asan() {
	header asan "$b-asan/ with AddressSanitizer+UBSan, unit, stress and integration tests"
	configure "$b-asan" -DHECA_SANITIZE=address -DHECA_WERROR=ON -DHECA_FUZZ=OFF || return
	build "$b-asan"
	run_ctest "$b-asan" -L 'unit|stress|integration'
}

stage_tsan() {
	local wrap=
	header tsan "$b-tsan/ with ThreadSanitizer, unit and stress tests"
	configure "$b-tsan" -DHECA_SANITIZE=thread -DHECA_WERROR=ON -DHECA_FUZZ=OFF || return
	build "$b-tsan"
	# TSan's fixed memory layout breaks with more than 28 bits of mmap randomness (newer
	# kernels' default): run without ASLR there rather than fail for the wrong reason.
	if [ "$(cat /proc/sys/vm/mmap_rnd_bits 2>/dev/null || echo 28)" -gt 28 ] &&
		setarch "$(uname -m)" -R true 2>/dev/null; then
		echo "tsan: vm.mmap_rnd_bits > 28, running without ASLR"
		wrap="setarch $(uname -m) -R"
	fi
	run_ctest "$b-tsan" -L 'unit|stress'
}

# run_fuzzer NAME: fuzz for $fuzz_seconds from a scratch copy of the seed corpus, so the checked-in
# corpus never grows; any crash, leak, timeout or sanitizer report fails it.
run_fuzzer() {
	local name=$1 seeds=$root/fuzz/corpus/$1 scratch rc
	[ -d "$seeds" ] || seeds=$root/fuzz/corpus/wire # the sponsor speaks the same frames
	scratch=$(mktemp -d)
	mkdir -p "$scratch/corpus"
	cp "$seeds"/* "$scratch/corpus/" 2>/dev/null
	echo "fuzz: $name for ${fuzz_seconds}s from $(ls "$scratch/corpus" | wc -l) seeds"
	(cd "$scratch" && "$root/$b-fuzz/$name" -max_total_time="$fuzz_seconds" \
		-max_len=16384 -timeout=25 -print_final_stats=1 \
		-artifact_prefix="$scratch/" corpus) >"$root/$b-fuzz/$name.log" 2>&1
	rc=$?
	if [ "$rc" -eq 0 ]; then
		passed=$((passed + 1))
		grep -E '^(#[0-9]+.*DONE|stat::number_of_executed_units|Done )' \
			"$root/$b-fuzz/$name.log" | tail -2
		echo "---- $name: passed"
	else
		tail -60 "$root/$b-fuzz/$name.log"
		mkdir -p "$root/$b-fuzz/artifacts"
		cp "$scratch"/crash-* "$scratch"/leak-* "$scratch"/timeout-* "$scratch"/oom-* \
			"$root/$b-fuzz/artifacts/" 2>/dev/null
		echo "fuzz: log in $b-fuzz/$name.log, inputs in $b-fuzz/artifacts/"
		fail "$name: exit $rc"
	fi
	rm -rf "$scratch"
}

stage_fuzz() {
	local fuzzers=(fuzz_wire)
	header fuzz "$b-fuzz/ with clang and libFuzzer, each fuzzer for ${fuzz_seconds}s"
	[ -f fuzz/fuzz_sponsor.c ] && fuzzers+=(fuzz_sponsor)
	# CC only matters when the directory is first configured; fuzz.cmake refuses non-clang.
	CC=clang configure "$b-fuzz" -DHECA_FUZZ=ON -DHECA_SANITIZE= -DHECA_WERROR=OFF || return
	for f in "${fuzzers[@]}"; do
		build "$b-fuzz" "$f" && run_fuzzer "$f"
	done
}

start=$SECONDS
for st in $stages; do
	case $st in
	plain | asan | tsan | fuzz) "stage_$st" ;;
	*) fail "unknown stage '$st' in HECA_TEST_STAGES (plain asan tsan fuzz)" ;;
	esac
done

echo
echo "==== make test: $((SECONDS - start))s, stages: $stages"
for sk in "${skips[@]}"; do
	echo "  skipped: $sk"
done
for f in "${failures[@]}"; do
	echo "  failed: $f"
done
echo "make test: $passed passed, $skipped skipped, $failed failed"
[ "$failed" -eq 0 ]
