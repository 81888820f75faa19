/* nn.c - Conv, Gemm, MatMul, pooling, BatchNormalization, LayerNormalization. */
#include "ops.h"

const sh_op_def *const sh_ops_nn[] = {NULL};
