/* golden_elem.h - runs the PyTorch golden cases of tests/data/elem/golden.txt
 * (written by tests/gen/gen_elem.py) for the elementwise and shape op tests.
 *
 * golden_elem_run("bin_") runs every case whose name starts with "bin_": it
 * builds a one-node graph (float inputs are graph inputs, integer inputs are
 * initializers), runs it and compares each output with the reference (same
 * format and shape; floats within 2e-5 * max(1, |ref|), integers exactly).
 * Failures are reported through CHECK; returns the number of cases run
 * (SKIPs when the data file is missing).
 */
#ifndef SH_GOLDEN_ELEM_H
#define SH_GOLDEN_ELEM_H
#include "shrink.h"

int golden_elem_run(const char *prefix);

/* Set attributes on node `node` from a space-separated spec such as
 * "i:axis=1 f:alpha=0.1 s:mode=reflect i:perm=0,2,1" (a gradcheck_attrs_fn:
 * pass the spec string as ctx). */
void golden_elem_attrs(sh_graph *g, int node, void *spec);

#endif
