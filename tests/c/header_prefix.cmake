# Checks contract section 1: every identifier asyncify.h declares starts with asyncify_ or ASYNCIFY_.
#
# Run as: cmake -DCC=<c compiler> -DHEADER_DIR=<dir of asyncify.h> -DWORK_DIR=<scratch dir> -P header_prefix.cmake
#
# The compiler preprocesses a one-line file including the header with -dD, which keeps every #define and
# marks which file each line came from; only lines from asyncify.h itself are looked at, so names from
# <stdint.h> and friends do not count. Checked: macro names, struct tags, typedef names and the names of
# declared functions (the identifier right before a top-level "(" that is not a parameter's pointer).
foreach(var CC HEADER_DIR WORK_DIR)
  if(NOT DEFINED ${var})
    message(FATAL_ERROR "header_prefix.cmake needs -D${var}=...")
  endif()
endforeach()

set(tu "${WORK_DIR}/header_prefix_tu.c")
file(WRITE "${tu}" "#include <asyncify.h>\n")
execute_process(
  COMMAND "${CC}" -std=c11 -E -dD -I "${HEADER_DIR}" "${tu}"
  OUTPUT_VARIABLE pre
  RESULT_VARIABLE rc
  ERROR_VARIABLE err)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "preprocessing asyncify.h failed: ${err}")
endif()

# Keep only the lines that came from asyncify.h. CMake lists split on ';', so hide those first.
string(REPLACE ";" "<SEMI>" pre "${pre}")
string(REPLACE "\n" ";" lines "${pre}")
set(ours "")
set(in_header FALSE)
foreach(line IN LISTS lines)
  if(line MATCHES "^# [0-9]+ \"([^\"]*)\"")
    if(CMAKE_MATCH_1 MATCHES "(^|/)asyncify\\.h$")
      set(in_header TRUE)
    else()
      set(in_header FALSE)
    endif()
  elseif(in_header)
    string(APPEND ours "${line}\n")
  endif()
endforeach()
string(REPLACE "<SEMI>" ";" ours "${ours}")

if(NOT ours MATCHES "asyncify_submit")
  message(FATAL_ERROR "found no declarations from asyncify.h in the preprocessed output; the check is broken")
endif()

set(names "")
# Macros.
string(REGEX MATCHALL "#define[ \t]+[A-Za-z_][A-Za-z0-9_]*" found "${ours}")
foreach(m IN LISTS found)
  string(REGEX REPLACE "#define[ \t]+" "" m "${m}")
  list(APPEND names "${m}")
endforeach()
# Remove macro lines before looking at C declarations.
string(REGEX REPLACE "#[^\n]*\n" "\n" decls "${ours}")
# ';' separates CMake list items, so write it as '@' (which C never uses) from here on.
string(REPLACE ";" "@" decls "${decls}")
# Struct, union and enum tags.
string(REGEX MATCHALL "(struct|union|enum)[ \t\n]+[A-Za-z_][A-Za-z0-9_]*" found "${decls}")
foreach(m IN LISTS found)
  string(REGEX REPLACE "(struct|union|enum)[ \t\n]+" "" m "${m}")
  list(APPEND names "${m}")
endforeach()
# Typedef names: "typedef ... name;" and function-pointer typedefs "typedef ... (*name)(...);".
string(REGEX MATCHALL "typedef[^@{}]*[ \t\n*]([A-Za-z_][A-Za-z0-9_]*)[ \t\n]*@" found "${decls}")
foreach(m IN LISTS found)
  string(REGEX REPLACE ".*[ \t\n*]([A-Za-z_][A-Za-z0-9_]*)[ \t\n]*@$" "\\1" m "${m}")
  list(APPEND names "${m}")
endforeach()
string(REGEX MATCHALL "}[ \t\n]*[A-Za-z_][A-Za-z0-9_]*[ \t\n]*@" found "${decls}")
foreach(m IN LISTS found)
  string(REGEX REPLACE "}[ \t\n]*([A-Za-z_][A-Za-z0-9_]*)[ \t\n]*@" "\\1" m "${m}")
  list(APPEND names "${m}")
endforeach()
string(REGEX MATCHALL "typedef[^@]*\\([ \t]*\\*[ \t]*[A-Za-z_][A-Za-z0-9_]*[ \t]*\\)" found "${decls}")
foreach(m IN LISTS found)
  string(REGEX REPLACE ".*\\([ \t]*\\*[ \t]*([A-Za-z_][A-Za-z0-9_]*)[ \t]*\\)$" "\\1" m "${m}")
  list(APPEND names "${m}")
endforeach()
# Function declarations: an identifier followed by "(" that is not inside parentheses (parameters) and
# not a function-pointer declarator. Track nesting by hand.
string(LENGTH "${decls}" n)
set(depth 0)
set(ident "")
set(last_ident "")
set(i 0)
while(i LESS n)
  string(SUBSTRING "${decls}" ${i} 1 c)
  if(c MATCHES "[A-Za-z0-9_]")
    string(APPEND ident "${c}")
  else()
    if(NOT ident STREQUAL "")
      set(last_ident "${ident}")
      set(ident "")
    endif()
    if(c STREQUAL "(")
      # "void (*name)(...)" is a function-pointer declarator, not a function named "void".
      math(EXPR next "${i} + 1")
      string(SUBSTRING "${decls}" ${next} 8 ahead)
      string(STRIP "${ahead}" ahead)
      if(depth EQUAL 0 AND NOT last_ident STREQUAL "" AND NOT ahead MATCHES "^\\*")
        list(APPEND names "${last_ident}")
      endif()
      math(EXPR depth "${depth} + 1")
      set(last_ident "")
    elseif(c STREQUAL ")")
      math(EXPR depth "${depth} - 1")
      set(last_ident "")
    elseif(NOT c MATCHES "[ \t\n]")
      set(last_ident "")
    endif()
  endif()
  math(EXPR i "${i} + 1")
endwhile()

list(REMOVE_DUPLICATES names)
set(allowed
    __attribute__
    __declspec
    _Static_assert
    static_assert
    sizeof
    _Alignof
    alignof
    __extension__
    __asm__
    asm)
set(bad "")
foreach(name IN LISTS names)
  if(name IN_LIST allowed)
    continue()
  endif()
  if(NOT name MATCHES "^(asyncify_|ASYNCIFY_)")
    list(APPEND bad "${name}")
  endif()
endforeach()
list(LENGTH names count)
if(bad)
  message(FATAL_ERROR "asyncify.h declares names without the asyncify_/ASYNCIFY_ prefix: ${bad}")
endif()
message(STATUS "PASS header_prefix (${count} names checked)")
