# SPDX-License-Identifier: MIT
# libFuzzer harnesses (-DHECA_FUZZ=ON, CC=clang). Included before any target is defined, so that
# the code under test (heca_common, heca_sponsor) is built with coverage instrumentation too;
# the fuzz targets themselves are added by heca_fuzz_targets() once those libraries exist.

if(NOT CMAKE_C_COMPILER_ID MATCHES "Clang")
  message(FATAL_ERROR "HECA_FUZZ=ON needs clang (libFuzzer): configure with CC=clang")
endif()
if(NOT HECA_SANITIZE STREQUAL "")
  message(FATAL_ERROR "HECA_FUZZ=ON brings its own sanitizers; leave HECA_SANITIZE empty")
endif()

# Every object in a fuzz build gets coverage feedback and ASan+UBSan; only the harnesses link
# libFuzzer's main(). Other executables in this build dir still link, as plain ASan programs.
add_compile_options(-fsanitize=fuzzer-no-link,address,undefined -fno-omit-frame-pointer
                    -fno-sanitize-recover=undefined)
add_link_options(-fsanitize=address,undefined)

function(heca_fuzzer name)
  add_executable(${name} ${ARGN})
  target_include_directories(${name} PRIVATE include src daemon)
  target_compile_options(${name} PRIVATE -fsanitize=fuzzer)
  target_link_options(${name} PRIVATE -fsanitize=fuzzer)
  target_link_libraries(${name} PRIVATE Threads::Threads)
endfunction()

function(heca_fuzz_targets)
  heca_fuzzer(fuzz_wire fuzz/fuzz_wire.c $<TARGET_OBJECTS:heca_common>)
  # The sponsor's request handler, written by the daemon's author; absent until it exists.
  if(EXISTS ${CMAKE_SOURCE_DIR}/fuzz/fuzz_sponsor.c)
    heca_fuzzer(fuzz_sponsor fuzz/fuzz_sponsor.c $<TARGET_OBJECTS:heca_sponsor>
                $<TARGET_OBJECTS:heca_common>)
  endif()
  # Regenerates fuzz/corpus/wire/ with the real encoder: build/gen_corpus_wire fuzz/corpus/wire
  add_executable(gen_corpus_wire fuzz/gen_corpus_wire.c $<TARGET_OBJECTS:heca_common>)
  target_include_directories(gen_corpus_wire PRIVATE include src)
  target_link_libraries(gen_corpus_wire PRIVATE Threads::Threads)
endfunction()
