/* graph_internal.h - graph helpers shared inside the library. */
#ifndef SH_GRAPH_INTERNAL_H
#define SH_GRAPH_INTERNAL_H
#include "shrink.h"

/* Deep copy of g; with share_weights the copy's initializers are views of
 * g's memory (g must outlive the copy and keep its weights in place). */
sh_graph *sh_graph_copy(const sh_graph *g, int share_weights, sh_error *err);

/* Free what node n owns (name, op, domain, input / output arrays,
 * attributes), not n itself: for passes that drop nodes from g->nodes. */
void sh_node_free_fields(sh_node *n);

#endif
