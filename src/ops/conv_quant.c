/* conv_quant.c - Conv forward for a weight in a grouped quantized format
 * (weight-only quantization, src/compress/quantize.c).
 *
 * The weight is stored as the matrix [M, Kp] of the Conv weight's
 * [M, Cg*kh*kw] view (rows zero-padded to Kp, a multiple of the format's
 * group), with node attributes kernel_shape (kh, kw) and weight_k = Cg*kh*kw.
 *
 * The weight is prepared once per node into the node's state (again when its
 * bytes change: pointer, size and a checksum) and only the packed weight is
 * kept: no f32 copy.  The activations are unfolded per tile of output
 * positions (im2col, f32), quantized to q8_0 (one f16 scale per 32 k and
 * position, as sh_qweight_matmul does) and meet the packed weight in integer
 * dot products; the weight is dequantized inside the kernel (per 32-block
 * scale times activation scale on the int32 dot).
 *
 * Two kernels:
 * - AVX-512 VNNI for q8_0, q4_0, q4_1, q3_0, q2_1 and log4 weights (also their
 *   _g64 / _g128 rows, expanded to 32-blocks with the scale repeated): per
 *   group of 16 output channels and 32-block, 16 f16 scales (16 f16 mins for
 *   q4_1 / q2_1), then the codes, 64-byte vectors whose byte 4r+t holds
 *   channel r at k 4j+t (see cq_pack16); the same bytes as the format (18 /
 *   20 / 34 / 14 / 12 / 18 per 32 values).  The activations of a tile are
 *   quantized in vectors of 16 positions and stored as one int32 (4 k) per
 *   position, so a register tile of 8 positions x 16 channels re-uses each
 *   unpacked weight vector 8 times (vpdpbusd with a broadcast activation
 *   word).  Stride 1: the tile reads a zero-padded copy of its input rows
 *   on a "wide" grid (positions r * Wp + ow), so each k of a tile is one
 *   contiguous run that the quantizer loads directly (no im2col).
 * - otherwise (CPUs without AVX-512 VNNI when called directly: conv.c
 *   runs an f32 copy there, see conv_unpacked): one sh_qweight per group
 *   (qgemm.h) and sh_qweight_matmul on the tile's [positions, Kp] rows.
 * Threads split the tiles (images x position ranges) in one parallel region
 * per call.  2-D convolutions; no backward. */
#include <stdlib.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "gemm_quant.h"
#include "nn_ops.h"
#include "qgemm.h"

typedef struct cq_geom {
    sh_win w;
    int64_t M, G, Cg, Mg, K, Kp, OHW;
    int relu;
} cq_geom;

static int cq_setup(sh_kctx *k, const sh_tensor *const *in, int n_in, cq_geom *g)
{
    char b1[96], b2[96];
    const sh_tensor *x = in[0], *B = in[1], *bias = n_in > 2 ? in[2] : NULL;
    const sh_format_traits *ft = sh_format_get(B->fmt);
    int qg = 0, rows_fmt = sh_qrows_base(B->fmt, NULL) >= 0;
    if (rows_fmt) qg = SH_QK; /* _ch / _t: one scale per row / tensor, 32-blocks of codes */
    if (!ft || !ft->is_quantized || (!rows_fmt && sh_qbase_format(B->fmt, &qg) < 0))
        return sh_op_err(k, SH_EUNSUPPORTED, "Conv: weight format %s is not a grouped quantized format",
                         ft ? ft->name : "?");
    if (x->fmt != SH_F32 || (bias && bias->fmt != SH_F32))
        return sh_op_err(k, SH_EUNSUPPORTED, "Conv with a %s weight needs f32 input and bias", ft->name);
    const int64_t *ks;
    if (sh_attr_ints(k->node, "kernel_shape", &ks) != 2 || x->ndim != 4 || B->ndim != 2)
        return sh_op_err(k, SH_EUNSUPPORTED,
                         "Conv with a %s weight %s on input %s: needs a 2-D convolution (input [N,C,H,W]), a [M,K] "
                         "weight and kernel_shape (2 values)",
                         ft->name, sh_shape_str(B->ndim, B->shape, b2, sizeof b2),
                         sh_shape_str(x->ndim, x->shape, b1, sizeof b1));
    g->M = B->shape[0];
    g->Kp = B->shape[1];
    g->K = sh_attr_int(k->node, "weight_k", g->Kp);
    g->G = sh_attr_int(k->node, "group", 1);
    int64_t C = x->shape[1];
    if (g->G < 1 || C % g->G || g->M % g->G || ks[0] < 1 || ks[1] < 1)
        return sh_op_err(k, SH_ESHAPE, "input %s, %s weight %s: group %lld does not divide the channels", 
                         sh_shape_str(x->ndim, x->shape, b1, sizeof b1), ft->name,
                         sh_shape_str(B->ndim, B->shape, b2, sizeof b2), (long long)g->G);
    g->Cg = C / g->G, g->Mg = g->M / g->G;
    if (g->Cg * ks[0] * ks[1] != g->K || g->Kp % qg || g->K > g->Kp || g->Kp - g->K >= qg)
        return sh_op_err(k, SH_ESHAPE,
                         "input %s, %s weight %s, kernel %lldx%lld, group %lld: weight_k %lld should be %lld "
                         "(columns a multiple of %d, less than one group zero-padded)",
                         sh_shape_str(x->ndim, x->shape, b1, sizeof b1), ft->name,
                         sh_shape_str(B->ndim, B->shape, b2, sizeof b2), (long long)ks[0], (long long)ks[1],
                         (long long)g->G, (long long)g->K, (long long)(g->Cg * ks[0] * ks[1]), qg);
    if (bias && (bias->ndim != 1 || bias->shape[0] != g->M))
        return sh_op_err(k, SH_ESHAPE, "bias %s does not match the %lld output channels of the %s weight",
                         sh_shape_str(bias->ndim, bias->shape, b1, sizeof b1), (long long)g->M, ft->name);
    if (rows_fmt && (!B->data || B->nbytes != sh_qrows_bytes(B->fmt, g->M, g->Kp)))
        return sh_op_err(k, SH_ESHAPE, "%s weight %s holds %zu bytes, needs %zu", ft->name,
                         sh_shape_str(B->ndim, B->shape, b2, sizeof b2), B->nbytes,
                         sh_qrows_bytes(B->fmt, g->M, g->Kp));
    if (!rows_fmt && B->nbytes && B->nbytes < sh_format_bytes(B->fmt, g->M * g->Kp))
        return sh_op_err(k, SH_ESHAPE, "%s weight %s holds %zu bytes, needs %zu", ft->name,
                         sh_shape_str(B->ndim, B->shape, b2, sizeof b2), B->nbytes,
                         sh_format_bytes(B->fmt, g->M * g->Kp));
    int rc = sh_win_setup(k, x, ks, 0, 1, 0, &g->w);
    if (rc) return rc;
    const char *act = sh_attr_string(k->node, "activation", "");
    if (*act && strcmp(act, "Relu"))
        return sh_op_err(k, SH_EUNSUPPORTED, "activation '%s' (only Relu can be fused into Conv)", act);
    g->relu = *act != 0;
    g->OHW = g->w.OH * g->w.OW;
    return SH_OK;
}

int sh_conv_quantized_infer(sh_kctx *k, const sh_tensor *const *in, int n_in, sh_tensor *const *out, int n_out)
{
    (void)n_out;
    cq_geom g;
    int rc = cq_setup(k, in, n_in, &g);
    if (rc) return rc;
    int64_t s[4] = {g.w.N, g.M, g.w.OH, g.w.OW};
    sh_tensor_set_shape(out[0], SH_F32, 4, s);
    return SH_OK;
}

/* ---- prepared weight (the node's state) ---------------------------------- */

struct sh_conv_qstate {
    const void *src; /* weight it was prepared from: pointer, bytes, checksum */
    size_t nbytes;
    uint32_t sum;
    sh_format fmt;
    int64_t M, Kp, G;
    int level;
    int bits;         /* 8 / 4 / 3 / 2: the AVX-512 layout in wp; 0: sh_qweight per group in qw */
    int asym, off;    /* x = d * (u - off) + m (m: asym formats q4_1 / q2_1) */
    int islog;        /* log4: 4-bit codes s|e, mapped to u in the kernel; x = d / 64 * (u - 64) */
    uint8_t *wp;      /* [G][ngr][nb][32 + cb] */
    size_t wbytes;
    sh_qweight **qw;  /* G prepared weights */
};

void sh_conv_qstate_free(sh_conv_qstate *s)
{
    if (!s) return;
    free(s->wp);
    if (s->qw)
        for (int64_t i = 0; i < s->G; i++) sh_qweight_free(s->qw[i]);
    free(s->qw);
    free(s);
}

size_t sh_conv_qstate_bytes(const sh_conv_qstate *s)
{
    if (!s) return 0;
    size_t b = s->wbytes;
    if (s->qw)
        for (int64_t i = 0; i < s->G; i++) b += s->qw[i] ? s->qw[i]->bytes : 0;
    return b;
}

/* every word of small weights, 512 words spread over large ones (4 chains) */
static uint32_t cq_checksum(const void *p, size_t nbytes)
{
    const unsigned char *c = p;
    size_t n = nbytes / 4, step = n > 512 ? n / 512 : 1;
    uint32_t s[4] = {(uint32_t)nbytes, 1, 2, 3};
    for (size_t i = 0, l = 0; i < n; i += step, l = (l + 1) & 3) {
        uint32_t u;
        memcpy(&u, c + 4 * i, 4);
        s[l] = (s[l] ^ u) * 0x9E3779B1u;
        s[l] ^= s[l] >> 16;
    }
    return (s[0] ^ s[1] * 3u) ^ (s[2] * 5u ^ s[3] * 7u);
}

/* per (16 channels, 32-block): 16 f16 scales (and 16 f16 mins), then the codes */
static int64_t cq_hdr(int asym) { return asym ? 64 : 32; }
static int64_t cq_cb(int bits) { return bits == 8 ? 512 : bits == 4 ? 256 : bits == 3 ? 192 : 128; }

/* The AVX-512 layout of 16 channels (rows of W, row bytes rb, format f whose
 * base is q8_0 / q4_0 / q4_1 / q3_0 / q2_1 / log4; `rows` < 16: zero rows) per
 * 32-block: f16 scales, f16 mins (asym), then 64-byte code vectors, byte
 * 4r+t of vector j for channel r and k = 4j'+t: 8-bit: j' = j; 4-bit (4
 * vectors): low nibble j' = j, high nibble j' = j+4; 2-bit (2 vectors): bits
 * 2s..2s+1 j' = j+2s; 3-bit: the low 2 bits as 2-bit, then a vector whose
 * bit j' is the high bit.  Codes u as sh_qblock_unpack gives them (log4:
 * the 4-bit codes s|e and the f16 scale of the block, 64 times d). */
static void cq_pack16(const uint8_t *W, sh_format f, size_t rb, int64_t rows, int64_t Kp, int bits, int asym,
                      uint8_t *dst, uint8_t *xrow, int64_t row0)
{
    int64_t nb = Kp / SH_QK, hdr = cq_hdr(asym), chunk = hdr + cq_cb(bits);
    int g = 32;
    /* _ch / _t rows (W the whole buffer, row0 the first row): each block's
     * codes from the row, the row's f32 scale (and min) stored as the f16
     * block scale of this layout (relative rounding <= 2^-11) */
    int rows_fmt = sh_qrows_base(f, NULL) >= 0;
    sh_format base = rows_fmt ? (sh_format)sh_qrows_base(f, NULL) : (sh_format)sh_qbase_format(f, &g);
    int64_t bc = rows_fmt ? sh_qrows_block_codes(base) : 0;
    size_t bb = (size_t)sh_format_get(base)->block_bytes;
    memset(dst, 0, (size_t)(nb * chunk));
    for (int64_t r = 0; r < rows && r < 16; r++) {
        const uint8_t *row = rows_fmt ? NULL : W + (size_t)r * rb;
        float rd = 0.0f, rm = 0.0f;
        if (rows_fmt) rd = sh_qrows_scale(W, row0 + r, &rm);
        if (!rows_fmt && g > 32) {
            sh_qexpand(f, row, Kp, xrow);
            row = xrow;
        }
        for (int64_t b = 0; b < nb; b++) {
            uint8_t u[SH_QK], *c = dst + b * chunk, *cd = c + hdr;
            const uint8_t *blk = rows_fmt ? NULL : row + (size_t)b * bb;
            float d, m;
            if (rows_fmt) {
                sh_qrows_unpack_block(base, sh_qrows_codes(W, row0 + r) + b * bc, u);
                d = rd, m = rm;
            } else
                sh_qblock_unpack(base, blk, u, &d, &m);
            uint16_t dh = sh_f2h(d), mh = sh_f2h(m);
            if (base == SH_LOG4) { /* the 4-bit codes and the block's own f16 scale (d * 64) */
                for (int k = 0; k < SH_QK; k++) u[k] = k < 16 ? blk[2 + k] & 15 : blk[2 + k - 16] >> 4;
                memcpy(&dh, blk, 2);
            }
            memcpy(c + 2 * r, &dh, 2);
            if (asym) memcpy(c + 32 + 2 * r, &mh, 2);
            for (int k = 0; k < SH_QK; k++) {
                int j = k / 4, t = k % 4, at = (int)r * 4 + t;
                switch (bits) {
                case 8: cd[j * 64 + at] = u[k]; break;
                case 4: cd[(j & 3) * 64 + at] |= (uint8_t)(u[k] << (j >= 4 ? 4 : 0)); break;
                case 2: cd[(j & 1) * 64 + at] |= (uint8_t)(u[k] << (2 * (j >> 1))); break;
                default: /* 3 */
                    cd[(j & 1) * 64 + at] |= (uint8_t)((u[k] & 3) << (2 * (j >> 1)));
                    cd[128 + at] |= (uint8_t)((u[k] >> 2) << j);
                    break;
                }
            }
        }
    }
}

/* Prepare (or find prepared) the weight of this call. */
static int cq_state(sh_kctx *k, const sh_tensor *B, const cq_geom *g, sh_conv_qstate **out, int *owned)
{
    *owned = 0;
    int level = sh_cpu_level();
    sh_conv_qstate *s = k->state ? (sh_conv_qstate *)*k->state : NULL;
    int rows_fmt = sh_qrows_base(B->fmt, NULL) >= 0;
    uint32_t sum = cq_checksum(B->data, rows_fmt ? B->nbytes : sh_format_bytes(B->fmt, g->M * g->Kp));
    if (s && s->src == B->data && s->nbytes == B->nbytes && s->sum == sum && s->fmt == B->fmt && s->M == g->M &&
        s->Kp == g->Kp && s->G == g->G && s->level == level) {
        *out = s;
        return SH_OK;
    }
    if (s) {
        sh_conv_qstate_free(s);
        *k->state = NULL;
    }
    s = calloc(1, sizeof *s);
    if (!s) return sh_op_err(k, SH_ENOMEM, "out of memory for a quantized conv state");
    s->fmt = B->fmt, s->M = g->M, s->Kp = g->Kp, s->G = g->G, s->level = level;
    int base = rows_fmt ? sh_qrows_base(B->fmt, NULL) : sh_qbase_format(B->fmt, NULL);
    if (rows_fmt && base == SH_LOG4) base = -1; /* log4 rows: the portable prepared weight */
    size_t rb = sh_format_bytes(B->fmt, g->Kp);
#if defined(__x86_64__) && defined(__GNUC__)
    if (level == SH_CPU_LEVEL_AVX512 &&
        (base == SH_Q4_0 || base == SH_Q8_0 || base == SH_Q4_1 || base == SH_Q3_0 || base == SH_Q2_1 ||
         base == SH_LOG4)) {
        s->bits = sh_qpacked_bits((sh_format)base, &s->off, &s->asym);
        s->islog = base == SH_LOG4;
        int64_t nb = g->Kp / SH_QK, ngr = (g->Mg + 15) / 16, chunk = cq_hdr(s->asym) + cq_cb(s->bits);
        s->wbytes = (size_t)(g->G * ngr * nb * chunk);
        s->wp = aligned_alloc(64, (s->wbytes + 63) / 64 * 64);
        uint8_t *xrow = malloc(sh_format_bytes((sh_format)base, g->Kp));
        if (!s->wp || !xrow) {
            free(xrow);
            sh_conv_qstate_free(s);
            return sh_op_err(k, SH_ENOMEM, "out of memory preparing a %zu-byte quantized conv weight", s->wbytes);
        }
        for (int64_t gi = 0; gi < g->G; gi++)
            for (int64_t gr = 0; gr < ngr; gr++)
                cq_pack16((const uint8_t *)B->data + (rows_fmt ? 0 : (size_t)(gi * g->Mg + gr * 16) * rb), B->fmt, rb,
                          g->Mg - gr * 16, g->Kp, s->bits, s->asym, s->wp + (gi * ngr + gr) * nb * chunk, xrow,
                          gi * g->Mg + gr * 16);
        free(xrow);
    }
#endif
    if (!s->bits) {
        s->qw = calloc((size_t)g->G, sizeof *s->qw);
        if (!s->qw) {
            sh_conv_qstate_free(s);
            return sh_op_err(k, SH_ENOMEM, "out of memory for a quantized conv state");
        }
        for (int64_t gi = 0; gi < g->G; gi++) {
            sh_error e = {0};
            /* _ch / _t rows: the group's rows as their own buffer (f32
             * scales kept, codes at their size) */
            sh_tensor *sl = NULL;
            if (rows_fmt && g->G > 1 && sh_qrows_slice(B, gi * g->Mg, (gi + 1) * g->Mg, &sl, &e)) {
                sh_conv_qstate_free(s);
                return sh_op_err(k, e.code, "slicing group %lld of the %s weight: %s", (long long)gi,
                                 sh_format_get(B->fmt)->name, e.msg);
            }
            const char *src = rows_fmt ? (sl ? sl->data : B->data) : (const char *)B->data + (size_t)(gi * g->Mg) * rb;
            int prc = sh_qweight_new(src, B->fmt, g->Mg, g->Kp, -1, &s->qw[gi], &e);
            sh_tensor_free(sl);
            if (prc) {
                sh_conv_qstate_free(s);
                return sh_op_err(k, e.code, "preparing the %s weight of group %lld: %s", sh_format_get(B->fmt)->name,
                                 (long long)gi, e.msg);
            }
        }
    }
    s->src = B->data, s->nbytes = B->nbytes, s->sum = sum;
    if (k->state) *k->state = s;
    else *owned = 1;
    *out = s;
    return SH_OK;
}

/* ---- activations ---------------------------------------------------------- */

/* col[(k - k0) * ldk + p * ldp] for k in [k0, k1) (k = (ci*kh + i)*kw + j,
 * zero for k >= K) and the np output positions p0 ... of one image group
 * xg [Cg, H, W]. */
static inline __attribute__((always_inline)) void cq_im2col(const float *xg, const sh_win *w, int64_t K, int64_t k0,
                                                            int64_t k1, int64_t p0, int64_t np, float *col,
                                                            int64_t ldk, int64_t ldp)
{
    const int64_t khw = w->kh * w->kw, OW = w->OW, sw = w->sw;
    for (int64_t k = k0; k < k1; k++) {
        float *ck = col + (k - k0) * ldk;
        if (k >= K) {
            for (int64_t p = 0; p < np; p++) ck[p * ldp] = 0.0f;
            continue;
        }
        int64_t ci = k / khw, i = k % khw / w->kw, j = k % w->kw;
        const float *xc = xg + ci * w->H * w->W;
        int64_t oh = p0 / OW, ow = p0 % OW;
        for (int64_t p = 0; p < np;) {
            int64_t seg = OW - ow < np - p ? OW - ow : np - p;
            int64_t ih = oh * w->sh - w->pt + i * w->dh, iw0 = ow * sw - w->pl + j * w->dw;
            float *d = ck + p * ldp;
            if (ih < 0 || ih >= w->H) {
                for (int64_t t = 0; t < seg; t++) d[t * ldp] = 0.0f;
            } else {
                int64_t lo = iw0 < 0 ? (-iw0 + sw - 1) / sw : 0, hi = w->W - 1 - iw0 < 0 ? 0 : (w->W - 1 - iw0) / sw + 1;
                if (lo > seg) lo = seg;
                if (hi > seg) hi = seg;
                if (hi < lo) hi = lo;
                const float *s = xc + ih * w->W + iw0;
                for (int64_t t = 0; t < lo; t++) d[t * ldp] = 0.0f;
                if (sw == 1)
                    for (int64_t t = lo; t < hi; t++) d[t * ldp] = s[t];
                else
                    for (int64_t t = lo; t < hi; t++) d[t * ldp] = s[t * sw];
                for (int64_t t = hi; t < seg; t++) d[t * ldp] = 0.0f;
            }
            p += seg;
            ow += seg;
            if (ow == OW) ow = 0, oh++;
        }
    }
}

/* ---- AVX-512 VNNI kernel ---------------------------------------------------- */
#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define CQ_TARGET __attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")))
#define CQ_R 8 /* positions per register tile */

/* Quantize block b of a tile: the 32 k of positions [0, Pt) at
 * base + offs[t] + p (Pt here: the lanes to quantize, a multiple of 16) ->
 * A[Pt / 8][j][8] (int32: the s8 values of k 4j..4j+3 of a position, in
 * groups of 8 positions: a register tile's words at constant offsets), da[Pt] (the
 * f16-rounded scale, as f32), io[Pt] = -off * sum of the position's codes,
 * dsa[Pt] (if not NULL) = scale * sum (the min term of asym weights).
 * The same rounding as sh_quantize_q8_0_sums. */
CQ_TARGET static void cq_quant_block(const float *base, const int64_t *offs, int64_t Pt, int off, int32_t *A, float *da,
                                     int32_t *io, float *dsa)
{
    const __m512i ones = _mm512_set1_epi8(1), m127 = _mm512_set1_epi8(-127);
    /* per 128-bit lane: bytes a0..a3 b0..b3 c0..c3 d0..d3 -> words (a_i b_i c_i d_i) */
    const __m512i tr = _mm512_broadcast_i32x4(_mm_setr_epi8(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15));
    for (int64_t v = 0; v < Pt; v += 16) {
        __m512 amax = _mm512_setzero_ps();
        for (int t = 0; t < SH_QK; t++) amax = _mm512_max_ps(_mm512_abs_ps(_mm512_loadu_ps(base + offs[t] + v)), amax);
        __m512 d = _mm512_div_ps(amax, _mm512_set1_ps(127.0f));
        d = _mm512_cvtph_ps(_mm512_cvtps_ph(d, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
        __mmask16 nz = _mm512_cmp_ps_mask(d, _mm512_setzero_ps(), _CMP_NEQ_OQ);
        __m512 id = _mm512_maskz_div_ps(nz, _mm512_set1_ps(1.0f), d);
        __m512i sum = _mm512_setzero_si512();
        for (int j = 0; j < 8; j++) {
            __m512i q[4];
            for (int t = 0; t < 4; t++) /* round to nearest even; the packs below saturate */
                q[t] = _mm512_cvt_roundps_epi32(_mm512_mul_ps(_mm512_loadu_ps(base + offs[4 * j + t] + v), id),
                                                _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
            __m512i b8 = _mm512_packs_epi16(_mm512_packs_epi32(q[0], q[1]), _mm512_packs_epi32(q[2], q[3]));
            __m512i word = _mm512_shuffle_epi8(_mm512_max_epi8(b8, m127), tr); /* clamp to +-127 as q8_0 */
            sum = _mm512_dpbusd_epi32(sum, ones, word);
            _mm256_storeu_si256((__m256i *)(A + v * 8 + j * 8), _mm512_castsi512_si256(word));
            _mm256_storeu_si256((__m256i *)(A + v * 8 + 64 + j * 8), _mm512_extracti64x4_epi64(word, 1));
        }
        _mm512_storeu_ps(da + v, d);
        _mm512_storeu_si512(io + v, _mm512_mullo_epi32(sum, _mm512_set1_epi32(-off)));
        if (dsa) _mm512_storeu_ps(dsa + v, _mm512_mul_ps(d, _mm512_cvtepi32_ps(sum)));
    }
}

/* yt[(16 gr + c) * Pt + r] for positions r in [0, np) (rounded up to 8) of the tile and every group of
 * 16 channels of the weight wg ([ngr][nb][32 + cb]); A, da, io as above,
 * per block b at A + b * 8 * Pt, da / io + b * Pt. */
CQ_TARGET static inline __attribute__((always_inline)) void
cq_kernel_t(const uint8_t *wg, int bits, int asym, int islog, int64_t nb, int64_t ngr, const int32_t *A, const float *da,
            const int32_t *io, const float *dsa, int64_t Pt, int64_t np, float *yt)
{
    const int64_t hdr = cq_hdr(asym), chunk = hdr + cq_cb(bits);
    const __m512i m4 = _mm512_set1_epi8(15), m3 = _mm512_set1_epi8(3), one = _mm512_set1_epi8(1);
    /* log4 code s|e -> u: 64 +- (64 >> e), e = 7: 64 (sh_qblock_unpack) */
    const __m512i lut = _mm512_broadcast_i32x4(
        _mm_setr_epi8((char)128, 96, 80, 72, 68, 66, 65, 64, 0, 32, 48, 56, 60, 62, 63, 64));
    for (int64_t r0 = 0; r0 < np; r0 += CQ_R) {
        for (int64_t gr = 0; gr < ngr; gr++) {
            const uint8_t *wc = wg + gr * nb * chunk;
            __m512 y0 = _mm512_setzero_ps(), y1 = y0, y2 = y0, y3 = y0, y4 = y0, y5 = y0, y6 = y0, y7 = y0;
            for (int64_t b = 0; b < nb; b++, wc += chunk) {
                __m512 dw = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)wc));
                if (islog) dw = _mm512_mul_ps(dw, _mm512_set1_ps(1.0f / 64.0f));
                __m512 mw = asym ? _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(wc + 32))) : dw;
                const uint8_t *cd = wc + hdr;
                __m512i w0, w1, w2, w3, w4, w5, w6, w7;
                if (bits == 4) {
                    __m512i v0 = _mm512_loadu_si512(cd), v1 = _mm512_loadu_si512(cd + 64);
                    __m512i v2 = _mm512_loadu_si512(cd + 128), v3 = _mm512_loadu_si512(cd + 192);
                    w0 = _mm512_and_si512(v0, m4), w4 = _mm512_and_si512(_mm512_srli_epi16(v0, 4), m4);
                    w1 = _mm512_and_si512(v1, m4), w5 = _mm512_and_si512(_mm512_srli_epi16(v1, 4), m4);
                    w2 = _mm512_and_si512(v2, m4), w6 = _mm512_and_si512(_mm512_srli_epi16(v2, 4), m4);
                    w3 = _mm512_and_si512(v3, m4), w7 = _mm512_and_si512(_mm512_srli_epi16(v3, 4), m4);
                    if (islog) {
                        w0 = _mm512_shuffle_epi8(lut, w0), w1 = _mm512_shuffle_epi8(lut, w1);
                        w2 = _mm512_shuffle_epi8(lut, w2), w3 = _mm512_shuffle_epi8(lut, w3);
                        w4 = _mm512_shuffle_epi8(lut, w4), w5 = _mm512_shuffle_epi8(lut, w5);
                        w6 = _mm512_shuffle_epi8(lut, w6), w7 = _mm512_shuffle_epi8(lut, w7);
                    }
                } else if (bits == 8) {
                    w0 = _mm512_loadu_si512(cd), w1 = _mm512_loadu_si512(cd + 64);
                    w2 = _mm512_loadu_si512(cd + 128), w3 = _mm512_loadu_si512(cd + 192);
                    w4 = _mm512_loadu_si512(cd + 256), w5 = _mm512_loadu_si512(cd + 320);
                    w6 = _mm512_loadu_si512(cd + 384), w7 = _mm512_loadu_si512(cd + 448);
                } else { /* 2-bit, 3-bit: the low two bits, then the high bit */
                    __m512i v0 = _mm512_loadu_si512(cd), v1 = _mm512_loadu_si512(cd + 64);
                    w0 = _mm512_and_si512(v0, m3), w1 = _mm512_and_si512(v1, m3);
                    w2 = _mm512_and_si512(_mm512_srli_epi16(v0, 2), m3), w3 = _mm512_and_si512(_mm512_srli_epi16(v1, 2), m3);
                    w4 = _mm512_and_si512(_mm512_srli_epi16(v0, 4), m3), w5 = _mm512_and_si512(_mm512_srli_epi16(v1, 4), m3);
                    w6 = _mm512_and_si512(_mm512_srli_epi16(v0, 6), m3), w7 = _mm512_and_si512(_mm512_srli_epi16(v1, 6), m3);
                    if (bits == 3) {
                        __m512i h = _mm512_loadu_si512(cd + 128);
#define CQ_HB(wj, j) wj = _mm512_or_si512(wj, _mm512_slli_epi16(_mm512_and_si512(_mm512_srli_epi16(h, j), one), 2))
                        CQ_HB(w0, 0); CQ_HB(w1, 1); CQ_HB(w2, 2); CQ_HB(w3, 3);
                        CQ_HB(w4, 4); CQ_HB(w5, 5); CQ_HB(w6, 6); CQ_HB(w7, 7);
#undef CQ_HB
                    }
                }
                const int32_t *a = A + b * 8 * Pt + r0 * 8, *o = io + b * Pt + r0;
                const float *d = da + b * Pt + r0, *ds = asym ? dsa + b * Pt + r0 : NULL;
/* acc += u8 w . s8 broadcast activation word (asm: GCC 12 copies
 * accumulators around the intrinsic, see qgemm_avx512.c) */
#define CQ_DP(acc, wv, j, r) __asm__("vpdpbusd %2, %1, %0" : "+v"(acc) : "v"(wv), "v"(_mm512_set1_epi32(a[(j) * 8 + (r)])))
/* j outer, positions inner: 8 independent accumulator chains in program order */
#define CQ_J(wv, j)                                                                                     \
    CQ_DP(c0, wv, j, 0); CQ_DP(c1, wv, j, 1); CQ_DP(c2, wv, j, 2); CQ_DP(c3, wv, j, 3);                 \
    CQ_DP(c4, wv, j, 4); CQ_DP(c5, wv, j, 5); CQ_DP(c6, wv, j, 6); CQ_DP(c7, wv, j, 7);
#define CQ_ROW(r)                                                                                  \
    y##r = _mm512_fmadd_ps(_mm512_mul_ps(_mm512_cvtepi32_ps(c##r), _mm512_set1_ps(d[r])), dw, y##r);   \
    if (asym) y##r = _mm512_fmadd_ps(mw, _mm512_set1_ps(ds[r]), y##r);
                __m512i c0 = _mm512_set1_epi32(o[0]), c1 = _mm512_set1_epi32(o[1]), c2 = _mm512_set1_epi32(o[2]),
                        c3 = _mm512_set1_epi32(o[3]), c4 = _mm512_set1_epi32(o[4]), c5 = _mm512_set1_epi32(o[5]),
                        c6 = _mm512_set1_epi32(o[6]), c7 = _mm512_set1_epi32(o[7]);
                CQ_J(w0, 0) CQ_J(w1, 1) CQ_J(w2, 2) CQ_J(w3, 3) CQ_J(w4, 4) CQ_J(w5, 5) CQ_J(w6, 6) CQ_J(w7, 7)
                CQ_ROW(0) CQ_ROW(1) CQ_ROW(2) CQ_ROW(3) CQ_ROW(4) CQ_ROW(5) CQ_ROW(6) CQ_ROW(7)
#undef CQ_ROW
#undef CQ_J
#undef CQ_DP
            }
            /* transpose 8 positions x 16 channels in registers: yt [channel][Pt] */
            __m512 t0 = _mm512_unpacklo_ps(y0, y1), t1 = _mm512_unpackhi_ps(y0, y1);
            __m512 t2 = _mm512_unpacklo_ps(y2, y3), t3 = _mm512_unpackhi_ps(y2, y3);
            __m512 t4 = _mm512_unpacklo_ps(y4, y5), t5 = _mm512_unpackhi_ps(y4, y5);
            __m512 t6 = _mm512_unpacklo_ps(y6, y7), t7 = _mm512_unpackhi_ps(y6, y7);
            /* u[q] lane L: channel 4L+q, positions 0-3; u[q+4]: positions 4-7 */
            __m512 u[8] = {_mm512_shuffle_ps(t0, t2, 0x44), _mm512_shuffle_ps(t0, t2, 0xEE),
                           _mm512_shuffle_ps(t1, t3, 0x44), _mm512_shuffle_ps(t1, t3, 0xEE),
                           _mm512_shuffle_ps(t4, t6, 0x44), _mm512_shuffle_ps(t4, t6, 0xEE),
                           _mm512_shuffle_ps(t5, t7, 0x44), _mm512_shuffle_ps(t5, t7, 0xEE)};
            const __m512i ilo = _mm512_setr_epi32(0, 1, 2, 3, 16, 17, 18, 19, 4, 5, 6, 7, 20, 21, 22, 23);
            const __m512i ihi = _mm512_setr_epi32(8, 9, 10, 11, 24, 25, 26, 27, 12, 13, 14, 15, 28, 29, 30, 31);
            float *o = yt + gr * 16 * Pt + r0;
            for (int q = 0; q < 4; q++) {
                __m512 lo = _mm512_permutex2var_ps(u[q], ilo, u[q + 4]); /* channels q, 4+q */
                __m512 hi = _mm512_permutex2var_ps(u[q], ihi, u[q + 4]); /* channels 8+q, 12+q */
                _mm256_storeu_ps(o + q * Pt, _mm512_castps512_ps256(lo));
                _mm256_storeu_ps(o + (4 + q) * Pt, _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(lo), 1)));
                _mm256_storeu_ps(o + (8 + q) * Pt, _mm512_castps512_ps256(hi));
                _mm256_storeu_ps(o + (12 + q) * Pt, _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(hi), 1)));
            }
        }
    }
}

/* cq_store for a channel-major tile (ldp 1, ldm Pt) */
CQ_TARGET static void cq_store_avx512(const float *yt, int64_t Pt, int64_t Wt, int64_t Mg, int64_t OHW, int64_t OW,
                                      int64_t oh0, int64_t nr, int relu, const float *bias, float *yg)
{
    for (int64_t m = 0; m < Mg; m++) {
        __m512 b = _mm512_set1_ps(bias ? bias[m] : 0.0f), z = _mm512_setzero_ps();
        for (int64_t rr = 0; rr < nr; rr++) {
            float *d = yg + m * OHW + (oh0 + rr) * OW;
            const float *sp = yt + m * Pt + rr * Wt;
            for (int64_t ow = 0; ow < OW; ow += 16) {
                __mmask16 k = OW - ow >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (OW - ow)) - 1);
                __m512 v = _mm512_add_ps(_mm512_maskz_loadu_ps(k, sp + ow), b);
                if (relu) v = _mm512_max_ps(v, z);
                _mm512_mask_storeu_ps(d + ow, k, v);
            }
        }
    }
}

#define CQ_KERNEL(name, bits, asym, islog)                                                                       \
    CQ_TARGET static void name(const uint8_t *wg, int64_t nb, int64_t ngr, const int32_t *A, const float *da,          \
                               const int32_t *io, const float *dsa, int64_t Pt, int64_t np, float *yt)                 \
    {                                                                                                                  \
        cq_kernel_t(wg, bits, asym, islog, nb, ngr, A, da, io, dsa, Pt, np, yt);                                       \
    }
CQ_KERNEL(cq_kernel8, 8, 0, 0)
CQ_KERNEL(cq_kernel4, 4, 0, 0)
CQ_KERNEL(cq_kernel4l, 4, 0, 1)
CQ_KERNEL(cq_kernel4a, 4, 1, 0)
CQ_KERNEL(cq_kernel3, 3, 0, 0)
CQ_KERNEL(cq_kernel2a, 2, 1, 0)
#undef CQ_KERNEL
#endif

/* ---- driver --------------------------------------------------------------- */

#define CQ_PT 64 /* positions per tile (about) */

typedef struct cq_run {
    const cq_geom *g;
    const sh_conv_qstate *s;
    const float *x, *bias;
    float *y;
    const int64_t *offk; /* wide: offset of k's tap in the tile buffer (k >= K: the zero region) */
    int wide;            /* stride 1, AVX-512 kernel: the "wide grid" (no im2col) */
    int64_t rows, ntile; /* output rows per tile, tiles per image */
    int64_t Wt, Pt;      /* positions per output row in a tile (Wp or OW), positions per tile (x16) */
    int64_t Hs, Wp, xsz; /* wide: rows, row width and floats of the tile's padded input */
    int64_t per;         /* scratch floats per thread */
} cq_run;

/* Wide grid (stride 1): the tile's output rows [oh0, oh0 + nr) read the
 * zero-padded input rows xt [Cg][Hs][Wp]; position p = r * Wp + ow (ow < OW
 * real, the rest junk) reads tap (i, j) of channel ci at
 * xt[ci*Hs*Wp + i*dh*Wp + j*dw + p]: each k is one contiguous run of the
 * tile's positions, loaded straight by the quantizer. */
static void cq_pad_rows(const cq_run *r, const float *xg, int64_t oh0, int64_t nr, float *restrict xt)
{
    const sh_win *w = &r->g->w;
    int64_t Wp = r->Wp, hs = nr + (w->kh - 1) * w->dh, plane = r->Hs * Wp, pl = w->pl, W = w->W;
    /* plain loops: rows are a few dozen floats, too short for memcpy calls */
    for (int64_t c = 0; c < r->g->Cg; c++)
        for (int64_t h = 0; h < r->Hs; h++) {
            float *restrict d = xt + c * plane + h * Wp;
            int64_t ih = oh0 - w->pt + h;
            if (h >= hs || ih < 0 || ih >= w->H) {
                for (int64_t i = 0; i < Wp; i++) d[i] = 0.0f;
                continue;
            }
            const float *restrict s = xg + (c * w->H + ih) * W;
            for (int64_t i = 0; i < pl; i++) d[i] = 0.0f;
            for (int64_t i = 0; i < W; i++) d[pl + i] = s[i];
            for (int64_t i = pl + W; i < Wp; i++) d[i] = 0.0f;
        }
    for (int64_t i = r->g->Cg * plane; i < r->xsz; i++) xt[i] = 0.0f;
}

/* Tile yt of output rows oh0.. (Wt positions per row, the first OW real;
 * element (position p, channel m) at yt[p * ldp + m * ldm]) -> group output
 * yg [Mg][OH*OW] with bias and Relu. */
static void cq_store(const cq_run *r, const float *yt, int64_t ldp, int64_t ldm, int64_t oh0, int64_t nr,
                     const float *bias, float *yg)
{
    const cq_geom *g = r->g;
    int64_t OW = g->w.OW;
    for (int64_t m = 0; m < g->Mg; m++) {
        float b = bias ? bias[m] : 0.0f;
        for (int64_t rr = 0; rr < nr; rr++) {
            float *d = yg + m * g->OHW + (oh0 + rr) * OW;
            const float *s = yt + rr * r->Wt * ldp + m * ldm;
            for (int64_t ow = 0; ow < OW; ow++) {
                float v = s[ow * ldp] + b;
                d[ow] = g->relu && v < 0.0f ? 0.0f : v;
            }
        }
    }
}

/* Tile t (image n = t / ntile) of every group; scr: this thread's buffer. */
static int cq_tile(const cq_run *r, int64_t t, float *scr, sh_error *e)
{
    const cq_geom *g = r->g;
    const sh_win *w = &g->w;
    const sh_conv_qstate *s = r->s;
    int64_t n = t / r->ntile, oh0 = t % r->ntile * r->rows;
    int64_t nr = w->OH - oh0 < r->rows ? w->OH - oh0 : r->rows, np = nr * r->Wt;
    int64_t nb = g->Kp / SH_QK, Pt = r->Pt, ngr = (g->Mg + 15) / 16, ldt = ngr * 16;
    for (int64_t gi = 0; gi < g->G; gi++) {
        const float *xg = r->x + (n * w->C + gi * g->Cg) * w->H * w->W;
        const float *bias = r->bias ? r->bias + gi * g->Mg : NULL;
        float *yg = r->y + (n * g->M + gi * g->Mg) * g->OHW;
#if defined(__x86_64__) && defined(__GNUC__)
        if (s->bits) {
            /* scratch: da [nb][Pt], dsa [nb][Pt], yt [ldt][Pt], A [nb][8][Pt], io [nb][Pt], then xt (wide)
             * or col [32][Pt] */
            float *da = scr, *dsa = da + nb * Pt, *yt = dsa + nb * Pt;
            int32_t *A = (int32_t *)(yt + Pt * ldt), *io = A + nb * 8 * Pt;
            float *xb = (float *)(io + nb * Pt);
            int off = s->off;
            int64_t npv = (np + 15) / 16 * 16; /* lanes to quantize (the kernel reads up to np rounded to 8) */
            if (r->wide) {
                cq_pad_rows(r, xg, oh0, nr, xb);
                for (int64_t b = 0; b < nb; b++)
                    cq_quant_block(xb, r->offk + b * SH_QK, npv, off, A + b * 8 * Pt, da + b * Pt, io + b * Pt,
                                   s->asym ? dsa + b * Pt : NULL);
            } else {
                int64_t offs[SH_QK];
                for (int q = 0; q < SH_QK; q++) offs[q] = q * Pt;
                for (int64_t b = 0; b < nb; b++) {
                    cq_im2col(xg, w, g->K, b * SH_QK, (b + 1) * SH_QK, oh0 * w->OW, np, xb, Pt, 1);
                    if (np < Pt)
                        for (int q = 0; q < SH_QK; q++) memset(xb + q * Pt + np, 0, sizeof(float) * (size_t)(Pt - np));
                    cq_quant_block(xb, offs, npv, off, A + b * 8 * Pt, da + b * Pt, io + b * Pt, s->asym ? dsa + b * Pt : NULL);
                }
            }
            const uint8_t *wg = s->wp + gi * ngr * nb * (cq_hdr(s->asym) + cq_cb(s->bits));
            switch (s->bits * 2 + s->asym) {
            case 16: cq_kernel8(wg, nb, ngr, A, da, io, dsa, Pt, np, yt); break;
            case 8:
                if (s->islog) cq_kernel4l(wg, nb, ngr, A, da, io, dsa, Pt, np, yt);
                else cq_kernel4(wg, nb, ngr, A, da, io, dsa, Pt, np, yt);
                break;
            case 9: cq_kernel4a(wg, nb, ngr, A, da, io, dsa, Pt, np, yt); break;
            case 6: cq_kernel3(wg, nb, ngr, A, da, io, dsa, Pt, np, yt); break;
            default: cq_kernel2a(wg, nb, ngr, A, da, io, dsa, Pt, np, yt); break;
            }
            cq_store_avx512(yt, Pt, r->Wt, g->Mg, g->OHW, w->OW, oh0, nr, g->relu, bias, yg);
            continue;
        }
#endif
        /* scratch: col [Pt][Kp], yt [Pt][Mg] */
        float *col = scr, *yt = col + Pt * g->Kp;
        cq_im2col(xg, w, g->K, 0, g->Kp, oh0 * w->OW, np, col, 1, g->Kp);
        int rc = sh_qweight_matmul(col, np, s->qw[gi], NULL, yt, 1, e);
        if (rc) return rc;
        cq_store(r, yt, g->Mg, 1, oh0, nr, bias, yg);
    }
    return SH_OK;
}

int sh_conv_quantized(sh_kctx *k, const sh_tensor *const *in, int n_in, sh_tensor *const *out, int n_out)
{
    (void)n_out;
    cq_geom g;
    int rc = cq_setup(k, in, n_in, &g);
    if (rc) return rc;
    if (!in[0]->data || !in[1]->data || !out[0]->data) return sh_op_err(k, SH_EINVAL, "quantized Conv: no data");
    sh_conv_qstate *s = NULL;
    int owned = 0;
    if ((rc = cq_state(k, in[1], &g, &s, &owned))) return rc;
    const sh_win *w = &g.w;
    int nth = k->nthreads > 0 ? k->nthreads : 1;
    int64_t nb = g.Kp / SH_QK, ngr = (g.Mg + 15) / 16;
    cq_run r = {.g = &g, .s = s, .x = in[0]->data, .bias = n_in > 2 && in[2] ? in[2]->data : NULL, .y = out[0]->data};
    r.wide = s->bits && w->sw == 1 && w->sh == 1;
    r.Wp = w->W + w->pl + w->pr;
    r.Wt = r.wide ? r.Wp : w->OW;
    /* tiles of whole output rows, about CQ_PT positions; at batch 1 enough
     * tiles for the threads */
    r.rows = CQ_PT / r.Wt < 1 ? 1 : CQ_PT / r.Wt;
    if (w->N < nth && r.rows > (w->OH + nth - 1) / nth) r.rows = (w->OH + nth - 1) / nth;
    if (r.rows > w->OH) r.rows = w->OH;
    r.ntile = (w->OH + r.rows - 1) / r.rows;
    r.Pt = (r.rows * r.Wt + 15) / 16 * 16;
    r.Hs = r.rows + (w->kh - 1) * w->dh;
    r.xsz = g.Cg * r.Hs * r.Wp + 2 * r.Pt + 16;
    if (s->bits)
        r.per = nb * r.Pt * 11 + r.Pt * ngr * 16 + (r.wide ? r.xsz : 32 * r.Pt);
    else
        r.per = r.Pt * (g.Kp + g.Mg);
    r.per = (r.per + 15) / 16 * 16;
    int64_t work = w->N * r.ntile, nk = r.wide ? (g.Kp + 15) / 16 * 16 : 0;
    if (nth > work) nth = (int)work;
    float *scr = sh_kctx_scratch(k, sizeof(float) * (size_t)(r.per * nth + 16) + sizeof(int64_t) * (size_t)nk);
    if (!scr) {
        if (owned) sh_conv_qstate_free(s);
        return sh_op_err(k, SH_ENOMEM, "out of memory for quantized conv buffers (%lld floats)",
                         (long long)(r.per * nth));
    }
    if (r.wide) {
        int64_t *offk = (int64_t *)scr, plane = r.Hs * r.Wp, kk = 0;
        for (int64_t ci = 0; ci < g.Cg; ci++)
            for (int64_t i = 0; i < w->kh; i++)
                for (int64_t j = 0; j < w->kw; j++) offk[kk++] = ci * plane + i * w->dh * r.Wp + j * w->dw;
        for (; kk < g.Kp; kk++) offk[kk] = g.Cg * plane + r.Pt;
        r.offk = offk;
        scr = (float *)(offk + nk);
    }
    scr += (16 - ((uintptr_t)scr / sizeof(float)) % 16) % 16; /* 64-byte aligned */
    sh_error e = {0};
    int err = 0;
#pragma omp parallel num_threads(nth) if (nth > 1)
    {
#ifdef _OPENMP
        int t = omp_get_thread_num(), T = omp_get_num_threads();
#else
        int t = 0, T = 1;
#endif
        sh_error le = {0};
        int lrc = 0;
        for (int64_t i = work * t / T; i < work * (t + 1) / T && !lrc; i++) lrc = cq_tile(&r, i, scr + t * r.per, &le);
        if (lrc) {
#pragma omp critical(sh_conv_quant_err)
            if (!err) err = lrc, e = le;
        }
    }
    if (owned) sh_conv_qstate_free(s);
    if (err) return sh_op_err(k, err, "%s", e.msg);
    return SH_OK;
}
