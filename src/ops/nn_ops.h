/* nn_ops.h - private declarations shared by the nn op family files
 * (nn.c, conv.c, pool.c, norm.c). */
#ifndef SH_NN_OPS_H
#define SH_NN_OPS_H
#include "ops.h"

/* Geometry of a 1-D or 2-D sliding window over NC[H]W; 1-D is handled as
 * H = 1 with a 1x1 vertical window. */
typedef struct sh_win {
    int nsp;                 /* spatial dims of the input: 1, 2 (or 3) */
    int64_t N, C, H, W;
    int64_t kh, kw, sh, sw, dh, dw;
    int64_t pt, pl, pb, pr;  /* pads: top, left, bottom, right */
    int64_t OH, OW;
    /* depth (3-D inputs only; 1-D/2-D: D = kd = sd = dd = OD = 1, no pads) */
    int64_t D, kd, sd, dd, pf, pk, OD;
} sh_win;

/* Read kernel_shape (or use kernel[] when the op takes it from a weight:
 * pass kernel != NULL), strides, dilations, pads, auto_pad (and ceil_mode
 * when allow_ceil) from k->node for input x; fill w.  3-D inputs are
 * accepted when allow_3d.  Errors name shapes. */
int sh_win_setup(sh_kctx *k, const sh_tensor *x, const int64_t *kernel, int allow_ceil, int allow_dil, int allow_3d,
                 sh_win *w);

extern const sh_op_def sh_op_conv;
extern const sh_op_def sh_op_maxpool, sh_op_avgpool, sh_op_gavgpool, sh_op_gmaxpool;
extern const sh_op_def sh_op_batchnorm, sh_op_layernorm;

#endif
