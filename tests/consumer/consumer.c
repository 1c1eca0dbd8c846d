/* A program using asyncify the way an installed library is used: <asyncify.h> and -lasyncify, nothing
 * from the source tree. Built by tests/consumer/run.sh with find_package(asyncify) and with pkg-config. */
#include <asyncify.h>
#include <stdio.h>
#include <string.h>

static int32_t read_model(void* arg, void** out_result) {
    char* model = arg;
    size_t len = 0;
    if (asyncify_override_get("model", model, 63, &len) != ASYNCIFY_OK) {
        return 1;
    }
    model[len] = '\0';
    *out_result = model;
    return 0;
}

static int fail(const char* what) {
    char message[256] = "";
    asyncify_last_error(message, sizeof message, NULL);
    fprintf(stderr, "FAIL consumer: %s (%s)\n", what, message);
    return 1;
}

int main(int argc, char** argv) {
    const char* how = argc > 1 ? argv[1] : "?";
    if (strcmp(asyncify_version(), ASYNCIFY_VERSION_STRING) != 0) {
        return fail("asyncify_version() differs from the header's ASYNCIFY_VERSION_STRING");
    }
    if (asyncify_override_set("model", "gpt-4o", 6) != ASYNCIFY_OK) {
        return fail("asyncify_override_set");
    }
    char seen[64] = "";
    asyncify_handle task = 0;
    if (asyncify_submit(read_model, seen, NULL, &task) != ASYNCIFY_OK) {
        return fail("asyncify_submit");
    }
    /* Too late for the task: it runs with the table as it was at submit. */
    asyncify_override_set("model", "llama", 5);

    void* result = NULL;
    int32_t code = -1;
    asyncify_status status = asyncify_wait(task, 10000, &result, &code);
    asyncify_release(task);
    if (status != ASYNCIFY_OK || result != seen || strcmp(seen, "gpt-4o") != 0) {
        fprintf(stderr, "FAIL consumer: the task ended with %s and saw \"%s\"\n", asyncify_status_str(status), seen);
        return 1;
    }
    printf("PASS consumer (%s): asyncify %s, the task saw model=%s\n", how, asyncify_version(), seen);
    return 0;
}
