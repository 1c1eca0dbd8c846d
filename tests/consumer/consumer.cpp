// The C++ side of the consumer tests: asyncify.hpp through asyncify::asyncify_cpp, as a user's program
// would use it. Built by tests/consumer/source.sh (add_subdirectory and FetchContent).
#include <asyncify.hpp>

#include <cstring>
#include <iostream>
#include <stdexcept>
#include <string>

int main(int argc, char** argv) {
    const char* how = argc > 1 ? argv[1] : "?";
    if (std::strcmp(asyncify::version(), ASYNCIFY_VERSION_STRING) != 0) {
        std::cerr << "FAIL consumer_cpp: asyncify::version() differs from ASYNCIFY_VERSION_STRING\n";
        return 1;
    }
    asyncify::set("model", "gpt-4o");
    auto seen = asyncify::submit([](const std::string& prefix) { return prefix + *asyncify::get("model"); },
                                 std::string("model="));
    asyncify::set("model", "llama"); // too late for the task
    auto thrown = asyncify::submit([]() -> int { throw std::out_of_range("expected"); });
    std::string model = seen.get();
    bool rethrown = false;
    try {
        thrown.get();
    } catch (const std::out_of_range&) {
        rethrown = true;
    }
    if (model != "model=gpt-4o" || !rethrown) {
        std::cerr << "FAIL consumer_cpp: the task saw \"" << model << "\", rethrown=" << rethrown << "\n";
        return 1;
    }
    std::cout << "PASS consumer_cpp (" << how << "): asyncify " << asyncify::version() << ", the task saw " << model
              << ", its exception came back\n";
    return 0;
}
