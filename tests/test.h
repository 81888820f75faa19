/* test.h - a tiny test framework.  Each TEST registers itself; the runner
 * (tests/main.c) runs every test in a child process so that a crash is one
 * failure, not the end of the run.
 *
 *   TEST(conv_matches_golden) {
 *       CHECK(x == 3);
 *       CHECK_NEAR(a, b, 1e-5);
 *       if (!have_data) SKIP("no ../shared");
 *   }
 */
#ifndef SH_TEST_H
#define SH_TEST_H
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "shrink.h"

typedef void (*sh_test_fn)(void);
void sh_test_register(const char *name, sh_test_fn fn, const char *file);
void sh_test_fail(const char *file, int line, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
void sh_test_skip(const char *why) __attribute__((noreturn));
/* Path of ../shared (or $SHRINK_SHARED); NULL if absent. */
const char *sh_test_shared(void);
/* Scratch directory for this test run (created on demand). */
const char *sh_test_tmpdir(void);
/* Nonzero when SHRINK_TEST_QUICK is set (sanitizer runs): skip long tests. */
int sh_test_quick(void);
/* n synthetic 28x28 one-channel images of 10 classes (class k has a bright
 * 7x7 block at block position k, plus noise); free with sh_dataset_free. */
sh_dataset *sh_test_synth_images(int n, uint64_t seed);
/* Read golden values `name` from a "name count v1 v2 ..." file (tests/gen
 * scripts): up to max into v; returns the count (0 and a test failure when
 * the file or the name is missing). */
int sh_test_golden(const char *path, const char *name, double *v, int max);
extern int sh_test_failures;

#define TEST(name)                                                                      \
    static void test_##name(void);                                                      \
    __attribute__((constructor)) static void reg_##name(void)                           \
    {                                                                                   \
        sh_test_register(#name, test_##name, __FILE__);                                 \
    }                                                                                   \
    static void test_##name(void)

#define CHECK(c)                                                                        \
    do {                                                                                \
        if (!(c)) sh_test_fail(__FILE__, __LINE__, "CHECK(%s)", #c);                    \
    } while (0)
#define CHECK_MSG(c, ...)                                                               \
    do {                                                                                \
        if (!(c)) sh_test_fail(__FILE__, __LINE__, __VA_ARGS__);                        \
    } while (0)
#define CHECK_NEAR(a, b, tol)                                                           \
    do {                                                                                \
        double _a = (a), _b = (b), _t = (tol);                                          \
        if (!(fabs(_a - _b) <= _t))                                                     \
            sh_test_fail(__FILE__, __LINE__, "%s = %.9g, %s = %.9g, |diff| %.3g > %.3g", \
                         #a, _a, #b, _b, fabs(_a - _b), _t);                            \
    } while (0)
/* CHECK_OK(rc, err): rc must be SH_OK, else print err.msg */
#define CHECK_OK(rc, err)                                                               \
    do {                                                                                \
        int _rc = (rc);                                                                 \
        if (_rc != SH_OK) sh_test_fail(__FILE__, __LINE__, "%s failed (%d): %s", #rc, _rc, (err)->msg); \
    } while (0)
#define SKIP(why) sh_test_skip(why)

#endif
