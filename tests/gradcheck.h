/* gradcheck.h - finite-difference check of one op's backward.
 *
 * gradcheck_node builds a one-node graph around op `op`, runs it through
 * sh_program_* in training mode, back-propagates the loss
 *     L = sum_j sum_i w_j[i] * y_j[i]      (w fixed pseudo-random in [-1,1])
 * and compares every float input's gradient with central differences of L
 * (computed in double).  Inputs:
 *   - NULL entries are omitted optional inputs ("" in the node);
 *   - non-float inputs (i64 shapes, axes...) become initializers (constants);
 *   - float inputs become graph inputs; those not in the op's nondiff_inputs
 *     mask (and not in opts->no_grad) get their gradient checked.
 * The caller's tensors are copied, never modified.
 *
 *   static void attrs(sh_graph *g, int node, void *ctx) {
 *       sh_node_set_ints(g, node, "strides", 2, (int64_t[]){2, 2});
 *   }
 *   char rep[2048];
 *   sh_tensor *in[3] = {x, w, b};
 *   CHECK_MSG(gradcheck_node("Conv", attrs, NULL, 3, in, 1e-2, rep, sizeof rep) == 0, "%s", rep);
 *
 * Returns 0 when every checked gradient matches, 1 on a mismatch (report
 * says where), or a negative SH_E* code when the op fails (report holds the
 * error).  The report always has one line per checked input.
 */
#ifndef SH_GRADCHECK_H
#define SH_GRADCHECK_H
#include <stddef.h>
#include <stdint.h>

#include "shrink.h"

/* Sets attributes on node `node` of g (may be NULL). */
typedef void (*gradcheck_attrs_fn)(sh_graph *g, int node, void *ctx);

typedef struct gradcheck_opts {
    double tol;         /* max relative error (default 1e-2) */
    double eps;         /* FD step, scaled by max(1,|x|) (default 1e-3) */
    int n_out;          /* node outputs (default 1); non-float outputs are ignored */
    unsigned no_grad;   /* bitmask of float inputs not to check (kept constant) */
    unsigned as_param;  /* bitmask of float inputs passed as initializers (must be
                           in the op's param_inputs: checks the parameter path) */
    int inference;      /* check the op with k->training = 0 (the op's forward and
                           backward are called directly instead of through a
                           training program) */
    int max_checks;     /* elements per input checked by FD (0: 400); larger
                           inputs are sampled with a stride */
    int64_t opset;      /* graph opset (0: 17) */
    uint64_t seed;      /* loss weights */
} gradcheck_opts;

int gradcheck_node(const char *op, gradcheck_attrs_fn attrs, void *ctx, int n_in, sh_tensor *const *inputs,
                   double tol, char *report, size_t report_size);
int gradcheck_node_ex(const char *op, gradcheck_attrs_fn attrs, void *ctx, int n_in, sh_tensor *const *inputs,
                      const gradcheck_opts *opts, char *report, size_t report_size);

/* Fill t (f32) with deterministic pseudo-random values in [lo, hi). */
void gradcheck_fill(sh_tensor *t, uint64_t seed, float lo, float hi);
/* New f32 tensor of the given shape filled by gradcheck_fill. */
sh_tensor *gradcheck_rand(int ndim, const int64_t *shape, uint64_t seed, float lo, float hi);

#endif
