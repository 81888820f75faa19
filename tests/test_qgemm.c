/* test_qgemm.c - integer kernels: every SIMD path against the C reference
 * (int8 GEMM bit-exact in every epilogue; low-bit weight GEMM within float
 * rounding), odd shapes, threads, bad arguments. */
#include <stdlib.h>
#include <string.h>

#include "test.h"
#include "ops/qgemm.h"

static uint64_t rs = 0x2545f4914f6cdd1dull;
static uint32_t rnd(void)
{
    rs ^= rs << 13; rs ^= rs >> 7; rs ^= rs << 17;
    return (uint32_t)(rs >> 32);
}
static float frand(void) { return (float)(rnd() >> 8) * (1.0f / (1 << 24)) * 2.0f - 1.0f; }

static int levels(int *lv)
{
    int best = sh_cpu_level(), n = 0;
    for (int l = SH_CPU_REF; l <= best; l++) lv[n++] = l;
    return n;
}

/* naive C = sum (a - za) * b */
static void naive(const void *A, int sgn, int M, int K, int lda, const int8_t *B, int N, int za, int32_t *C)
{
    for (int m = 0; m < M; m++)
        for (int n = 0; n < N; n++) {
            int32_t s = 0;
            for (int k = 0; k < K; k++) {
                int a = sgn ? ((const int8_t *)A)[m * lda + k] : ((const uint8_t *)A)[m * lda + k];
                s += (a - za) * B[n * K + k];
            }
            C[m * N + n] = s;
        }
}

TEST(qgemm_int8_paths_bitexact)
{
    int shapes[][3] = {{1, 1, 1}, {3, 17, 5}, {8, 48, 64}, {13, 50, 33}, {9, 97, 259}, {64, 96, 128}, {33, 200, 70}, {257, 49, 31},
                       {1, 70, 259}, {1, 130, 64}, {1, 64, 6}, {1, 200, 1024}}; /* M = 1: the GEMV path */
    int lv[3], nl = levels(lv);
    sh_error err = {0};
    for (size_t s = 0; s < sizeof shapes / sizeof *shapes; s++) {
        int M = shapes[s][0], N = shapes[s][1], K = shapes[s][2], lda = K + (s & 1) * 3;
        uint8_t *A = malloc((size_t)M * lda);
        int8_t *B = malloc((size_t)N * K);
        for (int i = 0; i < M * lda; i++) A[i] = (uint8_t)rnd();
        for (int i = 0; i < N * K; i++) B[i] = (int8_t)rnd();
        if (s == 2) { memset(A, 255, (size_t)M * lda); memset(B, 0x80, (size_t)N * K); } /* extreme values */
        float *bs = malloc(N * sizeof(float)), *bias = malloc(N * sizeof(float));
        for (int n = 0; n < N; n++) { bs[n] = 0.001f + 0.01f * fabsf(frand()); bias[n] = frand(); }
        int32_t *want = malloc((size_t)M * N * 4);
        for (int sgn = 0; sgn < 2; sgn++) {
            int za = sgn ? (int)(s % 3) - 1 : (int)(s * 37 % 256);
            naive(A, sgn, M, K, lda, B, N, za, want);
            int32_t *ci[3];
            float *cf[3];
            uint8_t *cu[3];
            int8_t *cs[3];
            for (int l = 0; l < nl; l++) {
                sh_qgemm_b *pb = NULL;
                CHECK_OK(sh_qgemm_pack_b(B, N, K, K, lv[l], &pb, &err), &err);
                if (!pb) return;
                CHECK(pb->level == lv[l]);
                ci[l] = malloc((size_t)M * N * 4);
                cf[l] = malloc((size_t)M * N * 4);
                cu[l] = malloc((size_t)M * N);
                cs[l] = malloc((size_t)M * N);
                sh_qgemm_epi e = {SH_I32, za, 0.02f, bs, bias, 0, 0, 0};
                CHECK_OK(sh_qgemm(A, sgn, M, lda, pb, &e, ci[l], N, 1 + (l & 1), &err), &err);
                e.out = SH_F32;
                e.relu = 1;
                CHECK_OK(sh_qgemm(A, sgn, M, lda, pb, &e, cf[l], N, 2, &err), &err);
                e.out = SH_U8;
                e.relu = 0;
                e.y_scale = 0.05f;
                e.y_zero = 100;
                CHECK_OK(sh_qgemm(A, sgn, M, lda, pb, &e, cu[l], N, 1, &err), &err);
                e.out = SH_I8;
                e.y_zero = -3;
                e.bias = NULL;
                e.b_scale = NULL;
                e.a_scale = 1e-4f;
                CHECK_OK(sh_qgemm(A, sgn, M, lda, pb, &e, cs[l], N, 2, &err), &err);
                sh_qgemm_b_free(pb);
                int bad = 0;
                for (int i = 0; i < M * N && bad < 3; i++)
                    if (ci[l][i] != want[i]) {
                        bad++;
                        sh_test_fail(__FILE__, __LINE__, "level %s M%d N%d K%d sgn%d: C[%d] = %d, want %d",
                                     sh_cpu_level_name(lv[l]), M, N, K, sgn, i, ci[l][i], want[i]);
                    }
                if (l > 0) {
                    CHECK_MSG(memcmp(cf[l], cf[0], (size_t)M * N * 4) == 0, "f32 epilogue differs: %s M%d N%d K%d", sh_cpu_level_name(lv[l]), M, N, K);
                    CHECK_MSG(memcmp(cu[l], cu[0], (size_t)M * N) == 0, "u8 epilogue differs: %s M%d N%d K%d", sh_cpu_level_name(lv[l]), M, N, K);
                    CHECK_MSG(memcmp(cs[l], cs[0], (size_t)M * N) == 0, "s8 epilogue differs: %s M%d N%d K%d", sh_cpu_level_name(lv[l]), M, N, K);
                }
            }
            /* the reference epilogue against the formula */
            for (int i = 0; i < M * N; i++) {
                int n = i % N;
                float y = (float)want[i] * (0.02f * bs[n]) + bias[n];
                CHECK(cf[0][i] == (y > 0 ? y : 0.0f));
                float q = nearbyintf(y / 0.05f) + 100;
                q = q < 0 ? 0 : q > 255 ? 255 : q;
                CHECK(fabsf((float)cu[0][i] - q) <= 1.0f); /* y / s vs y * (1/s) may differ by one step */
            }
            for (int l = 0; l < nl; l++) { free(ci[l]); free(cf[l]); free(cu[l]); free(cs[l]); }
        }
        free(A); free(B); free(bs); free(bias); free(want);
    }
}

/* forcing the level through SHRINK_CPU changes the packed layout */
TEST(qgemm_env_override)
{
    sh_error err = {0};
    int8_t B[3 * 5] = {1, 2, 3, 4, 5, -1, -2, -3, -4, -5, 127, -128, 0, 1, -1};
    uint8_t A[2 * 5] = {1, 2, 3, 4, 5, 255, 0, 128, 7, 9};
    int32_t C[6], W[6];
    naive(A, 0, 2, 5, 5, B, 3, 0, W);
    const char *names[] = {"ref", "avx2", "avx512"};
    for (int i = 0; i < 3; i++) {
        setenv("SHRINK_CPU", names[i], 1);
        sh_qgemm_b *pb = NULL;
        CHECK_OK(sh_qgemm_pack_b(B, 3, 5, 5, -1, &pb, &err), &err);
        CHECK(pb && pb->level == sh_cpu_level() && pb->level <= i);
        sh_qgemm_epi e = {SH_I32, 0, 1, NULL, NULL, 0, 0, 0};
        CHECK_OK(sh_qgemm(A, 0, 2, 5, pb, &e, C, 3, 1, &err), &err);
        CHECK(memcmp(C, W, sizeof C) == 0);
        sh_qgemm_b_free(pb);
    }
    unsetenv("SHRINK_CPU");
}

TEST(qgemm_bad_args)
{
    sh_error err = {0};
    int8_t B[4] = {0};
    sh_qgemm_b *pb = NULL;
    CHECK(sh_qgemm_pack_b(B, 0, 4, 4, -1, &pb, &err) == SH_EINVAL && pb == NULL);
    CHECK(strstr(err.msg, "qgemm") != NULL);
    CHECK_OK(sh_qgemm_pack_b(B, 1, 4, 4, -1, &pb, &err), &err);
    uint8_t A[4] = {0};
    int32_t C[1];
    sh_qgemm_epi e = {SH_BOOL, 0, 1, NULL, NULL, 0, 0, 0};
    CHECK(sh_qgemm(A, 0, 1, 4, pb, &e, C, 1, 1, &err) == SH_EUNSUPPORTED);
    e.out = SH_U8;
    CHECK(sh_qgemm(A, 0, 1, 4, pb, &e, C, 1, 1, &err) == SH_EINVAL); /* y_scale 0 */
    e.out = SH_I32;
    CHECK(sh_qgemm(A, 0, 1, 2, pb, &e, C, 1, 1, &err) == SH_EINVAL); /* lda < K */
    sh_qgemm_b_free(pb);
    float x[40] = {0}, y[2];
    unsigned char w[64] = {0};
    CHECK(sh_qmatmul(x, 1, w, SH_Q4_0, 1, 40, NULL, y, 1, -1, &err) == SH_ESHAPE);
    CHECK(strstr(err.msg, "multiple of 32") != NULL);
    CHECK(sh_qmatmul(x, 1, w, SH_F32, 1, 32, NULL, y, 1, -1, &err) == SH_EUNSUPPORTED);
}

static void lowbit_case(sh_format f, int M, int N, int K, int nthreads)
{
    const sh_format_traits *ft = sh_format_get(f);
    float *wf = malloc((size_t)N * K * 4), *x = malloc((size_t)M * K * 4), *bias = malloc(N * 4);
    for (int i = 0; i < N * K; i++) wf[i] = frand() * (1.0f + (float)((i / 32) % 5)) + ((i / 32) % 4 == 1 ? 0.7f : 0.0f);
    for (int i = 0; i < M * K; i++) x[i] = frand() * 2.0f;
    for (int n = 0; n < N; n++) bias[n] = frand();
    size_t rb = sh_format_bytes(f, K);
    unsigned char *w = malloc(rb * N);
    for (int n = 0; n < N; n++) ft->from_f32(wf + (size_t)n * K, w + rb * n, K);
    float *deq = malloc((size_t)N * K * 4);
    for (int n = 0; n < N; n++) ft->to_f32(w + rb * n, deq + (size_t)n * K, K);
    /* x quantized to q8_0 too: the exact value of what the kernels compute */
    float *xd = malloc((size_t)M * K * 4);
    unsigned char *xq = malloc(sh_format_bytes(SH_Q8_0, K));
    for (int m = 0; m < M; m++) {
        sh_q8_0_from_f32(x + (size_t)m * K, xq, K);
        sh_q8_0_to_f32(xq, xd + (size_t)m * K, K);
    }
    int lv[3], nl = levels(lv);
    float *y[8];
    sh_error err = {0};
    for (int l = 0; l < nl; l++) {
        y[l] = malloc((size_t)M * N * 4);
        CHECK_OK(sh_qmatmul(x, M, w, f, N, K, bias, y[l], nthreads, lv[l], &err), &err);
    }
    /* prepared weights: packed (16-row interleave) at avx512, row format
     * below; the packed layout also read by the portable fallback */
    int nq = 0;
    for (int l = 0; l < nl; l++) {
        sh_qweight *qw = NULL;
        CHECK_OK(sh_qweight_new(w, f, N, K, lv[l], &qw, &err), &err);
        if (!qw) break;
        CHECK(qw->packed == (lv[l] == SH_CPU_LEVEL_AVX512));
        if (qw->packed) { /* same bits per weight (an odd last block of a symmetric format: padded to a pair) */
            int64_t nb = K / 32, nch = (nb + qw->spc - 1) / qw->spc;
            CHECK(qw->bytes == (size_t)((N + 15) / 16 * nch * qw->chunk));
            if (nb % qw->spc == 0) CHECK(qw->bytes == (size_t)((N + 15) / 16 * 16) * rb);
        }
        y[nl + nq] = malloc((size_t)M * N * 4);
        CHECK_OK(sh_qweight_matmul(x, M, qw, bias, y[nl + nq], nthreads, &err), &err);
        nq++;
        if (qw->packed) {
            setenv("SHRINK_CPU", "ref", 1);
            y[nl + nq] = malloc((size_t)M * N * 4);
            CHECK_OK(sh_qweight_matmul(x, M, qw, bias, y[nl + nq], nthreads, &err), &err);
            nq++;
            unsetenv("SHRINK_CPU");
        }
        sh_qweight_free(qw);
    }
    int lvq[8];
    for (int i = 0; i < nl; i++) lvq[i] = lv[i];
    for (int i = 0; i < nq; i++) lvq[nl + i] = i < nl ? lv[i] : SH_CPU_REF;
    nl += nq;
    int bad = 0;
    for (int m = 0; m < M; m++)
        for (int n = 0; n < N; n++) {
            double want = bias[n], mag = fabs(bias[n]), exact = bias[n];
            for (int k = 0; k < K; k++) {
                want += (double)deq[(size_t)n * K + k] * xd[(size_t)m * K + k];
                mag += fabs((double)deq[(size_t)n * K + k] * xd[(size_t)m * K + k]);
                exact += (double)deq[(size_t)n * K + k] * x[(size_t)m * K + k];
            }
            for (int l = 0; l < nl; l++) {
                double got = y[l][m * N + n], tol = 2e-5 * mag + 1e-5;
                if (!(fabs(got - want) <= tol) && bad++ < 4)
                    sh_test_fail(__FILE__, __LINE__, "%s case %d (level %s) M%d N%d K%d: y[%d,%d] = %.7g, want %.7g (tol %.3g)", ft->name,
                                 l, sh_cpu_level_name(lvq[l]), M, N, K, m, n, got, want, tol);
            }
            /* and close to the f32 product with dequantized weights (q8 activations: ~1/254 relative per block) */
            CHECK_NEAR(y[0][m * N + n], exact, 0.01 * mag + 1e-4);
        }
    for (int l = 0; l < nl; l++) free(y[l]);
    free(wf); free(x); free(bias); free(w); free(deq); free(xd); free(xq);
}

TEST(qgemm_lowbit_paths)
{
    sh_format fs[] = {SH_Q4_0, SH_Q4_1, SH_Q8_0, SH_Q3_0, SH_Q2_1, SH_LOG4};
    int shapes[][3] = {{1, 1, 32}, {1, 7, 96}, {3, 67, 256}, {2, 130, 64}, {5, 9, 32 * 13}, {9, 33, 160}};
    for (size_t i = 0; i < sizeof fs / sizeof *fs; i++)
        for (size_t s = 0; s < sizeof shapes / sizeof *shapes; s++)
            lowbit_case(fs[i], shapes[s][0], shapes[s][1], shapes[s][2], 1 + (int)(s & 1));
}

TEST(qgemm_lowbit_threads_same)
{
    int N = 300, K = 512, M = 2;
    float *wf = malloc((size_t)N * K * 4), x[2 * 512], y1[600], y2[600];
    for (int i = 0; i < N * K; i++) wf[i] = frand();
    for (int i = 0; i < M * K; i++) x[i] = frand();
    size_t rb = sh_format_bytes(SH_Q4_0, K);
    unsigned char *w = malloc(rb * N);
    sh_q4_0_from_f32(wf, w, (int64_t)N * K);
    sh_error err = {0};
    CHECK_OK(sh_qmatmul(x, M, w, SH_Q4_0, N, K, NULL, y1, 1, -1, &err), &err);
    CHECK_OK(sh_qmatmul(x, M, w, SH_Q4_0, N, K, NULL, y2, 2, -1, &err), &err);
    CHECK(memcmp(y1, y2, sizeof y1) == 0);
    free(wf);
    free(w);
}

TEST(qgemm_compute_traits)
{
    sh_format fs[] = {SH_Q4_0, SH_Q4_1, SH_Q8_0, SH_Q3_0, SH_Q2_1, SH_LOG4};
    int bits[] = {4, 4, 8, 3, 2, 4};
    for (int i = 0; i < 6; i++) {
        const sh_qcompute *c = sh_qcompute_get(fs[i]);
        CHECK(c && c->vec_dot_type == SH_Q8_0 && c->bits == bits[i]);
        /* the offset agrees with the block unpacker of the storage row */
        unsigned char blk[64] = {0};
        uint8_t u[32];
        float d, m;
        CHECK(c && sh_qblock_unpack(fs[i], blk, u, &d, &m) == c->off);
    }
    CHECK(sh_qcompute_get(SH_F32) == NULL && sh_qcompute_get(SH_I8) == NULL);
}

/* ---- one scale per 64 / 128 / row / tensor: prepared weights at their own
 * size, every level and the portable reader of the packed layout against the
 * exact dot of the dequantized weight with the q8_0 activations */
static void grouped_case(sh_format f, int M, int N, int K, int nthreads)
{
    const sh_format_traits *ft = sh_format_get(f);
    float *wf = malloc((size_t)N * K * 4), *x = malloc((size_t)M * K * 4), *bias = malloc(N * 4);
    for (int i = 0; i < N * K; i++)
        wf[i] = frand() * (1.0f + (float)((i / K) % 5)) + ((i / 32) % 4 == 1 ? 0.7f : 0.0f);
    for (int i = 0; i < M * K; i++) x[i] = frand() * 2.0f;
    for (int n = 0; n < N; n++) bias[n] = frand();
    sh_error err = {0};
    sh_tensor *t = NULL;
    const void *w;
    size_t file_bytes;
    unsigned char *wg = NULL;
    if (ft->packed) {
        CHECK_OK(sh_qrows_quantize(f, wf, N, K, &t, &err), &err);
        if (!t) return;
        w = t->data;
        file_bytes = t->nbytes;
    } else {
        size_t rb = sh_format_bytes(f, K);
        wg = malloc(rb * N);
        for (int n = 0; n < N; n++) ft->from_f32(wf + (size_t)n * K, wg + rb * n, K);
        w = wg;
        file_bytes = rb * N;
    }
    float *deq = malloc((size_t)N * K * 4);
    if (t) sh_qtensor_to_f32(t, deq, &err);
    else
        for (int n = 0; n < N; n++) ft->to_f32(wg + sh_format_bytes(f, K) * n, deq + (size_t)n * K, K);
    float *xd = malloc((size_t)M * K * 4);
    unsigned char *xq = malloc(sh_format_bytes(SH_Q8_0, K));
    for (int m = 0; m < M; m++) {
        sh_q8_0_from_f32(x + (size_t)m * K, xq, K);
        sh_q8_0_to_f32(xq, xd + (size_t)m * K, K);
    }
    int lv[3], nl = levels(lv), ny = 0, lvy[16];
    float *y[16];
    for (int l = 0; l < nl; l++) {
        sh_qweight *qw = NULL;
        CHECK_OK(sh_qweight_new(w, f, N, K, lv[l], &qw, &err), &err);
        if (!qw) break;
        if (qw->packed) {
            /* memory: the file's bytes (codes + one scale per group), plus 16-row padding */
            size_t pad_rows = (size_t)((N + 15) / 16 * 16);
            int bits = qw->cb / 64;
            int64_t nsg = K / 32 / qw->gblk, nsgp = (nsg + qw->spc - 1) / qw->spc * qw->spc; /* odd: one padded group */
            CHECK(qw->bytes == pad_rows * (size_t)(K + (nsgp - nsg) * 32 * qw->gblk) * bits / 8 +
                                   (size_t)(qw->hdr * nsgp) * pad_rows / 16);
            CHECK((qw->chunk & 63) == 0 && qw->spc == (qw->gblk > 1 && qw->hdr == 32 ? 2 : 1));
            /* _ch: at most the file; _t: the file's single scale repeated per row (8 bytes a row at most) */
            if (N % 16 == 0 && ft->packed) CHECK(qw->bytes <= file_bytes + (f >= SH_Q4_0_T ? 8 * (size_t)N : 0));
            if (N % 16 == 0 && !ft->packed && nsg == nsgp) CHECK(qw->bytes == file_bytes);
        }
        y[ny] = malloc((size_t)M * N * 4);
        lvy[ny] = lv[l];
        CHECK_OK(sh_qweight_matmul(x, M, qw, bias, y[ny++], nthreads, &err), &err);
        if (qw->packed && lv[l] == SH_CPU_LEVEL_AVX512) { /* 4 rows at a time = row by row, bit for bit */
            float *y1 = malloc((size_t)N * 4);
            for (int64_t m = 0; m < M; m++) {
                CHECK_OK(sh_qweight_matmul(x + m * K, 1, qw, bias, y1, 1, &err), &err);
                CHECK_MSG(!memcmp(y1, y[ny - 1] + m * N, (size_t)N * 4), "%s M %d row %lld: the 4-row kernel differs",
                          sh_format_get(f)->name, M, (long long)m);
            }
            free(y1);
        }
        if (qw->packed) /* the packed layout read by the portable and the AVX2 reader too */
            for (int rl = SH_CPU_REF; rl <= SH_CPU_LEVEL_AVX2 && rl <= sh_cpu_level(); rl++) {
                setenv("SHRINK_CPU", rl ? "avx2" : "ref", 1);
                y[ny] = malloc((size_t)M * N * 4);
                lvy[ny] = rl;
                CHECK_OK(sh_qweight_matmul(x, M, qw, bias, y[ny++], nthreads, &err), &err);
                unsetenv("SHRINK_CPU");
            }
        sh_qweight_free(qw);
    }
    int bad = 0;
    for (int m = 0; m < M; m++)
        for (int n = 0; n < N; n++) {
            double want = bias[n], mag = fabs(bias[n]);
            for (int k = 0; k < K; k++) {
                want += (double)deq[(size_t)n * K + k] * xd[(size_t)m * K + k];
                mag += fabs((double)deq[(size_t)n * K + k] * xd[(size_t)m * K + k]);
            }
            for (int l = 0; l < ny; l++) {
                double got = y[l][m * N + n], tol = 2e-5 * mag + 1e-5;
                if (!(fabs(got - want) <= tol) && bad++ < 4)
                    sh_test_fail(__FILE__, __LINE__, "%s case %d (level %s) M%d N%d K%d: y[%d,%d] = %.7g, want %.7g (tol %.3g)",
                                 ft->name, l, sh_cpu_level_name(lvy[l]), M, N, K, m, n, got, want, tol);
            }
        }
    for (int l = 0; l < ny; l++) free(y[l]);
    sh_tensor_free(t);
    free(wg); free(wf); free(x); free(bias); free(deq); free(xd); free(xq);
}

TEST(qgemm_grouped_rows_paths)
{
    sh_format base[] = {SH_Q4_0, SH_Q4_1, SH_Q8_0, SH_Q3_0, SH_Q2_1, SH_LOG4};
    int shapes[][3] = {{1, 1, 128}, {1, 7, 256}, {3, 67, 384}, {2, 32, 128}, {5, 9, 128 * 5}};
    for (int i = 0; i < 6; i++) {
        sh_format fs[4] = {(sh_format)sh_qgroup_format(base[i], 64), (sh_format)sh_qgroup_format(base[i], 128),
                           (sh_format)sh_qrows_format(base[i], 0), (sh_format)sh_qrows_format(base[i], 1)};
        for (int j = 0; j < 4; j++)
            for (size_t s = 0; s < sizeof shapes / sizeof *shapes; s++)
                grouped_case(fs[j], shapes[s][0], shapes[s][1], shapes[s][2], 1 + (int)(s & 1));
    }
}

/* a _ch weight whose header disagrees with the shape is refused */
TEST(qgemm_rows_bad_header)
{
    float wf[64 * 4];
    for (int i = 0; i < 256; i++) wf[i] = frand();
    sh_tensor *t = NULL;
    sh_error err = {0};
    CHECK_OK(sh_qrows_quantize(SH_Q4_0_CH, wf, 4, 64, &t, &err), &err);
    if (!t) return;
    sh_qweight *qw = NULL;
    CHECK(sh_qweight_new(t->data, SH_Q4_0_CH, 4, 32, -1, &qw, &err) == SH_EFORMAT && !qw);
    CHECK(sh_qweight_new(t->data, SH_Q4_0_T, 4, 64, -1, &qw, &err) == SH_EFORMAT && !qw);
    CHECK(sh_qweight_new(t->data, SH_Q4_0_CH, 4, 48, -1, &qw, &err) == SH_ESHAPE && !qw);
    sh_tensor_free(t);
}
