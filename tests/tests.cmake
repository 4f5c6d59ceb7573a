# SPDX-License-Identifier: MIT
# Test registration: one executable per behaviour area, with labels and timeouts.
# Labels: unit (no daemon), integration (real hecad), stress (concurrency, bounded time).
# Exit codes: 0 pass, 1 fail, 77 skip (a kernel feature is missing).

function(heca_test name)
  cmake_parse_arguments(T "" "TIMEOUT" "LABELS;LIBS;SOURCES" ${ARGN})
  if(NOT T_SOURCES)
    set(T_SOURCES tests/${name}.c)
  endif()
  foreach(s ${T_SOURCES})
    if(NOT s MATCHES "^\\$<" AND NOT EXISTS ${CMAKE_SOURCE_DIR}/${s})
      return()
    endif()
  endforeach()
  add_executable(${name} ${T_SOURCES} tests/harness.c)
  target_include_directories(${name} PRIVATE include src daemon tests)
  target_link_libraries(${name} PRIVATE ${T_LIBS} Threads::Threads)
  add_dependencies(${name} hecad)
  add_test(NAME ${name} COMMAND ${name})
  if(NOT T_TIMEOUT)
    set(T_TIMEOUT 120)
  endif()
  set_tests_properties(${name} PROPERTIES LABELS "${T_LABELS}" TIMEOUT ${T_TIMEOUT}
    SKIP_RETURN_CODE 77
    ENVIRONMENT "HECAD=$<TARGET_FILE:hecad>;HECA_CLI=$<TARGET_FILE:heca_cli>")
endfunction()

# Wire format (unit).
heca_test(test_wire LABELS unit TIMEOUT 60 SOURCES tests/test_wire.c $<TARGET_OBJECTS:heca_common>)
# The send queue that keeps a sponsor which stops reading from blocking the engine (unit).
heca_test(test_outq LABELS unit TIMEOUT 120 SOURCES tests/test_outq.c $<TARGET_OBJECTS:heca_common>)
# The sponsor daemon spoken to over real sockets (integration).
heca_test(test_sponsor LABELS integration TIMEOUT 120
  SOURCES tests/test_sponsor.c tests/sponsor_client.c $<TARGET_OBJECTS:heca_common>)
# Cluster identity: persistent sponsor id, cluster key, AUTH against the real hecad (integration).
heca_test(test_auth LABELS integration TIMEOUT 120
  SOURCES tests/test_auth.c tests/sponsor_client.c $<TARGET_OBJECTS:heca_common>)
# Sponsor request handling as a pure function (unit).
heca_test(test_sponsor_unit LABELS unit TIMEOUT 60
  SOURCES tests/test_sponsor_unit.c $<TARGET_OBJECTS:heca_sponsor> $<TARGET_OBJECTS:heca_common>)
# Library against real sponsors (integration).
heca_test(test_lib LABELS integration TIMEOUT 300 LIBS heca_static
  SOURCES tests/test_lib.c tests/sponsor_client.c)
# Many threads, tiny budget, every page checked against a shadow copy (stress).
heca_test(test_churn LABELS stress TIMEOUT 300 LIBS heca_static)
# The only sponsor dies: faulting access gets SIGBUS in bounded time (integration).
heca_test(test_sigbus LABELS integration TIMEOUT 120 LIBS heca_static)
# The kernel's UFFD_FEATURE_SIGBUS semantics heca's fault hand-off relies on (unit).
heca_test(test_uffd_sigbus LABELS unit TIMEOUT 60)
# The budget from the memory cgroup; userfaultfd forbidden by seccomp (unit).
heca_test(test_setup LABELS unit TIMEOUT 60 LIBS heca_static)
# heca demo end to end (integration).
heca_test(test_demo LABELS integration TIMEOUT 300)
# The qsort benchmark's workload: fill, parallel sort, verify (unit).
heca_test(test_qsort_work LABELS unit TIMEOUT 120 SOURCES tests/test_qsort_work.c bench/qsort_work.c)
# The kernel-swap baseline of the qsort benchmark: zram swap + memory cgroup, as root (integration).
heca_test(test_swapbase LABELS integration TIMEOUT 300
  SOURCES tests/test_swapbase.c bench/swapbase.c bench/qsort_work.c)

# Sponsors in their own network namespaces joined by veth (integration; needs root).
add_test(NAME test_cluster COMMAND bash ${CMAKE_SOURCE_DIR}/tests/test_cluster.sh)
set_tests_properties(test_cluster PROPERTIES LABELS integration TIMEOUT 120 SKIP_RETURN_CODE 77
  RESOURCE_LOCK netns
  ENVIRONMENT "HECAD=$<TARGET_FILE:hecad>;HECA_CLI=$<TARGET_FILE:heca_cli>")
# heca bench workloads at tiny sizes: exit status, table rows, valid JSON (integration).
heca_test(test_bench LABELS integration TIMEOUT 300)
# Many sponsors: two copies, kill -9 under load, drain, add, a full cluster (integration).
heca_test(test_replica LABELS integration stress TIMEOUT 300 LIBS heca_static
  SOURCES tests/test_replica.c tests/sponsor_client.c)
# Ten sponsors in network namespaces: kill -9 and a network cut under load (integration; root).
add_test(NAME test_cluster_replica COMMAND bash ${CMAKE_SOURCE_DIR}/tests/test_cluster_replica.sh)
set_tests_properties(test_cluster_replica PROPERTIES LABELS integration TIMEOUT 240
  RESOURCE_LOCK netns RUN_SERIAL TRUE
  SKIP_RETURN_CODE 77 ENVIRONMENT "HECAD=$<TARGET_FILE:hecad>;HECA_CLI=$<TARGET_FILE:heca_cli>")

# Ordinary programs that heca run starts: built plain (no sanitizer runtime may come before the
# preloaded library), linked with nothing of heca.
foreach(p prog_fork prog_mremap prog_alloc prog_reap prog_resv prog_raw)
  add_executable(${p} tests/progs/${p}.c)
  target_compile_options(${p} PRIVATE -fno-sanitize=all)
  target_link_options(${p} PRIVATE -fno-sanitize=all)
endforeach()
# The same allocation workload linked with each other allocator Debian ships
# (scripts/install-deps.sh installs them); one missing is left out, and test_alloc says so.
set(HECA_ALLOC_PROGS "")
foreach(a jemalloc tcmalloc mimalloc)
  find_library(HECA_LIB_${a} ${a})
  if(HECA_LIB_${a})
    add_executable(prog_alloc_${a} tests/progs/prog_alloc.c)
    target_compile_options(prog_alloc_${a} PRIVATE -fno-sanitize=all)
    target_link_options(prog_alloc_${a} PRIVATE -fno-sanitize=all -Wl,--no-as-needed)
    target_link_libraries(prog_alloc_${a} PRIVATE ${HECA_LIB_${a}})
    list(APPEND HECA_ALLOC_PROGS "${a}=$<TARGET_FILE:prog_alloc_${a}>")
  endif()
endforeach()
list(JOIN HECA_ALLOC_PROGS "," HECA_ALLOC_PROGS)
# heca run with every allocator, linked or preloaded, and with options that make it map memory
# while it initialises: same output, pages written back, no deadlock (integration).
add_test(NAME test_alloc COMMAND bash ${CMAKE_SOURCE_DIR}/tests/test_alloc.sh)
set_tests_properties(test_alloc PROPERTIES LABELS integration TIMEOUT 900
  ENVIRONMENT "HECAD=$<TARGET_FILE:hecad>;HECA_CLI=$<TARGET_FILE:heca_cli>;PROG_ALLOC=$<TARGET_FILE:prog_alloc>;HECA_ALLOC_PROGS=${HECA_ALLOC_PROGS}")
# heca run with python3, GNU sort, fork/exec, mremap, errors, status, leases (integration).
add_test(NAME test_run COMMAND bash ${CMAKE_SOURCE_DIR}/tests/test_run.sh)
set_tests_properties(test_run PROPERTIES LABELS integration TIMEOUT 300 SKIP_RETURN_CODE 77
  ENVIRONMENT "HECAD=$<TARGET_FILE:hecad>;HECA_CLI=$<TARGET_FILE:heca_cli>;PROG_FORK=$<TARGET_FILE:prog_fork>;PROG_MREMAP=$<TARGET_FILE:prog_mremap>;PROG_RESV=$<TARGET_FILE:prog_resv>;PROG_RAW=$<TARGET_FILE:prog_raw>")
# heca run frees at once the pages of a process that died without a word (a raw exit_group,
# SIGKILL, an exec'd image), and only of a dead one (integration).
add_test(NAME test_run_reap COMMAND bash ${CMAKE_SOURCE_DIR}/tests/test_run_reap.sh)
set_tests_properties(test_run_reap PROPERTIES LABELS integration TIMEOUT 180 SKIP_RETURN_CODE 77
  ENVIRONMENT "HECAD=$<TARGET_FILE:hecad>;HECA_CLI=$<TARGET_FILE:heca_cli>;PROG_REAP=$<TARGET_FILE:prog_reap>")
# A 1 GiB QEMU guest (TCG) under a 256 MiB budget fills and verifies 75% of its RAM; postcopy
# migration and -overcommit mem-lock=on are refused up front (integration; 77 without QEMU or a
# guest kernel).
add_test(NAME test_qemu COMMAND bash ${CMAKE_SOURCE_DIR}/tests/test_qemu.sh)
set_tests_properties(test_qemu PROPERTIES LABELS integration TIMEOUT 300 SKIP_RETURN_CODE 77
  ENVIRONMENT "HECAD=$<TARGET_FILE:hecad>;HECA_CLI=$<TARGET_FILE:heca_cli>")
# Partial munmap, discard, mremap and fork of sponsored memory by many threads, tiny budget,
# every page checked against a shadow (stress).
heca_test(test_segops LABELS stress TIMEOUT 180 LIBS heca_static)
# DISCARD, RESIZE and fork's CLONE answered late by a sponsor (a proxy holds their replies
# back) while other threads fault over a tiny budget: their fault latency stays bounded, every
# page checked (stress).
heca_test(test_nostall LABELS stress TIMEOUT 120 LIBS heca_static)
# Full, stopped and given-up sponsors cost time, never data; a region that cannot fit is
# refused up front (integration).
heca_test(test_failure LABELS integration TIMEOUT 300 LIBS heca_static
  SOURCES tests/test_failure.c tests/sponsor_client.c)

# hecad against hostile peers: bounded memory, peers dropped in stated time, an honest
# demander served meanwhile; CLONE not delaying other demanders; a vanished peer noticed by
# keepalive (network namespaces; needs root) (integration).
heca_test(test_hostile LABELS integration TIMEOUT 180
  SOURCES tests/test_hostile.c tests/sponsor_client.c $<TARGET_OBJECTS:heca_common>)
heca_test(test_clone_latency LABELS integration TIMEOUT 120
  SOURCES tests/test_clone_latency.c tests/sponsor_client.c $<TARGET_OBJECTS:heca_common>)
heca_test(test_keepalive LABELS integration TIMEOUT 60
  SOURCES tests/test_keepalive.c tests/sponsor_client.c $<TARGET_OBJECTS:heca_common>)
if(TARGET test_keepalive)
  set_tests_properties(test_keepalive PROPERTIES RESOURCE_LOCK netns)
endif()
# Many threads against two copies on loopback sponsors while a seeded chaos kills, stops,
# fills, drains and adds sponsors one at a time; every page checked (stress, bounded time).
heca_test(test_soak LABELS stress TIMEOUT 400 LIBS heca_static
  SOURCES tests/test_soak.c tests/sponsor_client.c)
# Six sponsors in network namespaces: network cuts of 1 to 6 s and heals under demos, copies
# restored after each (integration; root).
add_test(NAME test_soak_cluster COMMAND bash ${CMAKE_SOURCE_DIR}/tests/test_soak_cluster.sh)
set_tests_properties(test_soak_cluster PROPERTIES LABELS integration TIMEOUT 300
  RESOURCE_LOCK netns RUN_SERIAL TRUE
  SKIP_RETURN_CODE 77 ENVIRONMENT "HECAD=$<TARGET_FILE:hecad>;HECA_CLI=$<TARGET_FILE:heca_cli>")
# Several threads unregister, unmap, split and remap the same segments at once while new ones
# are mapped and registered and other threads fault on theirs; every page checked (stress).
heca_test(test_lifetimes LABELS stress TIMEOUT 240 LIBS heca_static)
# Forks over three sponsors, one stopped for a while: content page by page in parent and
# child, and no thread started at the fork (integration).
heca_test(test_fork_sponsors LABELS integration TIMEOUT 120 LIBS heca_static)
# Regions of more than 2^32 pages: refused beyond the sponsors' room, and with overcommit
# pages on both sides of page 2^32 evicted and read back (integration).
heca_test(test_huge LABELS integration TIMEOUT 120 LIBS heca_static)
# heca run with runtimes that manage their own memory, each holding several times its budget:
# a JVM (G1 heap commits by mmap(MAP_FIXED) in a reservation), node (V8 Buffers) and memcached
# (1 MiB slab pages); same output as without heca, pages written back (integration).
add_test(NAME test_runtimes COMMAND bash ${CMAKE_SOURCE_DIR}/tests/test_runtimes.sh)
set_tests_properties(test_runtimes PROPERTIES LABELS integration TIMEOUT 300 SKIP_RETURN_CODE 77
  ENVIRONMENT "HECAD=$<TARGET_FILE:hecad>;HECA_CLI=$<TARGET_FILE:heca_cli>")
# The kernel is the truth: raw madvise(DONTNEED), munmap, mremap and mlock of sponsored memory
# behind heca's back, with most pages at a sponsor, leave it as Linux memory; each case in a
# child under a watchdog, so that a hang is a failure with the threads' wait channels (stress).
heca_test(test_truth LABELS stress TIMEOUT 330 LIBS heca_static)
# The replacement policy keeps a hot set resident while a scan passes (counted faults).
heca_test(test_policy LABELS stress TIMEOUT 120 LIBS heca_static)
