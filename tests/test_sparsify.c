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

/* ---- Conv with a packed sparse weight (ops/conv_sparse.c) ---------------- */

#include "ops/conv_sparse.h"

typedef struct conv_case {
    int nsp;                           /* 1 or 2 spatial dims */
    int64_t C, M, H, W, kh, kw, sh, sw, dh, dw, G;
    int64_t pads[4];                   /* top, left, bottom, right */
} conv_case;

/* Graph: y = Conv(x, W, b); W dense [M, Cg, kh, kw] or packed [M, Kc] */
static sh_graph *one_conv(const conv_case *c, sh_tensor *W, const float *bias, int relu)
{
    sh_error e = {0};
    sh_graph *g = sh_graph_new("g");
    int64_t xs[4] = {-1, c->C, c->H, c->W}, xs1[3] = {-1, c->C, c->W};
    CHECK_OK(sh_graph_add_input(g, "x", SH_F32, c->nsp + 2, c->nsp == 2 ? xs : xs1, &e), &e);
    CHECK(sh_graph_add_init(g, "W", W, &e) >= 0);
    if (bias) {
        int64_t bs[1] = {c->M};
        sh_tensor *b = sh_tensor_new(SH_F32, 1, bs, &e);
        memcpy(b->data, bias, sizeof(float) * (size_t)c->M);
        CHECK(sh_graph_add_init(g, "b", b, &e) >= 0);
    }
    const char *ins[3] = {"x", "W", "b"}, *outs[1] = {"y"};
    int k = sh_graph_add_node(g, "Conv", "conv", bias ? 3 : 2, ins, 1, outs, &e);
    CHECK(k >= 0);
    if (c->nsp == 2) {
        int64_t ks[2] = {c->kh, c->kw}, st[2] = {c->sh, c->sw}, dl[2] = {c->dh, c->dw};
        int64_t pd[4] = {c->pads[0], c->pads[1], c->pads[2], c->pads[3]};
        sh_node_set_ints(g, k, "kernel_shape", 2, ks);
        sh_node_set_ints(g, k, "strides", 2, st);
        sh_node_set_ints(g, k, "dilations", 2, dl);
        sh_node_set_ints(g, k, "pads", 4, pd);
    } else {
        int64_t ks[1] = {c->kw}, st[1] = {c->sw}, dl[1] = {c->dw}, pd[2] = {c->pads[1], c->pads[3]};
        sh_node_set_ints(g, k, "kernel_shape", 1, ks);
        sh_node_set_ints(g, k, "strides", 1, st);
        sh_node_set_ints(g, k, "dilations", 1, dl);
        sh_node_set_ints(g, k, "pads", 2, pd);
    }
    sh_node_set_int(g, k, "group", c->G);
    if (relu) sh_node_set_string(g, k, "activation", "Relu");
    CHECK(sh_graph_mark_output(g, "y", &e) >= 0);
    CHECK_OK(sh_graph_check(g, &e), &e);
    return g;
}

static const conv_case conv_cases[] = {
    {2, 3, 8, 9, 7, 3, 3, 1, 1, 1, 1, 1, {1, 1, 1, 1}},     /* 3x3 same */
    {2, 4, 6, 8, 9, 3, 3, 2, 2, 1, 1, 1, {1, 1, 1, 1}},     /* stride 2: im2col source */
    {2, 4, 5, 10, 9, 3, 2, 1, 1, 2, 1, 1, {2, 0, 1, 1}},    /* dilation, uneven pads */
    {2, 6, 6, 7, 7, 3, 3, 1, 1, 1, 1, 2, {0, 0, 0, 0}},     /* groups, no pads */
    {1, 3, 5, 1, 20, 1, 5, 1, 1, 1, 1, 1, {0, 2, 0, 2}},    /* 1-D */
    {2, 64, 64, 7, 7, 3, 3, 1, 1, 1, 1, 1, {1, 1, 1, 1}},   /* the cnn's residual block */
    {2, 1, 32, 28, 28, 3, 3, 1, 1, 1, 1, 1, {1, 1, 1, 1}},  /* the cnn's first layer */
};

TEST(conv_sparse_matches_dense_conv)
{
    sh_error e = {0};
    const sh_format fmts[3] = {SH_CSR, SH_BCSR, SH_NM};
    for (size_t ci = 0; ci < sizeof conv_cases / sizeof *conv_cases; ci++) {
        const conv_case *c = &conv_cases[ci];
        int64_t Cg = c->C / c->G, Kc = Cg * c->kh * c->kw;
        for (int f = 0; f < 3; f++) {
            if (fmts[f] == SH_NM && Kc % 4) continue;
            float *w = sparse_weight(c->M, Kc, 0.9, fmts[f] == SH_NM, 21u + (uint32_t)(ci * 3 + f));
            float bias[64];
            uint32_t sb = 8;
            for (int i = 0; i < 64; i++) bias[i] = rnd(&sb);
            for (int variant = 0; variant < 2; variant++) { /* 0: no bias, no relu; 1: bias + relu */
                sh_tensor *sp = NULL;
                sh_sparse_opts so = {.block = 4};
                CHECK_OK(sh_sparse_pack(fmts[f], w, c->M, Kc, &so, &sp, &e), &e);
                int64_t ws4[4] = {c->M, Cg, c->kh, c->kw}, ws3[3] = {c->M, Cg, c->kw};
                sh_tensor *wd = sh_tensor_new(SH_F32, c->nsp + 2, c->nsp == 2 ? ws4 : ws3, &e);
                memcpy(wd->data, w, sizeof(float) * (size_t)(c->M * Kc));
                sh_graph *gs = one_conv(c, sp, variant ? bias : NULL, variant),
                         *gd = one_conv(c, wd, variant ? bias : NULL, variant);
                for (int64_t B = 1; B <= 3; B += 2) {
                    int64_t xs[4] = {B, c->C, c->H, c->W}, xs1[3] = {B, c->C, c->W}, ns = 0, nd = 0;
                    sh_tensor *x = sh_tensor_new(SH_F32, c->nsp + 2, c->nsp == 2 ? xs : xs1, &e);
                    uint32_t s = 5;
                    for (int64_t i = 0; i < sh_tensor_numel(x); i++) sh_f32(x)[i] = rnd(&s);
                    for (int nt = 1; nt <= 2; nt++) {
                        float *ys = run(gs, x, &ns, nt), *yd = run(gd, x, &nd, nt);
                        CHECK(ys && yd && ns == nd && ns > 0);
                        if (ys && yd && ns == nd) {
                            double r = max_rel(ys, yd, ns);
                            CHECK_MSG(r <= 1e-5, "case %zu %s variant %d batch %lld threads %d: rel diff %g", ci,
                                      sh_format_get(fmts[f])->name, variant, (long long)B, nt, r);
                        }
                        free(ys), free(yd);
                    }
                    sh_tensor_free(x);
                }
                sh_graph_free(gs), sh_graph_free(gd);
            }
            free(w);
        }
    }
}

/* The portable, AVX2 and AVX-512 kernels: bit-identical outputs. */
TEST(conv_sparse_paths_identical)
{
    sh_error e = {0};
    for (int strided = 0; strided < 2; strided++) {
        sh_win w;
        memset(&w, 0, sizeof w);
        w.nsp = 2, w.N = 2, w.C = 16, w.H = 11, w.W = 13, w.kh = 3, w.kw = 3;
        w.sh = w.sw = strided ? 2 : 1, w.dh = w.dw = 1, w.pt = w.pl = w.pb = w.pr = 1;
        w.OH = (w.H + 2 - 3) / w.sh + 1, w.OW = (w.W + 2 - 3) / w.sw + 1;
        w.D = w.kd = w.sd = w.dd = w.OD = 1;
        int64_t M = 24, Kc = 16 * 9;
        float *wt = sparse_weight(M, Kc, 0.85, 0, 77), bias[24];
        uint32_t s = 3;
        for (int i = 0; i < 24; i++) bias[i] = rnd(&s);
        sh_tensor *sp = NULL;
        CHECK_OK(sh_sparse_pack(SH_CSR, wt, M, Kc, NULL, &sp, &e), &e);
        int64_t nx = w.N * w.C * w.H * w.W, ny = w.N * M * w.OH * w.OW;
        float *x = malloc(sizeof(float) * (size_t)nx), *y[3];
        for (int64_t i = 0; i < nx; i++) x[i] = rnd(&s);
        size_t sb = sh_conv_sparse_scratch(sp->data, &w, 1, 2);
        void *scr = aligned_alloc(64, (sb + 63) / 64 * 64);
        int ran[3] = {0, 0, 0};
        for (int p = 0; p < 3; p++) {
            y[p] = calloc((size_t)ny, sizeof(float));
            int path = p == 0 ? SH_SPMM_REF : p == 1 ? SH_SPMM_AVX2 : SH_SPMM_AVX512;
            if (!sh_spmm_path_ok(path)) continue;
            CHECK(sh_conv_sparse_run(sp->data, NULL, x, &w, 1, bias, 1, y[p], p == 2 ? 2 : 1, path, scr) == SH_OK);
            ran[p] = 1;
        }
        CHECK(ran[0]);
        for (int p = 1; p < 3; p++)
            if (ran[p]) CHECK_MSG(memcmp(y[0], y[p], sizeof(float) * (size_t)ny) == 0, "path %d differs from ref", p);
        /* and the values: direct sum in double */
        double maxd = 0;
        for (int64_t n = 0; n < w.N; n++)
            for (int64_t m = 0; m < M; m++)
                for (int64_t oh = 0; oh < w.OH; oh++)
                    for (int64_t ow = 0; ow < w.OW; ow++) {
                        double acc = bias[m];
                        for (int64_t c = 0; c < 16; c++)
                            for (int64_t i = 0; i < 3; i++)
                                for (int64_t j = 0; j < 3; j++) {
                                    int64_t ih = oh * w.sh - 1 + i, iw = ow * w.sw - 1 + j;
                                    if (ih < 0 || ih >= w.H || iw < 0 || iw >= w.W) continue;
                                    acc += (double)wt[m * Kc + (c * 3 + i) * 3 + j] * x[((n * 16 + c) * w.H + ih) * w.W + iw];
                                }
                        if (acc < 0) acc = 0;
                        double d = fabs(acc - y[0][((n * M + m) * w.OH + oh) * w.OW + ow]);
                        if (d > maxd) maxd = d;
                    }
        CHECK_MSG(maxd < 1e-5, "strided %d: max |diff| vs double %g", strided, maxd);
        for (int p = 0; p < 3; p++) free(y[p]);
        free(x), free(scr), free(wt);
        sh_tensor_free(sp);
    }
}

TEST(conv_sparse_errors)
{
    sh_error e = {0};
    const conv_case *c = &conv_cases[0];
    int64_t Kc = c->C * 9;
    float *w = sparse_weight(c->M, Kc, 0.8, 0, 5);
    int64_t xs[4] = {1, c->C, c->H, c->W};
    sh_tensor *x = sh_tensor_new(SH_F32, 4, xs, &e);
    const sh_tensor *in[1] = {x};
    /* kernel_shape that does not match the packed columns */
    sh_tensor *sp = NULL;
    CHECK_OK(sh_sparse_pack(SH_CSR, w, c->M, Kc, NULL, &sp, &e), &e);
    sh_graph *g = one_conv(c, sp, NULL, 0);
    int64_t ks[2] = {2, 2};
    sh_node_set_ints(g, 0, "kernel_shape", 2, ks);
    sh_program *p = NULL;
    sh_run_opts ro = {.nthreads = 1};
    int rc = sh_program_new(g, &ro, &p, &e);
    if (!rc) rc = sh_program_run(p, in, 1, &e);
    CHECK(rc != SH_OK);
    CHECK_MSG(strstr(e.msg, "sparse") && strstr(e.msg, "conv"), "message: %s", e.msg);
    sh_program_free(p), p = NULL;
    sh_graph_free(g);
    /* training with a packed conv weight: clear error */
    sp = NULL;
    CHECK_OK(sh_sparse_pack(SH_CSR, w, c->M, Kc, NULL, &sp, &e), &e);
    float bias[8] = {0.5f, -1, 0, 1, 2, 3, -2, 0.25f}; /* a trainable bias: the conv's backward runs */
    g = one_conv(c, sp, bias, 0);
    e = (sh_error){0};
    sh_run_opts tr = {.nthreads = 1, .training = 1};
    rc = sh_program_new(g, &tr, &p, &e);
    if (!rc) rc = sh_program_run(p, in, 1, &e);
    if (!rc) {
        sh_tensor *y = sh_program_output(p, 0);
        sh_tensor *dy = sh_tensor_new(SH_F32, y->ndim, y->shape, &e);
        for (int64_t i = 0; i < sh_tensor_numel(dy); i++) sh_f32(dy)[i] = 1.0f;
        const sh_tensor *d[1] = {dy};
        rc = sh_program_backward(p, d, 1, &e);
        sh_tensor_free(dy);
    }
    CHECK(rc != SH_OK);
    CHECK_MSG(strstr(e.msg, "no backward") != NULL, "message: %s", e.msg);
    sh_program_free(p);
    sh_graph_free(g);
    sh_tensor_free(x);
    free(w);
}

TEST(sparsify_cnn_pruned_90_convs_packed)
{
    /* the cnn (BatchNorm, residual block) pruned 90 %: Conv and Gemm weights
     * packed (BN folded first), outputs as the pruned dense model, file about
     * the size of the non-zeros, reload identical; measure fills the times */
    sh_error e = {0};
    sh_graph *g = NULL, *p = NULL, *s = NULL, *r = NULL;
    CHECK_OK(sh_model_build("cnn", 3, &g, &e), &e);
    sh_prune_opts po;
    sh_prune_opts_default(&po);
    po.ratio = 0.9;
    CHECK_OK(sh_prune(g, &po, &p, NULL, &e), &e);
    sh_sparsify_report rep;
    CHECK_OK(sh_sparsify(p, NULL, &s, &rep, &e), &e);
    if (!s) return;
    int convs = 0;
    for (int i = 0; i < rep.n_layers; i++) convs += rep.layers[i].fmt != SH_F32 && strstr(rep.layers[i].name, "fc") == NULL;
    CHECK_MSG(convs == 5 && rep.packed == 6, "packed %d layers, %d convs", rep.packed, convs);
    CHECK_MSG(rep.bytes_after * 4 < rep.bytes_before, "%lld -> %lld", (long long)rep.bytes_before,
              (long long)rep.bytes_after);
    char spath[512];
    snprintf(spath, sizeof spath, "%s/cnn_packed.onnx", sh_test_tmpdir());
    CHECK_OK(sh_model_save(s, spath, &e), &e);
    CHECK_OK(sh_model_load(spath, &r, &e), &e);
    for (int64_t B = 1; B <= 2 && r; B++) {
        int64_t xs[4] = {B, 1, 28, 28}, n1 = 0, n2 = 0, n3 = 0;
        sh_tensor *x = sh_tensor_new(SH_F32, 4, xs, &e);
        uint32_t sd = 11;
        for (int64_t i = 0; i < sh_tensor_numel(x); i++) sh_f32(x)[i] = rnd(&sd);
        float *yd = run(p, x, &n1, 1), *ys = run(s, x, &n2, 2), *yr = run(r, x, &n3, 1);
        CHECK(yd && ys && yr && n1 == n2 && n2 == n3);
        if (yd && ys && yr && n1 == n2 && n2 == n3) {
            CHECK_MSG(max_rel(ys, yd, n1) <= 1e-5, "packed vs dense rel %g", max_rel(ys, yd, n1));
            CHECK_MSG(max_rel(yr, ys, n1) <= 1e-6, "reloaded vs packed rel %g", max_rel(yr, ys, n1));
        }
        free(yd), free(ys), free(yr);
        sh_tensor_free(x);
    }
    sh_sparsify_report_free(&rep);
    sh_graph_free(s), s = NULL;
    if (!sh_test_quick()) {
        sh_sparsify_opts so;
        sh_sparsify_opts_default(&so);
        so.measure = 1, so.runs = 3, so.nthreads = 1;
        CHECK_OK(sh_sparsify(p, &so, &s, &rep, &e), &e);
        for (int i = 0; i < rep.n_layers; i++) {
            const sh_sparsify_layer *L = &rep.layers[i];
            CHECK_MSG(L->dense_ms > 0 && L->sparse_ms > 0, "layer %s not timed (%s)", L->name, L->note);
            CHECK((L->fmt != SH_F32) == (L->sparse_ms < L->dense_ms));
        }
        sh_sparsify_report_free(&rep);
    }
    sh_graph_free(g), sh_graph_free(p), sh_graph_free(s), sh_graph_free(r);
}
