/* testutil.c - helpers several test files share: a synthetic image set and
 * the reader of the "name count v1 v2 ..." golden files the tests/gen
 * scripts write. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "test.h"

sh_dataset *sh_test_synth_images(int n, uint64_t seed)
{
    sh_dataset *d = calloc(1, sizeof *d);
    d->kind = 1;
    d->n = n;
    d->c = 1, d->h = 28, d->w = 28;
    d->n_classes = 10;
    d->x = malloc(sizeof(float) * 784 * (size_t)n);
    d->y = malloc(sizeof(int32_t) * (size_t)n);
    uint64_t s = seed;
    for (int i = 0; i < n; i++) {
        int k = i % 10;
        d->y[i] = k;
        for (int p = 0; p < 784; p++) {
            s = s * 6364136223846793005ull + 1442695040888963407ull;
            float noise = (float)((s >> 40) & 0xFFFF) / 65536.0f * 0.3f;
            int r = p / 28, c = p % 28;
            d->x[i * 784 + p] = noise + ((r / 7) * 4 + c / 7 == k ? 0.7f : 0.0f);
        }
    }
    d->desc = strdup("synthetic");
    return d;
}

int sh_test_golden(const char *path, const char *name, double *v, int max)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        sh_test_fail(__FILE__, __LINE__, "cannot open %s (run from the repo root)", path);
        return 0;
    }
    char key[64];
    int n, found = 0;
    while (fscanf(f, "%63s %d", key, &n) == 2) {
        int want = strcmp(key, name) == 0;
        for (int i = 0; i < n; i++) {
            double x;
            if (fscanf(f, "%lf", &x) != 1) break;
            if (want && i < max) v[i] = x;
        }
        if (want) {
            found = n;
            break;
        }
    }
    fclose(f);
    if (!found) sh_test_fail(__FILE__, __LINE__, "golden value '%s' missing from %s", name, path);
    return found;
}
