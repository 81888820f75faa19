/* qgemm_ref.c - portable C reference of the integer kernels: the maths of
 * qgemm.h written out plainly; every SIMD path is tested against it. */
#include <stdlib.h>
#include <string.h>

#include "ops/qgemm.h"

void sh_qgemm_ref_run(const uint8_t *A, int a_signed, int64_t lda, int64_t m0, int64_t m1, const sh_qgemm_b *B,
                      int32_t a_zero, const sh_qepi_k *e, void *C, int64_t ldc)
{
    int64_t N = B->N, K = B->K;
    const int8_t *b = B->data;
    int32_t row[256];
    for (int64_t m = m0; m < m1; m++) {
        for (int64_t n0 = 0; n0 < N; n0 += 256) {
            int64_t nn = N - n0 < 256 ? N - n0 : 256;
            for (int64_t j = 0; j < nn; j++) {
                const int8_t *bn = b + (n0 + j) * K;
                int32_t s = 0;
                if (a_signed) {
                    const int8_t *a = (const int8_t *)A + m * lda;
                    for (int64_t k = 0; k < K; k++) s += ((int32_t)a[k] - a_zero) * bn[k];
                } else {
                    const uint8_t *a = A + m * lda;
                    for (int64_t k = 0; k < K; k++) s += ((int32_t)a[k] - a_zero) * bn[k];
                }
                row[j] = s;
            }
            sh_qepi_apply(e, row, 0, 1, nn, m, n0, C, ldc, 0);
        }
    }
}

void sh_qdot_rows_ref(const void *W, sh_format wf, int64_t K, int64_t n0, int64_t n1, const sh_block_q8_0 *xq,
                      const int32_t *xs, const float *bias, float *y)
{
    const sh_format_traits *ft = sh_format_get(wf);
    int64_t nb = K / SH_QK;
    size_t bb = (size_t)ft->block_bytes;
    for (int64_t n = n0; n < n1; n++) {
        const unsigned char *row = (const unsigned char *)W + (size_t)n * nb * bb;
        float acc = 0.0f;
        for (int64_t b = 0; b < nb; b++) {
            uint8_t u[SH_QK];
            float d, m;
            int off = sh_qblock_unpack(wf, row + b * bb, u, &d, &m);
            int32_t s = 0;
            for (int i = 0; i < SH_QK; i++) s += (int32_t)u[i] * xq[b].qs[i];
            s -= off * xs[b];
            float da = sh_h2f(xq[b].d);
            acc += d * da * (float)s + m * da * (float)xs[b];
        }
        y[n] = acc + (bias ? bias[n] : 0.0f);
    }
}

/* Portable reading of the 16-row packed layout (qgemm.h): used when a packed
 * weight runs at a lower level than it was prepared for, and as the
 * reference of the AVX-512 packed kernel. */
void sh_qpacked_rows_ref(const sh_qweight *w, int64_t g0, int64_t g1, const sh_block_q8_0 *xq, const int32_t *xs,
                         const float *bias, float *y)
{
    static const uint8_t log_u[16] = {128, 96, 80, 72, 68, 66, 65, 64, 0, 32, 48, 56, 60, 62, 63, 64};
    int off, asym, bits = sh_qpacked_bits(w->base, &off, &asym);
    int64_t nb = w->K / SH_QK, gb = w->gblk, nsg = nb / gb;
    int islog = w->base == SH_LOG4;
    for (int64_t g = g0; g < g1; g++)
        for (int r = 0; r < 16; r++) {
            int64_t n = g * 16 + r;
            if (n >= w->N) break;
            float acc = 0.0f, accm = 0.0f;
            for (int64_t sg = 0; sg < nsg; sg++) {
                const int64_t spc = w->spc, nch = (nsg + spc - 1) / spc;
                const uint8_t *c0 = (const uint8_t *)w->data + (g * nch + sg / spc) * w->chunk;
                const uint8_t *ch = c0 + sg % spc * w->hdr; /* scales */
                const uint8_t *cd = c0 + spc * w->hdr + sg % spc * gb * w->cb;
                float d, m = 0.0f;
                if (w->f32s) {
                    memcpy(&d, ch + 4 * r, 4);
                    if (asym) memcpy(&m, ch + 64 + 4 * r, 4);
                } else {
                    uint16_t dh, mh = 0;
                    memcpy(&dh, ch + 2 * r, 2);
                    if (asym) memcpy(&mh, ch + 32 + 2 * r, 2);
                    d = sh_h2f(dh), m = sh_h2f(mh);
                }
                float ga = 0.0f, gs = 0.0f;
                for (int64_t bi = 0; bi < gb; bi++) {
                    int64_t b = sg * gb + bi;
                    const uint8_t *codes = cd + bi * w->cb;
                    int32_t s = 0;
                    for (int i = 0; i < SH_QK; i++) {
                        int j = i / 4, at = r * 4 + i % 4, u = 0;
                        switch (bits) {
                        case 8: u = codes[j * 64 + at]; break;
                        case 4: u = (codes[(j & 3) * 64 + at] >> (j >= 4 ? 4 : 0)) & 15; break;
                        case 2: u = (codes[(j & 1) * 64 + at] >> (2 * (j >> 1))) & 3; break;
                        case 3:
                            u = ((codes[(j & 1) * 64 + at] >> (2 * (j >> 1))) & 3) | (((codes[128 + at] >> j) & 1) << 2);
                            break;
                        }
                        if (islog) u = log_u[u];
                        s += u * xq[b].qs[i];
                    }
                    s -= off * xs[b];
                    float da = sh_h2f(xq[b].d) * (islog ? 1.0f / 64.0f : 1.0f);
                    if (gb == 1) { /* one scale per 32: as the AVX-512 kernel, d * da per block */
                        acc += (float)s * (d * da);
                        accm += m * (sh_h2f(xq[b].d) * (float)xs[b]);
                    } else {
                        ga += (float)s * da;
                        gs += sh_h2f(xq[b].d) * (float)xs[b];
                    }
                }
                if (gb > 1) {
                    acc += ga * d;
                    accm += m * gs;
                }
            }
            y[n] = acc + accm + (bias ? bias[n] : 0.0f);
        }
}
