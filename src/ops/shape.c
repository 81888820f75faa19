/* shape.c - Flatten, Reshape, Transpose, Concat, Identity, Dropout, Constant,
 * Pad, Shape, Gather, Unsqueeze, Squeeze, Cast. */
#include <string.h>

#include "ops.h"

const sh_op_def *const sh_ops_shape[] = {NULL};
