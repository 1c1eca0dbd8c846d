# Reliability, included from CMakeLists.txt: the C stress test and fault injection, built and
# run like the other tests (plain, or sanitized with ASYNCIFY_SANITIZE), and, with -DASYNCIFY_VALGRIND=ON,
# every C test again under valgrind (label "valgrind"):
#
#   cmake -S tests/c -B build/c-valgrind ... -DASYNCIFY_VALGRIND=ON
#   cmake --build build/c-valgrind -j2 && (cd build/c-valgrind && ctest -L valgrind --output-on-failure)
#
# Under valgrind: --leak-check=full --error-exitcode=1 (any error or definite/possible leak fails the test),
# tests/valgrind.supp for the documented one-time allocations, ASYNCIFY_SPIN_US=0 (spinning before parking
# costs a whole time slice on valgrind's one-thread-at-a-time scheduler) and a smaller stress run.

set(ASYNCIFY_STRESS_TASKS 20000 CACHE STRING "Accepted tasks of test_stress (plain and sanitized)")
set(ASYNCIFY_VALGRIND_STRESS_TASKS 1500 CACHE STRING "Accepted tasks of test_stress under valgrind")
option(ASYNCIFY_VALGRIND "Also run every C test under valgrind (label valgrind)" OFF)

# The exit status decides these (they print no PASS line); the fail pattern catches a report that still
# exited 0.
set(asyncify_reliability_tests test_stress test_faults)
foreach(name IN LISTS asyncify_reliability_tests)
  asyncify_c_test(${name} EXIT_STATUS LINK ${CMAKE_DL_LIBS} ENV "ASYNCIFY_STRESS_TASKS=${ASYNCIFY_STRESS_TASKS}")
endforeach()

# The canary leaks on purpose: where a leak checker runs (LeakSanitizer here, memcheck below), its test
# passes only on the checker's report of exactly that block, so a disarmed checker fails it.
add_executable(canary_leak canary_leak.c)
target_compile_options(canary_leak PRIVATE -Wall -Wextra -Werror ${asyncify_san_flags})
target_link_options(canary_leak PRIVATE ${asyncify_san_flags})
target_link_libraries(canary_leak PRIVATE asyncify Threads::Threads)
set_target_properties(canary_leak PROPERTIES BUILD_RPATH "${asyncify_rpath}")
if(ASYNCIFY_SANITIZE MATCHES "address")
  add_test(NAME canary_leak COMMAND canary_leak)
  set_tests_properties(canary_leak PROPERTIES PASS_REGULAR_EXPRESSION "Direct leak of 64 byte" TIMEOUT 60 LABELS
                                              ${asyncify_label} ENVIRONMENT "ASAN_OPTIONS=detect_leaks=1")
endif()

if(ASYNCIFY_VALGRIND)
  if(ASYNCIFY_SANITIZE)
    message(
      FATAL_ERROR "ASYNCIFY_VALGRIND needs a build without ASYNCIFY_SANITIZE (valgrind and ASan exclude each other)")
  endif()
  find_program(ASYNCIFY_VALGRIND_EXE valgrind REQUIRED)
  get_filename_component(asyncify_supp "${CMAKE_CURRENT_SOURCE_DIR}/../valgrind.supp" ABSOLUTE)
  foreach(name IN LISTS asyncify_tests asyncify_reliability_tests)
    set(asyncify_leak_args --errors-for-leak-kinds=definite,possible)
    if(name STREQUAL "test_fork")
      # fork() copies the heap but only the calling thread: in a child, whatever the parent's other
      # threads held (worker start closures, thread-locals, a task being submitted at that instant) is
      # unreachable, and memcheck would call it lost at the child's exit. So for this test a leak counts
      # in the parent only: children run silent with leaks not counted as errors, while their memory
      # errors still fail them (exit status 1, which the parent checks); the parent's own leak report
      # fails the test through FAIL_REGULAR_EXPRESSION.
      set(asyncify_leak_args --errors-for-leak-kinds=none --child-silent-after-fork=yes)
    endif()
    add_test(
      NAME valgrind_${name}
      COMMAND
        "${ASYNCIFY_VALGRIND_EXE}" --quiet --leak-check=full --show-leak-kinds=definite,possible ${asyncify_leak_args}
        --error-exitcode=1 --fair-sched=yes --suppressions=${asyncify_supp} --gen-suppressions=all
        $<TARGET_FILE:${name}>)
    set_tests_properties(
      valgrind_${name}
      PROPERTIES
        TIMEOUT
        900
        LABELS
        valgrind
        ENVIRONMENT
        "ASYNCIFY_SPIN_US=0;ASYNCIFY_UNDER_VALGRIND=1;ASYNCIFY_STRESS_TASKS=${ASYNCIFY_VALGRIND_STRESS_TASKS}"
        FAIL_REGULAR_EXPRESSION
        "FAIL:|are definitely lost|are possibly lost|Invalid (read|write|free)|uninitialised|Mismatched free|Syscall param"
    )
  endforeach()
  # A program that used pools, tasks, overrides and contexts and shut every pool down is clean with no
  # suppression file at all: every worker thread was joined.
  # (test_limiter: the timer thread too, joined when the last pool that used it was freed.)
  foreach(name IN ITEMS test_workers test_limiter)
    add_test(
      NAME valgrind_unsuppressed_${name}
      COMMAND "${ASYNCIFY_VALGRIND_EXE}" --quiet --leak-check=full --show-leak-kinds=definite,possible
              --errors-for-leak-kinds=definite,possible --error-exitcode=1 --fair-sched=yes $<TARGET_FILE:${name}>)
    set_tests_properties(
      valgrind_unsuppressed_${name}
      PROPERTIES TIMEOUT 900 LABELS valgrind ENVIRONMENT "ASYNCIFY_SPIN_US=0" FAIL_REGULAR_EXPRESSION
                 "FAIL:|are definitely lost|are possibly lost|Invalid (read|write|free)|uninitialised")
  endforeach()
  add_test(NAME valgrind_canary_leak
           COMMAND "${ASYNCIFY_VALGRIND_EXE}" --quiet --leak-check=full --errors-for-leak-kinds=definite,possible
                   --error-exitcode=1 --suppressions=${asyncify_supp} $<TARGET_FILE:canary_leak>)
  set_tests_properties(
    valgrind_canary_leak PROPERTIES PASS_REGULAR_EXPRESSION "64 bytes in 1 blocks are definitely lost" TIMEOUT 300
                                    LABELS valgrind ENVIRONMENT "ASYNCIFY_SPIN_US=0")
endif()
