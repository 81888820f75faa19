/* optimize.h - internal side of the inference graph rewrites (optimize.c)
 * used by the runtime: an optimized copy of a graph whose folded weights can
 * be re-derived when the source graph's weights change. */
#ifndef SH_OPTIMIZE_H
#define SH_OPTIMIZE_H
#include "shrink.h"

typedef struct sh_opt_state sh_opt_state;

/* Optimized copy of src for inference (level as sh_graph_optimize).  The copy
 * shares src's initializer memory (views) except for the weights that
 * rewriting changed (owned by the copy).  *out = NULL and *st = NULL when no
 * rewrite applies (then run src itself).  src is not modified. */
int sh_graph_optimize_copy(const sh_graph *src, int level, sh_graph **out, sh_opt_state **st, sh_error *err);
/* Re-derive the copy's folded weights from src when src's weights changed
 * since the last derivation (a cheap check: every BatchNorm parameter and a
 * sample of each folded weight), or always when force.  Returns 1 when it
 * re-derived something, 0 when not. */
int sh_opt_state_sync(sh_opt_state *st, const sh_graph *src, sh_graph *dst, int force);
void sh_opt_state_free(sh_opt_state *st);

#endif
