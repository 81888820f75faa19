/* llm.c - transformer ops: RMSNorm, RoPE, Attention (KV cache), SiluMul. */
#include "ops.h"

const sh_op_def *const sh_ops_llm[] = {NULL};
