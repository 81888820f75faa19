/* llm.c - transformer ops (domain com.shrink): RMSNorm, RoPE, Attention (with a
 * KV cache in inference mode), SiluMul.
 *
 * The arithmetic follows llama2.c's run.c (float accumulation order, RoPE
 * frequencies computed with powf/cosf/sinf, score = dot / sqrtf(hs)) so that a
 * llama2.c checkpoint reproduces the reference text token for token.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "ops.h"
#ifdef _OPENMP
#include <omp.h>
#endif

static int check_f32(sh_kctx *k, const sh_tensor *t, const char *what)
{
    if (t->fmt != SH_F32)
        return sh_op_err(k, SH_EUNSUPPORTED, "%s has format %s, expected f32", what, sh_format_get(t->fmt)->name);
    return SH_OK;
}

/* ---- RMSNorm(x, weight; epsilon): y = x / sqrt(mean(x^2) + eps) * w --- */

static int rmsnorm_infer(sh_kctx *k, const sh_tensor *const *in, int n_in, sh_tensor *const *out, int n_out)
{
    (void)n_in, (void)n_out;
    int rc;
    if ((rc = check_f32(k, in[0], "input")) || (rc = check_f32(k, in[1], "weight"))) return rc;
    char a[160], b[160];
    if (in[0]->ndim < 1 || in[1]->ndim != 1 || in[1]->shape[0] != in[0]->shape[in[0]->ndim - 1])
        return sh_op_err(k, SH_ESHAPE, "weight shape %s does not match the last axis of input %s",
                         sh_shape_str(in[1]->ndim, in[1]->shape, b, sizeof b),
                         sh_shape_str(in[0]->ndim, in[0]->shape, a, sizeof a));
    sh_tensor_set_shape(out[0], SH_F32, in[0]->ndim, in[0]->shape);
    return SH_OK;
}

static int rmsnorm_fwd(sh_kctx *k, const sh_tensor *const *in, int n_in, sh_tensor *const *out, int n_out)
{
    (void)n_in, (void)n_out;
    const float *x = in[0]->data, *w = in[1]->data;
    float *y = out[0]->data;
    int64_t d = in[1]->shape[0], rows = d ? sh_tensor_numel(in[0]) / d : 0;
    float eps = sh_attr_float(k->node, "epsilon", 1e-5f);
    int nt = k->nthreads > 0 ? k->nthreads : 1;
    SH_PAR_FOR(nt > 1 && rows * d > 65536, nt, for (int64_t r = 0; r < rows; r++) {
        const float *xr = x + r * d;
        float *yr = y + r * d;
        float ss = 0.0f;
        for (int64_t j = 0; j < d; j++) ss += xr[j] * xr[j];
        ss /= (float)d;
        ss += eps;
        ss = 1.0f / sqrtf(ss);
        for (int64_t j = 0; j < d; j++) yr[j] = w[j] * (ss * xr[j]);
    });
    return SH_OK;
}

static int rmsnorm_bwd(sh_kctx *k, const sh_tensor *const *in, int n_in, const sh_tensor *const *out, int n_out,
                       const sh_tensor *const *dout, sh_tensor *const *din)
{
    (void)n_in, (void)out, (void)n_out;
    if (!dout[0]) return SH_OK;
    const float *x = in[0]->data, *w = in[1]->data, *dy = dout[0]->data;
    float *dx = din[0] ? din[0]->data : NULL, *dw = din[1] ? din[1]->data : NULL;
    int64_t d = in[1]->shape[0], rows = d ? sh_tensor_numel(in[0]) / d : 0;
    float eps = sh_attr_float(k->node, "epsilon", 1e-5f);
    for (int64_t r = 0; r < rows; r++) {
        const float *xr = x + r * d, *g = dy + r * d;
        double ss = 0.0;
        for (int64_t j = 0; j < d; j++) ss += (double)xr[j] * xr[j];
        double rs = 1.0 / sqrt(ss / (double)d + eps);
        if (dw)
            for (int64_t j = 0; j < d; j++) dw[j] += (float)(g[j] * xr[j] * rs);
        if (dx) {
            double dot = 0.0; /* sum_j g_j w_j x_j */
            for (int64_t j = 0; j < d; j++) dot += (double)g[j] * w[j] * xr[j];
            double c = dot * rs * rs * rs / (double)d;
            float *dxr = dx + r * d;
            for (int64_t j = 0; j < d; j++) dxr[j] += (float)(rs * g[j] * w[j] - c * xr[j]);
        }
    }
    return SH_OK;
}

/* ---- RoPE(x; head_size, theta): rotate pairs (2i, 2i+1) within each head -- */

static int rope_params(sh_kctx *k, const sh_tensor *x, int64_t *hs, int64_t *T, int64_t *C)
{
    *hs = sh_attr_int(k->node, "head_size", 0);
    char a[160];
    if (x->ndim < 2)
        return sh_op_err(k, SH_ESHAPE, "input %s: expected [B,T,C] or [T,C]", sh_shape_str(x->ndim, x->shape, a, sizeof a));
    *T = x->shape[x->ndim - 2];
    *C = x->shape[x->ndim - 1];
    if (*hs <= 0 || *hs % 2 || *C % *hs)
        return sh_op_err(k, SH_EINVAL, "head_size %lld must be even, positive and divide the last axis of input %s",
                         (long long)*hs, sh_shape_str(x->ndim, x->shape, a, sizeof a));
    return SH_OK;
}

static int rope_infer(sh_kctx *k, const sh_tensor *const *in, int n_in, sh_tensor *const *out, int n_out)
{
    (void)n_in, (void)n_out;
    int64_t hs, T, C;
    int rc;
    if ((rc = check_f32(k, in[0], "input")) || (rc = rope_params(k, in[0], &hs, &T, &C))) return rc;
    sh_tensor_set_shape(out[0], SH_F32, in[0]->ndim, in[0]->shape);
    return SH_OK;
}

/* cos/sin table [T][hs/2] for positions pos..pos+T-1 (llama2.c arithmetic) */
static float *rope_table(sh_kctx *k, int64_t T, int64_t hs)
{
    float theta = sh_attr_float(k->node, "theta", 10000.0f);
    int64_t h2 = hs / 2;
    float *tab = sh_kctx_scratch(k, sizeof(float) * (size_t)(2 * T * h2 + 1));
    if (!tab) return NULL;
    for (int64_t t = 0; t < T; t++) {
        int64_t p = k->pos + t;
        for (int64_t i = 0; i < h2; i++) {
            float freq = 1.0f / powf(theta, (float)(2 * i) / (float)hs);
            float val = (float)p * freq;
            tab[2 * (t * h2 + i)] = cosf(val);
            tab[2 * (t * h2 + i) + 1] = sinf(val);
        }
    }
    return tab;
}

static int rope_apply(sh_kctx *k, const sh_tensor *xt, const float *src, float *dst, int inverse, int accumulate)
{
    int64_t hs, T, C;
    int rc = rope_params(k, xt, &hs, &T, &C);
    if (rc) return rc;
    int64_t B = (T > 0 && C > 0) ? sh_tensor_numel(xt) / (T * C) : 0, h2 = hs / 2;
    float *tab = rope_table(k, T, hs);
    if (!tab) return sh_op_err(k, SH_ENOMEM, "out of memory");
    for (int64_t b = 0; b < B; b++)
        for (int64_t t = 0; t < T; t++) {
            const float *xs = src + (b * T + t) * C;
            float *ys = dst + (b * T + t) * C;
            const float *cs = tab + 2 * t * h2;
            for (int64_t i = 0; i < C; i += 2) {
                int64_t j = (i % hs) / 2;
                float fcr = cs[2 * j], fci = inverse ? -cs[2 * j + 1] : cs[2 * j + 1];
                float v0 = xs[i], v1 = xs[i + 1];
                float o0 = v0 * fcr - v1 * fci, o1 = v0 * fci + v1 * fcr;
                if (accumulate) ys[i] += o0, ys[i + 1] += o1;
                else ys[i] = o0, ys[i + 1] = o1;
            }
        }
    return SH_OK;
}

static int rope_fwd(sh_kctx *k, const sh_tensor *const *in, int n_in, sh_tensor *const *out, int n_out)
{
    (void)n_in, (void)n_out;
    return rope_apply(k, in[0], in[0]->data, out[0]->data, 0, 0);
}

static int rope_bwd(sh_kctx *k, const sh_tensor *const *in, int n_in, const sh_tensor *const *out, int n_out,
                    const sh_tensor *const *dout, sh_tensor *const *din)
{
    (void)n_in, (void)out, (void)n_out;
    if (!dout[0] || !din[0]) return SH_OK;
    return rope_apply(k, in[0], dout[0]->data, din[0]->data, 1, 1);
}

/* ---- Attention(q, k, v; n_heads, n_kv_heads, causal) ------------------ */

typedef struct kv_cache {
    int64_t B, KV, hs, cap, len;
    float *k, *v; /* k transposed: [B][KV][hs][cap]; v: [B][KV][cap][hs] */
} kv_cache;

void sh_kv_cache_free(void *p)
{
    kv_cache *c = p;
    if (!c) return;
    free(c->k);
    free(c->v);
    free(c);
}

typedef struct att_dims {
    int64_t B, T, H, KV, hs;
} att_dims;

static int att_params(sh_kctx *k, const sh_tensor *const *in, att_dims *d)
{
    char a[160], b[160], c[160];
    const sh_tensor *q = in[0], *kk = in[1], *v = in[2];
    d->H = sh_attr_int(k->node, "n_heads", 0);
    d->KV = sh_attr_int(k->node, "n_kv_heads", d->H);
    if (d->H <= 0 || d->KV <= 0 || d->H % d->KV)
        return sh_op_err(k, SH_EINVAL, "n_heads %lld must be a positive multiple of n_kv_heads %lld", (long long)d->H,
                         (long long)d->KV);
    int ok = (q->ndim == 3 || q->ndim == 2) && kk->ndim == q->ndim && v->ndim == q->ndim;
    for (int i = 0; ok && i < q->ndim - 1; i++) ok = kk->shape[i] == q->shape[i] && v->shape[i] == q->shape[i];
    if (ok) {
        int64_t C = q->shape[q->ndim - 1];
        ok = C % d->H == 0 && C > 0;
        d->hs = ok ? C / d->H : 0;
        ok = ok && kk->shape[q->ndim - 1] == d->KV * d->hs && v->shape[q->ndim - 1] == d->KV * d->hs;
    }
    if (!ok)
        return sh_op_err(k, SH_ESHAPE,
                         "q %s, k %s, v %s: expected q [B,T,n_heads*hs], k and v [B,T,n_kv_heads*hs] "
                         "(n_heads %lld, n_kv_heads %lld)",
                         sh_shape_str(q->ndim, q->shape, a, sizeof a), sh_shape_str(kk->ndim, kk->shape, b, sizeof b),
                         sh_shape_str(v->ndim, v->shape, c, sizeof c), (long long)d->H, (long long)d->KV);
    d->B = q->ndim == 3 ? q->shape[0] : 1;
    d->T = q->shape[q->ndim - 2];
    return SH_OK;
}

static int att_infer(sh_kctx *k, const sh_tensor *const *in, int n_in, sh_tensor *const *out, int n_out)
{
    (void)n_in, (void)n_out;
    int rc;
    for (int i = 0; i < 3; i++)
        if ((rc = check_f32(k, in[i], i == 0 ? "q" : i == 1 ? "k" : "v"))) return rc;
    att_dims d;
    if ((rc = att_params(k, in, &d))) return rc;
    sh_tensor_set_shape(out[0], SH_F32, in[0]->ndim, in[0]->shape);
    if (n_out > 1) { /* distill: optional output 1, the probabilities [B,H,T,T] (runs from pos 0) */
        int64_t ps[4] = {d.B, d.H, d.T, d.T};
        sh_tensor_set_shape(out[1], SH_F32, 4, ps);
    }
    return SH_OK;
}

/* One query row against keys [0, n): out = softmax(q.K / sqrt(hs)) V.
 * att: scratch of n floats (left holding the probabilities). */
static void att_row(const float *q, const float *K, const float *V, int64_t kstride, int64_t n, int64_t hs,
                    float *att, float *out)
{
    float sq = sqrtf((float)hs);
    float mx = -INFINITY;
    for (int64_t s = 0; s < n; s++) {
        const float *kr = K + s * kstride;
        float sc = 0.0f;
        for (int64_t i = 0; i < hs; i++) sc += q[i] * kr[i];
        sc /= sq;
        att[s] = sc;
        if (sc > mx) mx = sc;
    }
    float sum = 0.0f;
    for (int64_t s = 0; s < n; s++) {
        att[s] = expf(att[s] - mx);
        sum += att[s];
    }
    for (int64_t s = 0; s < n; s++) att[s] /= sum;
    for (int64_t i = 0; i < hs; i++) out[i] = 0.0f;
    for (int64_t s = 0; s < n; s++) {
        const float *vr = V + s * kstride;
        float a = att[s];
        for (int64_t i = 0; i < hs; i++) out[i] += a * vr[i];
    }
}

static void transpose_keys(const float *K, int64_t kstride, int64_t P, int64_t hs, float *Kt)
{
    for (int64_t s = 0; s < P; s++)
        for (int64_t i = 0; i < hs; i++) Kt[i * P + s] = K[s * kstride + i];
}

/* att_row with keys transposed (Kt[i*ld + s]); same results bit for bit. */
static void att_row_t(const float *q, const float *Kt, int64_t ld, const float *V, int64_t vstride, int64_t n,
                      int64_t hs, float *att, float *out)
{
    float sq = sqrtf((float)hs);
    for (int64_t s = 0; s < n; s++) att[s] = 0.0f;
    for (int64_t i = 0; i < hs; i++) {
        float qi = q[i];
        const float *kr = Kt + i * ld;
#pragma omp simd
        for (int64_t s = 0; s < n; s++) att[s] += qi * kr[s];
    }
    float mx = -INFINITY;
#pragma omp simd
    for (int64_t s = 0; s < n; s++) att[s] /= sq;
#pragma omp simd reduction(max : mx)
    for (int64_t s = 0; s < n; s++) mx = att[s] > mx ? att[s] : mx;
    float sum = 0.0f;
    for (int64_t s = 0; s < n; s++) {
        att[s] = expf(att[s] - mx);
        sum += att[s];
    }
#pragma omp simd
    for (int64_t s = 0; s < n; s++) att[s] /= sum;
    for (int64_t i = 0; i < hs; i++) out[i] = 0.0f;
    for (int64_t s = 0; s < n; s++) {
        const float *vr = V + s * vstride;
        float a = att[s];
#pragma omp simd
        for (int64_t i = 0; i < hs; i++) out[i] += a * vr[i];
    }
}

/* Softmax probabilities only (backward recomputes them). */
static void att_probs_t(const float *q, const float *Kt, int64_t ld, int64_t n, int64_t hs, float *att)
{
    float sq = sqrtf((float)hs);
    for (int64_t s = 0; s < n; s++) att[s] = 0.0f;
    for (int64_t i = 0; i < hs; i++) {
        float qi = q[i];
        const float *kr = Kt + i * ld;
#pragma omp simd
        for (int64_t s = 0; s < n; s++) att[s] += qi * kr[s];
    }
    float mx = -INFINITY;
#pragma omp simd reduction(max : mx)
    for (int64_t s = 0; s < n; s++) {
        att[s] /= sq;
        mx = att[s] > mx ? att[s] : mx;
    }
    float sum = 0.0f;
    for (int64_t s = 0; s < n; s++) {
        att[s] = expf(att[s] - mx);
        sum += att[s];
    }
    float inv = 1.0f / sum;
#pragma omp simd
    for (int64_t s = 0; s < n; s++) att[s] *= inv;
}

static int att_fwd(sh_kctx *k, const sh_tensor *const *in, int n_in, sh_tensor *const *out, int n_out)
{
    (void)n_in, (void)n_out;
    att_dims d;
    int rc = att_params(k, in, &d);
    if (rc) return rc;
    int causal = (int)sh_attr_int(k->node, "causal", 1);
    const float *q = in[0]->data, *kin = in[1]->data, *vin = in[2]->data;
    float *y = out[0]->data;
    int64_t B = d.B, T = d.T, H = d.H, KV = d.KV, hs = d.hs, C = H * hs, KC = KV * hs, grp = H / KV;
    int64_t pos = k->training ? 0 : k->pos;
    float *probs = n_out > 1 && out[1] ? out[1]->data : NULL; /* distill: [B,H,T,T] */
    if (probs && pos > 0)
        return sh_op_err(k, SH_EUNSUPPORTED, "attention probabilities (output 1) need a run from pos 0, not %lld",
                         (long long)pos);
    const float *Kb = kin, *Vb = vin; /* keys of (b, kvh) at Kb + b*bstride + kvh*hstride */
    int64_t kstride = KC, bstride = T * KC, hstride = hs, P = T, kcap = 0;
    if (!k->training) {
        /* KV cache: write positions [pos, pos+T), attend over [0, pos+T) */
        kv_cache *c = *k->state;
        if (c && (c->B != B || c->KV != KV || c->hs != hs)) {
            if (pos > 0)
                return sh_op_err(k, SH_EINVAL,
                                 "KV cache holds batch %lld x %lld heads x %lld, run at pos %lld has batch %lld x "
                                 "%lld x %lld (set pos 0 to reset)",
                                 (long long)c->B, (long long)c->KV, (long long)c->hs, (long long)pos, (long long)B,
                                 (long long)KV, (long long)hs);
            sh_kv_cache_free(c);
            *k->state = c = NULL;
        }
        if (!c) {
            c = calloc(1, sizeof *c);
            if (!c) return sh_op_err(k, SH_ENOMEM, "out of memory");
            c->B = B, c->KV = KV, c->hs = hs;
            *k->state = c;
        }
        if (pos > c->len)
            return sh_op_err(k, SH_EINVAL, "run starts at pos %lld but the KV cache holds only %lld positions",
                             (long long)pos, (long long)c->len);
        P = pos + T;
        if (P > c->cap) {
            int64_t cap = c->cap ? c->cap : 64;
            while (cap < P) cap *= 2;
            size_t n = sizeof(float) * (size_t)(B * KV * cap * hs);
            float *nk = malloc(n ? n : 1), *nv = malloc(n ? n : 1);
            if (!nk || !nv) {
                free(nk), free(nv);
                return sh_op_err(k, SH_ENOMEM, "out of memory growing the KV cache to %lld positions", (long long)cap);
            }
            for (int64_t bh = 0; bh < B * KV; bh++)
                if (c->len > 0) {
                    for (int64_t i = 0; i < hs; i++)
                        memcpy(nk + (bh * hs + i) * cap, c->k + (bh * hs + i) * c->cap, sizeof(float) * (size_t)c->len);
                    memcpy(nv + bh * cap * hs, c->v + bh * c->cap * hs, sizeof(float) * (size_t)(c->len * hs));
                }
            free(c->k), free(c->v);
            c->k = nk, c->v = nv, c->cap = cap;
        }
        for (int64_t b = 0; b < B; b++)
            for (int64_t t = 0; t < T; t++)
                for (int64_t h = 0; h < KV; h++) {
                    size_t off = (size_t)(((b * KV + h) * c->cap + pos + t) * hs);
                    const float *kr = kin + (b * T + t) * KC + h * hs;
                    for (int64_t i = 0; i < hs; i++) c->k[((b * KV + h) * hs + i) * c->cap + pos + t] = kr[i];
                    memcpy(c->v + off, vin + (b * T + t) * KC + h * hs, sizeof(float) * (size_t)hs);
                }
        c->len = P;
        Kb = c->k, Vb = c->v;
        kstride = hs, bstride = KV * c->cap * hs, hstride = c->cap * hs, kcap = c->cap;
    }
    int nt = k->nthreads > 0 ? k->nthreads : 1;
    if (T * P * H * hs < 200000) nt = 1;
    /* Scores run over contiguous keys: the cache holds keys transposed; without
     * a cache (training) they are transposed per job when T >= 4.  The
     * arithmetic per score is the same either way (llama2.c's order). */
    int cached = !k->training, use_kt = !cached && T >= 4;
    size_t per = (size_t)(P + 1) + (use_kt ? (size_t)(hs * P) : 0);
    float *scr = sh_kctx_scratch(k, sizeof(float) * (size_t)nt * per);
    if (!scr) return sh_op_err(k, SH_ENOMEM, "out of memory");
    int64_t jobs = B * H;
    /* a small model's decode step (stories260K: 8 heads x 8 x <= 256
     * positions) costs less than starting a team */
    SH_PAR_FOR(nt > 1 && jobs > 1 && jobs * T * (P + 1) * hs >= 65536, nt, for (int64_t j = 0; j < jobs; j++) {
        int tid = omp_get_thread_num(); /* 0 outside a team */
        float *att = scr + (size_t)tid * per, *Kt = att + P + 1;
        int64_t b = j / H, h = j % H, kvh = h / grp;
        const float *Kh = Kb + b * bstride + kvh * hstride, *Vh = Vb + b * bstride + kvh * hstride;
        if (use_kt) transpose_keys(Kh, kstride, P, hs, Kt);
        const float *Kc = cached ? ((const kv_cache *)*k->state)->k + (b * KV + kvh) * hs * kcap : NULL;
        for (int64_t t = 0; t < T; t++) {
            int64_t n = causal ? pos + t + 1 : P;
            if (cached)
                att_row_t(q + (b * T + t) * C + h * hs, Kc, kcap, Vh, kstride, n, hs, att, y + (b * T + t) * C + h * hs);
            else if (use_kt)
                att_row_t(q + (b * T + t) * C + h * hs, Kt, P, Vh, kstride, n, hs, att, y + (b * T + t) * C + h * hs);
            else
                att_row(q + (b * T + t) * C + h * hs, Kh, Vh, kstride, n, hs, att, y + (b * T + t) * C + h * hs);
            if (probs) { /* distill: keep the probabilities of this row */
                float *pr = probs + ((b * H + h) * T + t) * T;
                memcpy(pr, att, sizeof(float) * (size_t)n);
                for (int64_t s = n; s < T; s++) pr[s] = 0.0f;
            }
        }
    });
    return SH_OK;
}

static int att_bwd(sh_kctx *k, const sh_tensor *const *in, int n_in, const sh_tensor *const *out, int n_out,
                   const sh_tensor *const *dout, sh_tensor *const *din)
{
    (void)n_in, (void)out;
    const float *dprobs = n_out > 1 && dout[1] ? dout[1]->data : NULL; /* distill: d(loss)/d(probabilities) */
    if (!dout[0] && !dprobs) return SH_OK;
    att_dims d;
    int rc = att_params(k, in, &d);
    if (rc) return rc;
    int causal = (int)sh_attr_int(k->node, "causal", 1);
    const float *q = in[0]->data, *kin = in[1]->data, *vin = in[2]->data, *dy = dout[0] ? dout[0]->data : NULL;
    float *dq = din[0] ? din[0]->data : NULL, *dk = din[1] ? din[1]->data : NULL, *dv = din[2] ? din[2]->data : NULL;
    int64_t B = d.B, T = d.T, H = d.H, KV = d.KV, hs = d.hs, C = H * hs, KC = KV * hs, grp = H / KV;
    int nt = k->nthreads > 0 ? k->nthreads : 1;
    if (T * T * H * hs < 100000) nt = 1;
    /* per thread: att, datt/ds (T each), Kt, Vt, dKt, dVt ([hs][T] each) */
    size_t per = (size_t)(2 * T + hs + 2) + 4 * (size_t)(hs * T);
    float *scr = sh_kctx_scratch(k, sizeof(float) * (size_t)nt * per);
    if (!scr) return sh_op_err(k, SH_ENOMEM, "out of memory");
    float scale = 1.0f / sqrtf((float)hs);
    int64_t jobs = B * KV; /* one job per kv head: owns its dk/dv slices */
#pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1)
    for (int64_t j = 0; j < jobs; j++) {
        int tid = omp_get_thread_num(); /* 0 outside a team */
        float *att = scr + (size_t)tid * per, *datt = att + T, *Kt = datt + T + hs + 2, *Vt = Kt + hs * T;
        float *dKt = Vt + hs * T, *dVt = dKt + hs * T;
        int64_t b = j / KV, kvh = j % KV;
        const float *Kh = kin + b * T * KC + kvh * hs, *Vh = vin + b * T * KC + kvh * hs;
        transpose_keys(Kh, KC, T, hs, Kt);
        transpose_keys(Vh, KC, T, hs, Vt);
        memset(dKt, 0, sizeof(float) * (size_t)(2 * hs * T));
        for (int64_t h = kvh * grp; h < (kvh + 1) * grp; h++)
            for (int64_t t = 0; t < T; t++) {
                int64_t n = causal ? t + 1 : T;
                const float *qt = q + (b * T + t) * C + h * hs, *g = dy ? dy + (b * T + t) * C + h * hs : NULL;
                att_probs_t(qt, Kt, T, n, hs, att);
                for (int64_t s = 0; s < n; s++) datt[s] = 0.0f;
                if (dprobs) /* distill: gradient arriving at the probabilities output */
                    for (int64_t s = 0; s < n; s++) datt[s] = dprobs[((b * H + h) * T + t) * T + s];
                for (int64_t i = 0; g && i < hs; i++) {
                    float gi = g[i];
                    const float *vr = Vt + i * T;
                    float *dvr = dVt + i * T;
#pragma omp simd
                    for (int64_t s = 0; s < n; s++) {
                        datt[s] += gi * vr[s];
                        dvr[s] += gi * att[s];
                    }
                }
                float dsum = 0.0f;
#pragma omp simd reduction(+ : dsum)
                for (int64_t s = 0; s < n; s++) dsum += datt[s] * att[s];
#pragma omp simd
                for (int64_t s = 0; s < n; s++) datt[s] = att[s] * (datt[s] - dsum) * scale; /* now ds */
                float *dqt = dq ? dq + (b * T + t) * C + h * hs : NULL;
                for (int64_t i = 0; i < hs; i++) {
                    const float *kr = Kt + i * T;
                    float *dkr = dKt + i * T, qi = qt[i], acc = 0.0f;
#pragma omp simd reduction(+ : acc)
                    for (int64_t s = 0; s < n; s++) {
                        acc += datt[s] * kr[s];
                        dkr[s] += qi * datt[s];
                    }
                    if (dqt) dqt[i] += acc;
                }
            }
        for (int64_t s = 0; s < T; s++)
            for (int64_t i = 0; i < hs; i++) {
                if (dk) dk[(b * T + s) * KC + kvh * hs + i] += dKt[i * T + s];
                if (dv) dv[(b * T + s) * KC + kvh * hs + i] += dVt[i * T + s];
            }
    }
    return SH_OK;
}

/* ---- SiluMul(a, b) = silu(a) * b ------------------------------------- */

static int silumul_infer(sh_kctx *k, const sh_tensor *const *in, int n_in, sh_tensor *const *out, int n_out)
{
    (void)n_in, (void)n_out;
    int rc;
    if ((rc = check_f32(k, in[0], "a")) || (rc = check_f32(k, in[1], "b"))) return rc;
    int same = in[0]->ndim == in[1]->ndim;
    for (int i = 0; same && i < in[0]->ndim; i++) same = in[0]->shape[i] == in[1]->shape[i];
    char a[160], b[160];
    if (!same)
        return sh_op_err(k, SH_ESHAPE, "inputs %s and %s must have the same shape",
                         sh_shape_str(in[0]->ndim, in[0]->shape, a, sizeof a),
                         sh_shape_str(in[1]->ndim, in[1]->shape, b, sizeof b));
    sh_tensor_set_shape(out[0], SH_F32, in[0]->ndim, in[0]->shape);
    return SH_OK;
}

static int silumul_fwd(sh_kctx *k, const sh_tensor *const *in, int n_in, sh_tensor *const *out, int n_out)
{
    (void)n_in, (void)n_out;
    const float *a = in[0]->data, *b = in[1]->data;
    float *y = out[0]->data;
    int64_t n = sh_tensor_numel(in[0]);
    int nt = k->nthreads > 0 ? k->nthreads : 1;
    SH_PAR_FOR(nt > 1 && n > 262144, nt, for (int64_t i = 0; i < n; i++) {
        float val = a[i];
        val *= (1.0f / (1.0f + expf(-val)));
        val *= b[i];
        y[i] = val;
    });
    return SH_OK;
}

static int silumul_bwd(sh_kctx *k, const sh_tensor *const *in, int n_in, const sh_tensor *const *out, int n_out,
                       const sh_tensor *const *dout, sh_tensor *const *din)
{
    (void)k, (void)n_in, (void)out, (void)n_out;
    if (!dout[0]) return SH_OK;
    const float *a = in[0]->data, *b = in[1]->data, *dy = dout[0]->data;
    float *da = din[0] ? din[0]->data : NULL, *db = din[1] ? din[1]->data : NULL;
    int64_t n = sh_tensor_numel(in[0]);
    for (int64_t i = 0; i < n; i++) {
        float s = 1.0f / (1.0f + expf(-a[i]));
        if (da) da[i] += dy[i] * b[i] * (s + a[i] * s * (1.0f - s));
        if (db) db[i] += dy[i] * a[i] * s;
    }
    return SH_OK;
}

static const sh_op_def op_rmsnorm = {"RMSNorm", 2, 2, 1, 1, rmsnorm_infer, rmsnorm_fwd, rmsnorm_bwd, 0, 0x2, NULL, 0};
static const sh_op_def op_rope = {"RoPE", 1, 1, 1, 1, rope_infer, rope_fwd, rope_bwd, 0, 0, NULL, 0};
static const sh_op_def op_attention = {"Attention", 3, 3, 1, 2, att_infer, att_fwd, att_bwd, 0, 0, sh_kv_cache_free, 0};
static const sh_op_def op_silumul = {"SiluMul", 2, 2, 1, 1, silumul_infer, silumul_fwd, silumul_bwd, 0, 0, NULL, 0};

const sh_op_def *const sh_ops_llm[] = {&op_rmsnorm, &op_rope, &op_attention, &op_silumul, NULL};
