/* The leak checkers' canary: this program leaks one block on purpose and otherwise uses the
 * library normally. Under valgrind (valgrind_canary_leak) and LeakSanitizer (canary_leak in the
 * sanitized build) its test passes only on the checker's report of that block: proof that the checkers
 * are armed and that their reports reach ctest. Not run in the plain build, where nothing catches it. */
#include <stdlib.h>
#include <string.h>

#include "asyncify.h"

static int32_t nothing(void *arg, void **out_result)
{
    (void)arg;
    (void)out_result;
    return 0;
}

int main(void)
{
    asyncify_handle h = 0;
    if (asyncify_submit(nothing, NULL, NULL, &h) != ASYNCIFY_OK ||
        asyncify_wait(h, -1, NULL, NULL) != ASYNCIFY_OK || asyncify_release(h) != ASYNCIFY_OK) {
        return 2;
    }
    char *volatile leaked = malloc(64);
    if (leaked == NULL) {
        return 2;
    }
    memset(leaked, 1, 64);
    leaked = NULL; /* the only pointer to the block is gone: "definitely lost" */
    return 0;
}
