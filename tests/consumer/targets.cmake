# The programs of the from-source consumer tests (tests/consumer/subdir and tests/consumer/fetch), once
# the asyncify:: targets exist: what a user's CMakeLists.txt would write after add_subdirectory or
# FetchContent_MakeAvailable.
set(CMAKE_C_STANDARD 11)
set(CMAKE_C_STANDARD_REQUIRED ON)
set(CMAKE_C_EXTENSIONS OFF)
set(CMAKE_CXX_EXTENSIONS OFF)

foreach(target IN ITEMS asyncify::asyncify asyncify::asyncify_shared asyncify::asyncify_static asyncify::asyncify_cpp)
  if(NOT TARGET ${target})
    message(FATAL_ERROR "asyncify from source does not define ${target}")
  endif()
endforeach()

set(consumer_dir "${CMAKE_CURRENT_LIST_DIR}")

add_executable(consumer "${consumer_dir}/consumer.c")
target_compile_options(consumer PRIVATE -Wall -Wextra -Wpedantic -Werror)
target_link_libraries(consumer PRIVATE asyncify::asyncify)

add_executable(consumer_static "${consumer_dir}/consumer.c")
target_compile_options(consumer_static PRIVATE -Wall -Wextra -Wpedantic -Werror)
target_link_libraries(consumer_static PRIVATE asyncify::asyncify_static)

add_executable(consumer_cpp "${consumer_dir}/consumer.cpp")
target_compile_options(consumer_cpp PRIVATE -Wall -Wextra -Wpedantic -Werror)
target_link_libraries(consumer_cpp PRIVATE asyncify::asyncify_cpp)

message(STATUS "asyncify ${asyncify_VERSION} from source: ${asyncify_LIBRARY}")
