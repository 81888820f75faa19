/* registry.c - the op table: every family's rows, looked up by op type. */
#include <string.h>

#include "ops.h"

extern const sh_op_def *const sh_ops_fakequant[]; /* ops/fakequant.c (distill) */
static const sh_op_def *const *const families[] = {sh_ops_nn, sh_ops_elem, sh_ops_shape, sh_ops_llm, sh_ops_qlinear,
                                                    sh_ops_fakequant};

const sh_op_def *sh_op_find(const char *name)
{
    if (!name) return NULL;
    for (size_t f = 0; f < sizeof families / sizeof families[0]; f++)
        for (const sh_op_def *const *d = families[f]; *d; d++)
            if (strcmp((*d)->name, name) == 0) return *d;
    return NULL;
}

const sh_op_def *sh_op_at(int i)
{
    for (size_t f = 0; f < sizeof families / sizeof families[0]; f++)
        for (const sh_op_def *const *d = families[f]; *d; d++)
            if (i-- == 0) return *d;
    return NULL;
}
