/* test_sparsify.c - Gemm with a packed sparse weight (ops/gemm_sparse.c) equals
 * dense Gemm on the unpacked weight; sh_sparsify packs pruned Gemm weights,
 * the saved ONNX file holds about the non-zeros and reloads with the same
 * outputs; measure keeps the faster of dense and sparse. */
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "test.h"

static uint32_t rng_next(uint32_t *s)
{
    *s = *s * 1664525u + 1013904223u;
    return *s >> 8;
}
static float rnd(uint32_t *s) { return (float)(rng_next(s) & 0xffff) / 32768.0f - 1.0f; }

/* Graph: y = Gemm(x [-1,K], W, b) with transB=1 (W [N,K]), optional Relu attr. */
static sh_graph *one_gemm(int64_t N, int64_t K, sh_tensor *W, int bias, int relu, uint32_t seed)
{
    sh_error e = {0};
    sh_graph *g = sh_graph_new("g");
    int64_t xs[2] = {-1, K};
    CHECK_OK(sh_graph_add_input(g, "x", SH_F32, 2, xs, &e), &e);
    CHECK_OK(sh_graph_add_init(g, "W", W, &e) < 0, &e);
    if (bias) {
        int64_t bs[1] = {N};
        sh_tensor *b = sh_tensor_new(SH_F32, 1, bs, &e);
        for (int64_t i = 0; i < N; i++) sh_f32(b)[i] = rnd(&seed);
        CHECK(sh_graph_add_init(g, "b", b, &e) >= 0);
    }
    const char *ins[3] = {"x", "W", "b"}, *outs[1] = {"y"};
    int k = sh_graph_add_node(g, "Gemm", "fc", bias ? 3 : 2, ins, 1, outs, &e);
    CHECK(k >= 0);
    sh_node_set_int(g, k, "transB", 1);
    if (relu) sh_node_set_string(g, k, "activation", "Relu");
    CHECK(sh_graph_mark_output(g, "y", &e) >= 0);
    CHECK_OK(sh_graph_check(g, &e), &e);
    return g;
}

/* dense [N,K] with sparsity sp (or 2:4 when nm) */
static float *sparse_weight(int64_t N, int64_t K, double sp, int nm, uint32_t seed)
{
    float *w = malloc(sizeof(float) * (size_t)(N * K));
    for (int64_t i = 0; i < N * K; i++) {
        float v = rnd(&seed);
        if (nm) w[i] = (i % 4 == (i / 4 + 1) % 4 || i % 4 == (i / 4 + 3) % 4) ? v : 0.0f;
        else w[i] = (double)(rng_next(&seed) & 0xffff) / 65536.0 < sp ? 0.0f : v;
    }
    return w;
}

/* run g on x [B, ...]; returns a malloc'ed copy of output 0 */
static float *run(sh_graph *g, const sh_tensor *x, int64_t *n, int nthreads)
{
    sh_error e = {0};
    sh_run_opts ro = {.nthreads = nthreads};
    sh_program *p = NULL;
    CHECK_OK(sh_program_new(g, &ro, &p, &e), &e);
    if (!p) return NULL;
    const sh_tensor *in[1] = {x};
    CHECK_OK(sh_program_run(p, in, 1, &e), &e);
    sh_tensor *y = sh_program_output(p, 0);
    float *r = NULL;
    if (y) {
        *n = sh_tensor_numel(y);
        r = malloc(sizeof(float) * (size_t)*n);
        memcpy(r, y->data, sizeof(float) * (size_t)*n);
    }
    sh_program_free(p);
    return r;
}

static double max_rel(const float *a, const float *b, int64_t n)
{
    double m = 0, s = 0;
    for (int64_t i = 0; i < n; i++) s = fmax(s, fabs((double)b[i]));
    for (int64_t i = 0; i < n; i++) m = fmax(m, fabs((double)a[i] - b[i]));
    return m / (s > 0 ? s : 1);
}

TEST(gemm_sparse_matches_dense_gemm)
{
    sh_error e = {0};
    const int64_t N = 96, K = 200;
    const sh_format fmts[3] = {SH_CSR, SH_BCSR, SH_NM};
    for (int f = 0; f < 3; f++)
        for (int bias = 0; bias < 2; bias++) {
            float *w = sparse_weight(N, K, 0.8, fmts[f] == SH_NM, 7u + (uint32_t)f);
            sh_tensor *sp = NULL;
            CHECK_OK(sh_sparse_pack(fmts[f], w, N, K, NULL, &sp, &e), &e);
            int64_t ws[2] = {N, K};
            sh_tensor *wd = sh_tensor_new(SH_F32, 2, ws, &e);
            CHECK_OK(sh_sparse_unpack(sp, sh_f32(wd), &e), &e);
            CHECK(memcmp(w, wd->data, sizeof(float) * (size_t)(N * K)) == 0);
            sh_graph *gs = one_gemm(N, K, sp, bias, bias, 99), *gd = one_gemm(N, K, wd, bias, bias, 99);
            const int64_t batches[2] = {1, 64};
            for (int bi = 0; bi < 2; bi++) {
                int64_t B = batches[bi], xs[2] = {B, K}, ns = 0, nd = 0;
                sh_tensor *x = sh_tensor_new(SH_F32, 2, xs, &e);
                uint32_t s = 5;
                for (int64_t i = 0; i < B * K; i++) sh_f32(x)[i] = rnd(&s);
                for (int nt = 1; nt <= 2; nt++) {
                    float *ys = run(gs, x, &ns, nt), *yd = run(gd, x, &nd, nt);
                    CHECK(ys && yd && ns == nd && ns == B * N);
                    if (ys && yd && ns == nd) {
                        double r = max_rel(ys, yd, ns);
                        CHECK_MSG(r <= 1e-5, "%s bias %d batch %lld threads %d: rel diff %g",
                                  sh_format_get(fmts[f])->name, bias, (long long)B, nt, r);
                    }
                    free(ys), free(yd);
                }
                sh_tensor_free(x);
            }
            sh_graph_free(gs), sh_graph_free(gd);
            free(w);
        }
}

TEST(gemm_sparse_errors)
{
    sh_error e = {0};
    float *w = sparse_weight(8, 16, 0.7, 0, 3);
    sh_tensor *sp = NULL;
    CHECK_OK(sh_sparse_pack(SH_CSR, w, 8, 16, NULL, &sp, &e), &e);
    sh_graph *g = one_gemm(8, 16, sp, 1, 0, 1);
    /* transB=0 with a packed weight: clear error, no crash */
    sh_node_set_int(g, 0, "transB", 0);
    sh_program *p = NULL;
    sh_run_opts ro = {.nthreads = 1};
    int64_t xs[2] = {2, 16};
    sh_tensor *x = sh_tensor_new(SH_F32, 2, xs, &e);
    const sh_tensor *in[1] = {x};
    int rc = sh_program_new(g, &ro, &p, &e);
    if (!rc) rc = sh_program_run(p, in, 1, &e);
    CHECK(rc != SH_OK);
    CHECK_MSG(strstr(e.msg, "transB=1") != NULL, "message: %s", e.msg);
    sh_program_free(p);
    p = NULL;
    /* training (backward) with a packed weight: clear error */
    sh_node_set_int(g, 0, "transB", 1);
    e = (sh_error){0};
    sh_run_opts tr = {.nthreads = 1, .training = 1};
    rc = sh_program_new(g, &tr, &p, &e);
    if (!rc) rc = sh_program_run(p, in, 1, &e);
    if (!rc) {
        int64_t ys[2] = {2, 8};
        sh_tensor *dy = sh_tensor_new(SH_F32, 2, ys, &e);
        for (int i = 0; i < 16; i++) sh_f32(dy)[i] = 1.0f;
        const sh_tensor *d[1] = {dy};
        rc = sh_program_backward(p, d, 1, &e);
        sh_tensor_free(dy);
    }
    CHECK(rc != SH_OK);
    CHECK_MSG(strstr(e.msg, "no backward") != NULL, "message: %s", e.msg);
    sh_program_free(p);
    sh_tensor_free(x);
    sh_graph_free(g);
    free(w);
}

static long file_size(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 ? (long)st.st_size : -1;
}

TEST(sparsify_mlp_pruned_90_file_and_outputs)
{
    sh_error e = {0};
    sh_graph *g = NULL, *p = NULL, *s = NULL, *r = NULL;
    CHECK_OK(sh_model_build("mlp", 0, &g, &e), &e);
    sh_prune_opts po;
    sh_prune_opts_default(&po);
    po.ratio = 0.9;
    po.global = 1;
    CHECK_OK(sh_prune(g, &po, &p, NULL, &e), &e);
    sh_sparsify_opts so;
    sh_sparsify_opts_default(&so);
    sh_sparsify_report rep;
    CHECK_OK(sh_sparsify(p, &so, &s, &rep, &e), &e);
    if (!s) return;
    CHECK(rep.n_layers == 3);
    CHECK(rep.packed >= 2);
    CHECK_MSG(rep.bytes_after < rep.bytes_before / 4, "weights %lld -> %lld bytes", (long long)rep.bytes_before,
              (long long)rep.bytes_after);
    char dpath[512], spath[512];
    snprintf(dpath, sizeof dpath, "%s/mlp_dense.onnx", sh_test_tmpdir());
    snprintf(spath, sizeof spath, "%s/mlp_packed.onnx", sh_test_tmpdir());
    CHECK_OK(sh_model_save(p, dpath, &e), &e);
    CHECK_OK(sh_model_save(s, spath, &e), &e);
    long fd = file_size(dpath), fs = file_size(spath);
    CHECK_MSG(fs > 0 && fs < fd / 4, "packed file %ld bytes, dense %ld", fs, fd);
    CHECK_OK(sh_model_load(spath, &r, &e), &e);
    const int64_t batches[2] = {1, 64};
    for (int bi = 0; bi < 2 && r; bi++) {
        int64_t xs[4] = {batches[bi], 1, 28, 28}, n1 = 0, n2 = 0, n3 = 0;
        sh_tensor *x = sh_tensor_new(SH_F32, 4, xs, &e);
        uint32_t sd = 11;
        for (int64_t i = 0; i < sh_tensor_numel(x); i++) sh_f32(x)[i] = rnd(&sd);
        float *yd = run(p, x, &n1, 1), *ys = run(s, x, &n2, 1), *yr = run(r, x, &n3, 1);
        CHECK(yd && ys && yr && n1 == n2 && n2 == n3);
        if (yd && ys && yr && n1 == n2 && n2 == n3) {
            CHECK_MSG(max_rel(ys, yd, n1) <= 1e-5, "packed vs dense rel %g", max_rel(ys, yd, n1));
            CHECK(memcmp(ys, yr, sizeof(float) * (size_t)n1) == 0); /* reload: identical */
        }
        free(yd), free(ys), free(yr);
        sh_tensor_free(x);
    }
    sh_sparsify_report_free(&rep);
    sh_graph_free(g), sh_graph_free(p), sh_graph_free(s), sh_graph_free(r);
}

TEST(sparsify_formats_threshold_measure)
{
    sh_error e = {0};
    /* 2:4 weight -> nm; 30% sparse weight stays dense; transB=0 is transposed */
    const int64_t N = 64, K = 128;
    float *w = sparse_weight(N, K, 0, 1, 3);
    int64_t ws[2] = {N, K};
    sh_tensor *wd = sh_tensor_new(SH_F32, 2, ws, &e);
    memcpy(wd->data, w, sizeof(float) * (size_t)(N * K));
    sh_graph *g = one_gemm(N, K, wd, 1, 0, 4), *s = NULL;
    sh_sparsify_opts so;
    sh_sparsify_opts_default(&so);
    sh_sparsify_report rep;
    CHECK_OK(sh_sparsify(g, &so, &s, &rep, &e), &e);
    CHECK(rep.n_layers == 1 && rep.layers[0].fmt == SH_NM);
    CHECK_NEAR(rep.layers[0].sparsity, 0.5, 1e-9);
    sh_sparsify_report_free(&rep);
    sh_graph_free(s);
    so.nm = 0;
    CHECK_OK(sh_sparsify(g, &so, &s, &rep, &e), &e);
    CHECK(rep.n_layers == 1 && (rep.layers[0].fmt == SH_CSR || rep.layers[0].fmt == SH_BCSR));
    sh_sparsify_report_free(&rep);
    sh_graph_free(s);
    so.min_sparsity = 0.6;
    CHECK_OK(sh_sparsify(g, &so, &s, &rep, &e), &e);
    CHECK(rep.n_layers == 1 && rep.layers[0].fmt == SH_F32 && rep.packed == 0);
    CHECK(strstr(rep.layers[0].note, "not sparse enough") != NULL);
    sh_sparsify_report_free(&rep);
    sh_graph_free(s);
    /* measure: times filled; the choice follows them */
    sh_sparsify_opts_default(&so);
    so.measure = 1, so.batch = 8, so.runs = 5, so.nthreads = 1;
    CHECK_OK(sh_sparsify(g, &so, &s, &rep, &e), &e);
    CHECK(rep.n_layers == 1 && rep.layers[0].dense_ms > 0 && rep.layers[0].sparse_ms > 0 &&
          rep.layers[0].dense_ms_b > 0 && rep.layers[0].sparse_ms_b > 0);
    if (rep.n_layers == 1) {
        const sh_sparsify_layer *L = &rep.layers[0];
        int sparse_faster = L->sparse_ms / L->dense_ms * (L->sparse_ms_b / L->dense_ms_b) < 1.0;
        CHECK(sparse_faster == (L->fmt != SH_F32));
    }
    sh_sparsify_report_free(&rep);
    sh_graph_free(s);
    sh_graph_free(g);

    /* transB=0: W stored [K, N]; packed transposed, node gets transB=1 */
    int64_t wt_s[2] = {K, N};
    sh_tensor *wt = sh_tensor_new(SH_F32, 2, wt_s, &e);
    for (int64_t a = 0; a < K; a++)
        for (int64_t b = 0; b < N; b++) sh_f32(wt)[a * N + b] = w[b * K + a];
    sh_graph *g2 = one_gemm(N, K, wt, 1, 1, 4);
    sh_node_set_int(g2, 0, "transB", 0);
    sh_sparsify_opts_default(&so);
    so.nm = 0;
    CHECK_OK(sh_sparsify(g2, &so, &s, &rep, &e), &e);
    CHECK(rep.packed == 1 && s && sh_attr_int(&s->nodes[0], "transB", 0) == 1);
    int64_t xs[2] = {3, K}, n1 = 0, n2 = 0;
    sh_tensor *x = sh_tensor_new(SH_F32, 2, xs, &e);
    uint32_t sd = 2;
    for (int64_t i = 0; i < 3 * K; i++) sh_f32(x)[i] = rnd(&sd);
    float *y1 = run(g2, x, &n1, 1), *y2 = s ? run(s, x, &n2, 1) : NULL;
    CHECK(y1 && y2 && n1 == n2 && max_rel(y2, y1, n1) <= 1e-5);
    free(y1), free(y2);
    sh_tensor_free(x);
    sh_sparsify_report_free(&rep);
    sh_graph_free(s);
    sh_graph_free(g2);
    free(w);
}

TEST(sparsify_llama_tiny_runs_like_dense)
{
    /* Llama linear layers ([N,K], transB=1) packed after 90 % pruning: same
     * logits as the pruned dense model; the tied output weight stays f32 */
    sh_error e = {0};
    sh_graph *g = NULL, *p = NULL, *s = NULL;
    CHECK_OK(sh_model_build("llama-tiny", 5, &g, &e), &e);
    sh_prune_opts po;
    sh_prune_opts_default(&po);
    po.ratio = 0.9;
    CHECK_OK(sh_prune(g, &po, &p, NULL, &e), &e);
    sh_sparsify_report rep;
    CHECK_OK(sh_sparsify(p, NULL, &s, &rep, &e), &e);
    if (!s) return;
    CHECK_MSG(rep.packed == 28, "packed %d", rep.packed);
    CHECK(rep.bytes_after * 3 < rep.bytes_before);
    int64_t ts[2] = {1, 9};
    sh_tensor *x = sh_tensor_new(SH_I64, 2, ts, &e);
    for (int i = 0; i < 9; i++) ((int64_t *)x->data)[i] = (i * 37 + 11) % 256;
    int64_t n1 = 0, n2 = 0;
    float *yd = run(p, x, &n1, 1), *ys = run(s, x, &n2, 2);
    CHECK(yd && ys && n1 == n2 && n1 > 0);
    if (yd && ys && n1 == n2) CHECK_MSG(max_rel(ys, yd, n1) <= 1e-5, "rel %g", max_rel(ys, yd, n1));
    free(yd), free(ys);
    sh_tensor_free(x);
    sh_sparsify_report_free(&rep);
    sh_graph_free(g), sh_graph_free(p), sh_graph_free(s);
}

TEST(gemm_sparse_alpha_beta_full_c)
{
    /* alpha, beta and a full [M,N] C: alpha * x W^T + beta * C, as dense Gemm */
    sh_error e = {0};
    const int64_t N = 24, K = 40, M = 5;
    float *w = sparse_weight(N, K, 0.75, 0, 9);
    sh_tensor *sp = NULL;
    CHECK_OK(sh_sparse_pack(SH_CSR, w, N, K, NULL, &sp, &e), &e);
    int64_t ws[2] = {N, K}, cs[2] = {M, N}, xs[2] = {M, K};
    sh_tensor *wd = sh_tensor_new(SH_F32, 2, ws, &e);
    memcpy(wd->data, w, sizeof(float) * (size_t)(N * K));
    sh_graph *gg[2];
    for (int t = 0; t < 2; t++) {
        sh_graph *g = sh_graph_new("g");
        CHECK_OK(sh_graph_add_input(g, "x", SH_F32, 2, xs, &e), &e);
        CHECK(sh_graph_add_init(g, "W", t ? wd : sp, &e) >= 0);
        sh_tensor *c = sh_tensor_new(SH_F32, 2, cs, &e);
        uint32_t s = 17;
        for (int64_t i = 0; i < M * N; i++) sh_f32(c)[i] = rnd(&s);
        CHECK(sh_graph_add_init(g, "C", c, &e) >= 0);
        const char *ins[3] = {"x", "W", "C"}, *outs[1] = {"y"};
        int k = sh_graph_add_node(g, "Gemm", "fc", 3, ins, 1, outs, &e);
        sh_node_set_int(g, k, "transB", 1);
        sh_node_set_float(g, k, "alpha", 0.5f);
        sh_node_set_float(g, k, "beta", 2.0f);
        CHECK(sh_graph_mark_output(g, "y", &e) >= 0);
        CHECK_OK(sh_graph_check(g, &e), &e);
        gg[t] = g;
    }
    sh_tensor *x = sh_tensor_new(SH_F32, 2, xs, &e);
    uint32_t s = 3;
    for (int64_t i = 0; i < M * K; i++) sh_f32(x)[i] = rnd(&s);
    int64_t n1 = 0, n2 = 0;
    float *ys = run(gg[0], x, &n1, 1), *yd = run(gg[1], x, &n2, 1);
    CHECK(ys && yd && n1 == n2 && n1 == M * N);
    if (ys && yd && n1 == n2) CHECK_MSG(max_rel(ys, yd, n1) <= 1e-5, "rel %g", max_rel(ys, yd, n1));
    free(ys), free(yd), free(w);
    sh_tensor_free(x);
    sh_graph_free(gg[0]), sh_graph_free(gg[1]);
}
