/* test_ops_shape.c - shape op family: Identity, Dropout, Flatten, Reshape,
 * Transpose, Concat, Constant, Pad, Shape, Gather, Unsqueeze, Squeeze, Cast,
 * Slice, Expand.  Forward against PyTorch golden vectors, finite-difference
 * backward checks, the i64 shape chain PyTorch exports for x.view(N, -1),
 * training Dropout, and clear errors on bad input. */
#include <string.h>

#include "golden_elem.h"
#include "gradcheck.h"
#include "ops/ops.h"
#include "test.h"

TEST(shape_golden_copy_ops)
{
    golden_elem_run("identity");
    golden_elem_run("dropout_infer");
    golden_elem_run("flatten_");
    golden_elem_run("reshape_");
    golden_elem_run("squeeze_");
    golden_elem_run("unsqueeze_");
}

TEST(shape_golden_transpose_concat)
{
    golden_elem_run("transpose_");
    golden_elem_run("concat_");
}

TEST(shape_golden_pad)
{
    golden_elem_run("pad_");
}

TEST(shape_golden_gather_slice_expand)
{
    golden_elem_run("gather_");
    golden_elem_run("slice_");
    golden_elem_run("expand_");
}

TEST(shape_golden_cast_shape)
{
    golden_elem_run("cast_");
    golden_elem_run("shape_");
    golden_elem_run("cos_");
    golden_elem_run("range_");
}

/* ---- helpers ------------------------------------------------------------------ */

static sh_tensor *i64s(int n, const int64_t *v)
{
    int64_t s = n;
    sh_tensor *t = sh_tensor_new(SH_I64, 1, &s, NULL);
    memcpy(t->data, v, sizeof(int64_t) * (size_t)n);
    return t;
}

static int add_init_i64(sh_graph *g, const char *name, int n, const int64_t *v, sh_error *err)
{
    return sh_graph_add_init(g, name, i64s(n, v), err);
}

/* One-node graph: input "x" (f32, graph input) and optional i64 constant
 * inputs c1.. given as name lists; runs it and returns the error code. */
static int run_node(const char *op, const char *attrs, sh_tensor *x, int n_const, sh_tensor **consts, sh_error *err,
                    sh_tensor **out_copy)
{
    sh_graph *g = sh_graph_new("t");
    g->opset = 17;
    const char *ins[8] = {"x", "c1", "c2", "c3", "c4"}, *outs[1] = {"y"};
    sh_graph_add_input(g, "x", x->fmt, x->ndim, x->shape, err);
    for (int i = 0; i < n_const; i++)
        if (consts[i]) sh_graph_add_init(g, ins[1 + i], sh_tensor_clone(consts[i], err), err);
        else ins[1 + i] = "";
    int node = sh_graph_add_node(g, op, "n1", 1 + n_const, ins, 1, outs, err);
    if (node >= 0) golden_elem_attrs(g, node, (void *)attrs);
    sh_graph_mark_output(g, "y", err);
    sh_program *p = NULL;
    int rc = sh_program_new(g, NULL, &p, err);
    const sh_tensor *in[1] = {x};
    if (!rc) rc = sh_program_run(p, in, 1, err);
    if (!rc && out_copy) *out_copy = sh_tensor_clone(sh_program_output(p, 0), err);
    sh_program_free(p);
    sh_graph_free(g);
    return rc;
}

/* ---- the x.view(x.size(0), -1) chain ------------------------------------------- */

TEST(shape_chain_view_batch_folds)
{
    sh_error err = {0};
    sh_graph *g = sh_graph_new("view");
    g->opset = 13;
    int64_t xs[3] = {-1, 3, 4};
    sh_graph_add_input(g, "x", SH_F32, 3, xs, &err);
    int64_t zero = 0, m1 = -1;
    add_init_i64(g, "idx0", 1, &zero, &err);
    add_init_i64(g, "minus1", 1, &m1, &err);
    add_init_i64(g, "ax0", 1, &zero, &err);
    /* Shape -> Gather(0) -> Unsqueeze -> Concat(.., [-1]) -> Reshape */
    const char *i1[1] = {"x"}, *o1[1] = {"shp"};
    sh_graph_add_node(g, "Shape", "shape", 1, i1, 1, o1, &err);
    sh_tensor *scalar0 = sh_tensor_new(SH_I64, 0, NULL, &err);
    sh_graph_add_init(g, "s0", scalar0, &err);
    const char *i2[2] = {"shp", "s0"}, *o2[1] = {"n"};
    sh_graph_add_node(g, "Gather", "gather", 2, i2, 1, o2, &err);
    const char *i3[2] = {"n", "ax0"}, *o3[1] = {"n1"};
    sh_graph_add_node(g, "Unsqueeze", "unsq", 2, i3, 1, o3, &err);
    const char *i4[2] = {"n1", "minus1"}, *o4[1] = {"newshape"};
    int c = sh_graph_add_node(g, "Concat", "concat", 2, i4, 1, o4, &err);
    sh_node_set_int(g, c, "axis", 0);
    const char *i5[2] = {"x", "newshape"}, *o5[1] = {"y"};
    sh_graph_add_node(g, "Reshape", "reshape", 2, i5, 1, o5, &err);
    sh_graph_mark_output(g, "y", &err);
    sh_program *p = NULL;
    CHECK_OK(sh_program_new(g, NULL, &p, &err), &err);
    for (int64_t n = 1; n <= 3; n++) {
        int64_t s[3] = {n, 3, 4};
        sh_tensor *x = gradcheck_rand(3, s, (uint64_t)n, -1, 1);
        const sh_tensor *in[1] = {x};
        CHECK_OK(sh_program_run(p, in, 1, &err), &err);
        sh_tensor *y = sh_program_output(p, 0);
        CHECK(y && y->ndim == 2 && y->shape[0] == n && y->shape[1] == 12);
        if (y) CHECK(memcmp(y->data, x->data, x->nbytes) == 0);
        sh_tensor_free(x);
    }
    sh_program_free(p);
    sh_graph_free(g);
}

/* ---- errors ------------------------------------------------------------------------ */

TEST(shape_errors_are_clear)
{
    sh_error err = {0};
    int64_t s[3] = {2, 3, 4};
    sh_tensor *x = gradcheck_rand(3, s, 1, -1, 1);
    int64_t bad_shape[2] = {5, -1}, two_neg[2] = {-1, -1}, idx_oob[2] = {0, 7}, one = 1;
    sh_tensor *c = i64s(2, bad_shape);
    CHECK(run_node("Reshape", NULL, x, 1, &c, &err, NULL) == SH_ESHAPE);
    CHECK_MSG(strstr(err.msg, "[2,3,4]") && strstr(err.msg, "[5,-1]") && strstr(err.msg, "n1"), "%s", err.msg);
    sh_tensor_free(c);
    c = i64s(2, two_neg);
    CHECK(run_node("Reshape", NULL, x, 1, &c, &err, NULL) == SH_ESHAPE);
    CHECK_MSG(strstr(err.msg, "-1"), "%s", err.msg);
    sh_tensor_free(c);
    c = i64s(2, idx_oob);
    CHECK(run_node("Gather", "i:axis=1", x, 1, &c, &err, NULL) != SH_OK);
    CHECK_MSG(strstr(err.msg, "index 7") && strstr(err.msg, "[2,3,4]"), "%s", err.msg);
    sh_tensor_free(c);
    CHECK(run_node("Transpose", "i:perm=0,0,1", x, 0, NULL, &err, NULL) == SH_EINVAL);
    CHECK_MSG(strstr(err.msg, "perm"), "%s", err.msg);
    c = i64s(1, &one);
    CHECK(run_node("Squeeze", NULL, x, 1, &c, &err, NULL) == SH_ESHAPE);
    CHECK_MSG(strstr(err.msg, "squeeze axis 1") && strstr(err.msg, "[2,3,4]"), "%s", err.msg);
    sh_tensor_free(c);
    CHECK(run_node("Pad", "s:mode=mirror i:pads=0,0,0,0,0,0", x, 0, NULL, &err, NULL) == SH_EINVAL);
    CHECK_MSG(strstr(err.msg, "mirror"), "%s", err.msg);
    CHECK(run_node("Cast", "i:to=11", x, 0, NULL, &err, NULL) == SH_EUNSUPPORTED);
    CHECK(run_node("Flatten", "i:axis=3", x, 0, NULL, &err, NULL) == SH_OK);
    CHECK(run_node("Flatten", "i:axis=4", x, 0, NULL, &err, NULL) == SH_EINVAL);
    int64_t sl[2] = {0, 0};
    sh_tensor *st[3] = {i64s(1, sl), i64s(2, sl), NULL};
    CHECK(run_node("Slice", NULL, x, 2, st, &err, NULL) == SH_EINVAL);
    sh_tensor_free(st[0]), sh_tensor_free(st[1]);

    /* Concat of different ranks, then of mismatched dims */
    sh_graph *g = sh_graph_new("t");
    int64_t s2[2] = {2, 3};
    sh_graph_add_input(g, "a", SH_F32, 3, s, &err);
    sh_graph_add_input(g, "b", SH_F32, 2, s2, &err);
    const char *in[2] = {"a", "b"}, *out[1] = {"y"};
    int n = sh_graph_add_node(g, "Concat", "cat", 2, in, 1, out, &err);
    sh_node_set_int(g, n, "axis", 0);
    sh_graph_mark_output(g, "y", &err);
    sh_program *p = NULL;
    CHECK_OK(sh_program_new(g, NULL, &p, &err), &err);
    sh_tensor *b = gradcheck_rand(2, s2, 2, -1, 1);
    const sh_tensor *ins[2] = {x, b};
    CHECK(sh_program_run(p, ins, 2, &err) == SH_ESHAPE);
    CHECK_MSG(strstr(err.msg, "[2,3,4]") && strstr(err.msg, "[2,3]") && strstr(err.msg, "cat"), "%s", err.msg);
    sh_program_free(p);
    sh_graph_free(g);
    sh_tensor_free(b);
    sh_tensor_free(x);
}

/* ---- backward: finite differences ------------------------------------------- */

static void gc(const char *op, const char *attrs, int n_in, sh_tensor **in, unsigned as_param)
{
    char rep[4096] = "";
    gradcheck_opts o = {0};
    o.tol = 1e-2;
    o.as_param = as_param;
    o.inference = strcmp(op, "Dropout") == 0; /* training masks differ per run */
    int r = gradcheck_node_ex(op, golden_elem_attrs, (void *)attrs, n_in, in, &o, rep, sizeof rep);
    CHECK_MSG(r == 0, "%s %s:\n%s", op, attrs ? attrs : "", rep);
}

TEST(shape_grad_copy_ops)
{
    int64_t s[4] = {2, 1, 3, 4};
    sh_tensor *x = gradcheck_rand(4, s, 1, -1, 1);
    gc("Identity", NULL, 1, &x, 0);
    gc("Dropout", NULL, 1, &x, 0); /* inference mode: identity */
    gc("Flatten", "i:axis=2", 1, &x, 0);
    gc("Squeeze", "i:axes=1", 1, &x, 0);
    gc("Unsqueeze", "i:axes=0,-1", 1, &x, 0);
    int64_t shp[3] = {0, -1, 2};
    sh_tensor *in[2] = {x, i64s(3, shp)};
    gc("Reshape", NULL, 2, in, 0);
    sh_tensor_free(in[1]);
    gc("Cast", "i:to=1", 1, &x, 0);
    sh_tensor_free(x);
}

TEST(shape_grad_transpose_concat)
{
    int64_t s[4] = {2, 3, 4, 5}, s2[4] = {2, 3, 1, 5};
    sh_tensor *x = gradcheck_rand(4, s, 1, -1, 1), *y = gradcheck_rand(4, s2, 2, -1, 1);
    gc("Transpose", "i:perm=0,2,3,1", 1, &x, 0);
    gc("Transpose", NULL, 1, &x, 0);
    sh_tensor *in[3] = {x, y, x};
    gc("Concat", "i:axis=2", 3, in, 0);
    gc("Concat", "i:axis=-2", 2, in, 0);
    sh_tensor_free(x), sh_tensor_free(y);
}

TEST(shape_grad_pad)
{
    int64_t s[4] = {1, 2, 3, 4}, pads[8] = {0, 0, 2, 1, 0, 0, 1, 3}, crop[8] = {0, 0, -1, 2, 0, 0, 1, -1};
    sh_tensor *x = gradcheck_rand(4, s, 1, -1, 1);
    sh_tensor *in[2] = {x, i64s(8, pads)};
    gc("Pad", "s:mode=constant", 2, in, 0);
    gc("Pad", "s:mode=reflect", 2, in, 0);
    gc("Pad", "s:mode=edge", 2, in, 0);
    gc("Pad", "s:mode=wrap", 2, in, 0);
    sh_tensor_free(in[1]);
    in[1] = i64s(8, crop);
    gc("Pad", NULL, 2, in, 0);
    sh_tensor_free(in[1]);
    sh_tensor_free(x);
}

TEST(shape_grad_gather_slice_expand)
{
    /* Gather as the embedding lookup: repeated and negative ids, data a parameter */
    int64_t es[2] = {10, 4}, ids[6] = {3, 0, 9, 3, -1, 5}, is[2] = {2, 3};
    sh_tensor *emb = gradcheck_rand(2, es, 1, -1, 1);
    sh_tensor *idx = sh_tensor_new(SH_I64, 2, is, NULL);
    memcpy(idx->data, ids, sizeof ids);
    sh_tensor *in[5] = {emb, idx};
    gc("Gather", NULL, 2, in, 0);
    gc("Gather", NULL, 2, in, 1); /* data as a trainable initializer */
    int64_t i2[2] = {1, -1};
    sh_tensor *idx2 = i64s(2, i2);
    in[1] = idx2;
    gc("Gather", "i:axis=1", 2, in, 0);
    sh_tensor_free(idx), sh_tensor_free(idx2), sh_tensor_free(emb);

    int64_t s[3] = {3, 4, 6};
    sh_tensor *x = gradcheck_rand(3, s, 2, -1, 1);
    int64_t st[2] = {1, -1}, en[2] = {-100, 1}, ax[2] = {2, 0}, sp[2] = {2, -1};
    sh_tensor *sin[5] = {x, i64s(2, st), i64s(2, en), i64s(2, ax), i64s(2, sp)};
    en[0] = 100;
    sh_tensor_free(sin[2]);
    sin[2] = i64s(2, en);
    gc("Slice", NULL, 5, sin, 0);
    gc("Slice", NULL, 4, sin, 0);
    for (int i = 1; i < 5; i++) sh_tensor_free(sin[i]);

    int64_t e1[2] = {4, 1}, eshape[3] = {2, 4, 3};
    sh_tensor *e = gradcheck_rand(2, e1, 3, -1, 1);
    sh_tensor *ein[2] = {e, i64s(3, eshape)};
    gc("Expand", NULL, 2, ein, 0);
    sh_tensor_free(ein[1]), sh_tensor_free(e), sh_tensor_free(x);
}

/* ---- training Dropout --------------------------------------------------------- */

TEST(shape_dropout_training_mask_consistent)
{
    sh_error err = {0};
    sh_graph *g = sh_graph_new("t");
    int64_t s[2] = {64, 100};
    sh_graph_add_input(g, "x", SH_F32, 2, s, &err);
    const char *in[1] = {"x"}, *out[2] = {"y", "mask"};
    int n = sh_graph_add_node(g, "Dropout", "drop", 1, in, 2, out, &err);
    sh_node_set_float(g, n, "ratio", 0.3f);
    sh_graph_mark_output(g, "y", &err);
    sh_graph_mark_output(g, "mask", &err);
    sh_run_opts ro = {.nthreads = 1, .training = 1, .seed = 42};
    sh_program *p = NULL, *p2 = NULL;
    CHECK_OK(sh_program_new(g, &ro, &p, &err), &err);
    CHECK_OK(sh_program_new(g, &ro, &p2, &err), &err);
    CHECK_OK(sh_program_require_grad(p, "x", &err), &err);
    sh_tensor *x = gradcheck_rand(2, s, 5, 0.5f, 1.5f);
    const sh_tensor *ins[1] = {x};
    CHECK_OK(sh_program_run(p, ins, 1, &err), &err);
    CHECK_OK(sh_program_run(p2, ins, 1, &err), &err);
    sh_tensor *y = sh_program_output(p, 0), *m = sh_program_output(p, 1), *y2 = sh_program_output(p2, 0);
    CHECK(m->fmt == SH_BOOL);
    CHECK_MSG(memcmp(y->data, y2->data, y->nbytes) == 0, "same seed, same run: same mask");
    int64_t N = 6400, kept = 0;
    for (int64_t i = 0; i < N; i++) {
        uint8_t k = ((uint8_t *)m->data)[i];
        kept += k;
        float e = k ? sh_f32(x)[i] / 0.7f : 0.0f;
        if (fabsf(sh_f32(y)[i] - e) > 1e-6f * fabsf(e)) {
            CHECK_MSG(0, "element %lld: %g vs %g", (long long)i, sh_f32(y)[i], e);
            break;
        }
    }
    CHECK_MSG(kept > N * 0.66 && kept < N * 0.74, "kept %lld of %lld at ratio 0.3", (long long)kept, (long long)N);
    /* backward uses the same mask */
    sh_tensor *ones = sh_tensor_new(SH_F32, 2, s, &err);
    for (int64_t i = 0; i < N; i++) sh_f32(ones)[i] = 1.0f;
    const sh_tensor *douts[2] = {ones, NULL};
    CHECK_OK(sh_program_backward(p, douts, 2, &err), &err);
    sh_tensor *dx = sh_program_grad(p, "x");
    CHECK(dx != NULL);
    for (int64_t i = 0; dx && i < N; i++) {
        float e = ((uint8_t *)m->data)[i] ? 1.0f / 0.7f : 0.0f;
        if (fabsf(sh_f32(dx)[i] - e) > 1e-5f) {
            CHECK_MSG(0, "dx[%lld] = %g, expected %g", (long long)i, sh_f32(dx)[i], e);
            break;
        }
    }
    /* the next run draws a new mask */
    CHECK_OK(sh_program_run(p, ins, 1, &err), &err);
    CHECK(memcmp(sh_program_output(p, 0)->data, y2->data, y2->nbytes) != 0);
    sh_tensor_free(ones), sh_tensor_free(x);
    sh_program_free(p), sh_program_free(p2);
    sh_graph_free(g);
}

/* Constant with each attribute kind */
TEST(shape_constant_attrs)
{
    sh_error err = {0};
    sh_graph *g = sh_graph_new("t");
    const char *o[1];
    o[0] = "a";
    int n = sh_graph_add_node(g, "Constant", "c1", 0, NULL, 1, o, &err);
    sh_node_set_float(g, n, "value_float", 2.5f);
    o[0] = "b";
    n = sh_graph_add_node(g, "Constant", "c2", 0, NULL, 1, o, &err);
    int64_t v[3] = {4, -1, 7};
    sh_node_set_ints(g, n, "value_ints", 3, v);
    o[0] = "c";
    n = sh_graph_add_node(g, "Constant", "c3", 0, NULL, 1, o, &err);
    sh_node_set_int(g, n, "value_int", 9);
    sh_graph_mark_output(g, "a", &err);
    sh_graph_mark_output(g, "b", &err);
    sh_graph_mark_output(g, "c", &err);
    sh_program *p = NULL;
    CHECK_OK(sh_program_new(g, NULL, &p, &err), &err);
    CHECK_OK(sh_program_run(p, NULL, 0, &err), &err);
    sh_tensor *a = sh_program_output(p, 0), *b = sh_program_output(p, 1), *c = sh_program_output(p, 2);
    CHECK(a->fmt == SH_F32 && a->ndim == 0 && sh_f32(a)[0] == 2.5f);
    CHECK(b->fmt == SH_I64 && b->ndim == 1 && b->shape[0] == 3 && ((int64_t *)b->data)[2] == 7);
    CHECK(c->fmt == SH_I64 && c->ndim == 0 && ((int64_t *)c->data)[0] == 9);
    sh_program_free(p);
    sh_graph_free(g);
    /* no value: clear error */
    g = sh_graph_new("t");
    o[0] = "a";
    sh_graph_add_node(g, "Constant", "c0", 0, NULL, 1, o, &err);
    sh_graph_mark_output(g, "a", &err);
    CHECK_OK(sh_program_new(g, NULL, &p, &err), &err);
    CHECK(sh_program_run(p, NULL, 0, &err) == SH_EUNSUPPORTED);
    CHECK_MSG(strstr(err.msg, "value"), "%s", err.msg);
    sh_program_free(p);
    sh_graph_free(g);
}

/* Every permutation of a 3-D tensor with odd sizes (tiled and plain paths)
 * against a naive index computation; i64 too. */
TEST(shape_transpose_all_perms_naive)
{
    int64_t s[3] = {3, 37, 21};
    static const int64_t perms[6][3] = {{0, 1, 2}, {0, 2, 1}, {1, 0, 2}, {1, 2, 0}, {2, 0, 1}, {2, 1, 0}};
    for (int f = 0; f < 2; f++) {
        sh_tensor *x = f == 0 ? gradcheck_rand(3, s, 4, -1, 1) : sh_tensor_new(SH_I64, 3, s, NULL);
        int64_t n = sh_tensor_numel(x);
        if (f == 1)
            for (int64_t i = 0; i < n; i++) ((int64_t *)x->data)[i] = i * 7 - 5;
        for (int p = 0; p < 6; p++) {
            char attrs[64];
            snprintf(attrs, sizeof attrs, "i:perm=%d,%d,%d", (int)perms[p][0], (int)perms[p][1], (int)perms[p][2]);
            sh_error err = {0};
            sh_tensor *y = NULL;
            CHECK_OK(run_node("Transpose", attrs, x, 0, NULL, &err, &y), &err);
            if (!y) continue;
            int64_t st[3] = {s[1] * s[2], s[2], 1}, idx[3];
            int bad = 0;
            for (idx[0] = 0; idx[0] < y->shape[0] && !bad; idx[0]++)
                for (idx[1] = 0; idx[1] < y->shape[1] && !bad; idx[1]++)
                    for (idx[2] = 0; idx[2] < y->shape[2] && !bad; idx[2]++) {
                        int64_t src = 0, dst = (idx[0] * y->shape[1] + idx[1]) * y->shape[2] + idx[2];
                        for (int d = 0; d < 3; d++) src += idx[d] * st[perms[p][d]];
                        int same = f == 0 ? sh_f32(y)[dst] == sh_f32(x)[src]
                                          : ((int64_t *)y->data)[dst] == ((int64_t *)x->data)[src];
                        if (!same) {
                            CHECK_MSG(0, "perm %s fmt %d: mismatch at output %lld", attrs, f, (long long)dst);
                            bad = 1;
                        }
                    }
            sh_tensor_free(y);
        }
        sh_tensor_free(x);
    }
}
