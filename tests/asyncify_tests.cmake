# What the C (tests/c) and C++ (tests/cpp) suites share: the library under test as an imported target,
# the sanitizer settings, and one function that defines a test. Included by both CMakeLists.txt files.
#
# Inputs (cache variables of the including project): ASYNCIFY_LIB, ASYNCIFY_SANITIZE, ASYNCIFY_TEST_TIMEOUT.
# Outputs: asyncify_san_flags, asyncify_san_env, asyncify_label, asyncify_rpath.

if(ASYNCIFY_SANITIZE)
  # -fno-sanitize-recover makes every UBSan report fatal, so it fails the test instead of scrolling by.
  set(asyncify_san_flags -fsanitize=${ASYNCIFY_SANITIZE} -fno-sanitize-recover=all -fno-omit-frame-pointer -g)
  set(asyncify_san_env "ASAN_OPTIONS=detect_leaks=1:abort_on_error=0:halt_on_error=1"
                       "UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1")
  set(asyncify_label asan)
else()
  set(asyncify_san_flags "")
  set(asyncify_san_env "")
  set(asyncify_label plain)
endif()

# A report that a checker printed, or an abort, fails a test whatever its exit status or PASS line.
set(asyncify_fail_pattern "FAIL:|ERROR: (Address|Leak)Sanitizer|runtime error:|FATAL|Aborted")

# The library at `lib` as the imported target `name`, with `include_dirs`. The library's SONAME
# (libasyncify.so.MAJOR) must be found next to it at run time: where no file of that name is there (a
# plain `cargo build`), a link in the build tree stands in. Appends the run-time directories to
# asyncify_rpath.
function(asyncify_import_library name lib include_dirs)
  get_filename_component(lib_dir "${lib}" DIRECTORY)
  set(rpath "${lib_dir}")
  find_program(ASYNCIFY_OBJDUMP NAMES objdump llvm-objdump)
  if(ASYNCIFY_OBJDUMP)
    execute_process(
      COMMAND "${ASYNCIFY_OBJDUMP}" -p "${lib}"
      OUTPUT_VARIABLE dyn
      RESULT_VARIABLE rc
      ERROR_QUIET)
    if(rc EQUAL 0 AND dyn MATCHES "SONAME[ \t]+([^ \t\r\n]+)")
      set(soname "${CMAKE_MATCH_1}")
      if(NOT EXISTS "${lib_dir}/${soname}")
        set(shim_dir "${CMAKE_CURRENT_BINARY_DIR}/soname")
        file(MAKE_DIRECTORY "${shim_dir}")
        file(REMOVE "${shim_dir}/${soname}")
        file(CREATE_LINK "${lib}" "${shim_dir}/${soname}" SYMBOLIC)
        list(APPEND rpath "${shim_dir}")
      endif()
    endif()
  endif()
  add_library(${name} SHARED IMPORTED)
  set_target_properties(${name} PROPERTIES IMPORTED_LOCATION "${lib}" INTERFACE_INCLUDE_DIRECTORIES "${include_dirs}")
  set(asyncify_rpath ${asyncify_rpath} ${rpath} PARENT_SCOPE)
endfunction()

# One test: an executable from SOURCE (default NAME.c) linked with LINK, and a ctest of it.
#   EXIT_STATUS          the exit status decides (default: the line "PASS NAME" must be printed; a PASS
#                        pattern makes ctest ignore the exit status, so the fail pattern catches reports)
#   SOURCE file          the source file
#   LINK targets...      what to link besides Threads::Threads
#   OPTIONS flags...     extra compile options (warnings)
#   INCLUDE_FIRST dir    a directory searched before the library's (a program built against an older header)
#   CXX_STANDARD n       for C++ sources
#   ENV vars...          added to the test's environment, after the sanitizers' own
function(asyncify_add_test name)
  cmake_parse_arguments(arg "EXIT_STATUS" "SOURCE;INCLUDE_FIRST;CXX_STANDARD" "LINK;OPTIONS;ENV" ${ARGN})
  if(NOT arg_SOURCE)
    set(arg_SOURCE ${name}.c)
  endif()
  add_executable(${name} ${arg_SOURCE})
  if(arg_INCLUDE_FIRST)
    target_include_directories(${name} BEFORE PRIVATE "${arg_INCLUDE_FIRST}")
  endif()
  target_compile_options(${name} PRIVATE ${arg_OPTIONS} ${asyncify_san_flags})
  target_link_options(${name} PRIVATE ${asyncify_san_flags})
  target_link_libraries(${name} PRIVATE ${arg_LINK} Threads::Threads)
  set_target_properties(${name} PROPERTIES BUILD_RPATH "${asyncify_rpath}" NO_SYSTEM_FROM_IMPORTED ON)
  if(arg_CXX_STANDARD)
    set_target_properties(${name} PROPERTIES CXX_STANDARD ${arg_CXX_STANDARD})
  endif()
  add_test(NAME ${name} COMMAND ${name})
  set_tests_properties(${name} PROPERTIES TIMEOUT ${ASYNCIFY_TEST_TIMEOUT} LABELS ${asyncify_label}
                                          FAIL_REGULAR_EXPRESSION "${asyncify_fail_pattern}")
  if(NOT arg_EXIT_STATUS)
    set_tests_properties(${name} PROPERTIES PASS_REGULAR_EXPRESSION "PASS ${name}")
  endif()
  set(env ${asyncify_san_env} ${arg_ENV})
  if(env)
    set_tests_properties(${name} PROPERTIES ENVIRONMENT "${env}")
  endif()
endfunction()
