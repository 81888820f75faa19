/* ort_compare.h - shared by the ONNX Runtime CLI tests' helpers (qdq_ort.sh,
 * qdq_weight_ort.sh), included into the C helper each script compiles:
 * compares shrink's output (a TensorProto file, f32) with ORT's raw float32
 * dump; prints the largest difference and returns 0 when it is <= tol. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include "shrink.h"

static int ort_compare(const char *pb, const char *raw, double tol)
{
    sh_error e = {0};
    sh_tensor *a = NULL;
    char *nm = NULL;
    if (sh_tensorproto_load(pb, &a, &nm, &e)) { fprintf(stderr, "%s\n", e.msg); return 1; }
    FILE *f = fopen(raw, "rb");
    if (!f) { sh_tensor_free(a); free(nm); return 1; }
    int64_t n = sh_tensor_numel(a);
    float *b = malloc(sizeof(float) * (size_t)n + 4);
    size_t got = fread(b, sizeof(float), (size_t)n + 1, f);
    fclose(f);
    if ((int64_t)got != n) {
        fprintf(stderr, "ORT output has %zu values, shrink %lld\n", got, (long long)n);
        sh_tensor_free(a); free(nm); free(b);
        return 1;
    }
    double md = 0, mx = 0;
    for (int64_t i = 0; i < n; i++) {
        double d = fabs(sh_f32(a)[i] - b[i]);
        md = d > md ? d : md;
        mx = fabs(b[i]) > mx ? fabs(b[i]) : mx;
    }
    printf("%s: %lld values, max |shrink - ort| %.6g (max |ort| %.4g)\n", pb, (long long)n, md, mx);
    sh_tensor_free(a); free(nm); free(b);
    return md <= tol ? 0 : 1;
}
