/* main.c - test runner: runs every registered TEST (optionally those whose
 * name contains argv[1]) in a child process and prints
 * "N passed, N failed, N skipped". */
#include <stdarg.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "test.h"

typedef struct {
    const char *name, *file;
    sh_test_fn fn;
} test_t;
static test_t tests[1024];
static int n_tests;
int sh_test_failures;

void sh_test_register(const char *name, sh_test_fn fn, const char *file)
{
    if (n_tests < 1024) tests[n_tests++] = (test_t){name, file, fn};
}

void sh_test_fail(const char *file, int line, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "    %s:%d: ", file, line);
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
    sh_test_failures++;
}

void sh_test_skip(const char *why)
{
    fprintf(stderr, "    skipped: %s\n", why);
    fflush(stderr);
    _exit(77);
}

const char *sh_test_shared(void)
{
    const char *e = getenv("SHRINK_SHARED");
    const char *p = e && *e ? e : "../shared";
    struct stat st;
    return stat(p, &st) == 0 && S_ISDIR(st.st_mode) ? p : NULL;
}

const char *sh_test_tmpdir(void)
{
    static char dir[256];
    if (!dir[0]) {
        snprintf(dir, sizeof dir, "/tmp/shrink-test-%d", (int)getpid());
        mkdir(dir, 0755);
    }
    return dir;
}

int sh_test_quick(void)
{
    const char *q = getenv("SHRINK_TEST_QUICK");
    return q && *q && strcmp(q, "0") != 0;
}

static int cmp(const void *a, const void *b)
{
    const test_t *x = a, *y = b;
    int c = strcmp(x->file, y->file);
    return c ? c : strcmp(x->name, y->name);
}

int main(int argc, char **argv)
{
    int passed = 0, failed = 0, skipped = 0;
    qsort(tests, (size_t)n_tests, sizeof tests[0], cmp);
    for (int i = 0; i < n_tests; i++) {
        if (argc > 1 && !strstr(tests[i].name, argv[1])) continue;
        double t0 = sh_now();
        fflush(stdout);
        fflush(stderr);
        pid_t pid = fork();
        if (pid == 0) {
            sh_test_failures = 0;
            tests[i].fn();
            fflush(stdout);
            fflush(stderr);
            _exit(sh_test_failures ? 1 : 0);
        }
        int st = 0;
        waitpid(pid, &st, 0);
        double dt = sh_now() - t0;
        const char *res;
        if (WIFEXITED(st) && WEXITSTATUS(st) == 0) res = "ok", passed++;
        else if (WIFEXITED(st) && WEXITSTATUS(st) == 77) res = "skipped", skipped++;
        else if (WIFSIGNALED(st)) res = "CRASHED", failed++;
        else res = "FAILED", failed++;
        printf("%-8s %-50s %7.2fs\n", res, tests[i].name, dt);
        fflush(stdout);
    }
    printf("unit: %d passed, %d failed, %d skipped\n", passed, failed, skipped);
    return failed ? 1 : 0;
}
