/* run_model.c - the smallest useful program on libshrink: load a model, feed
 * it inputs (TensorProto .pb files, or inputs of the model's declared shapes:
 * random values for f32, zeros for integer inputs such as tokens), run it and
 * print the largest values of each output.
 *
 *   make examples && build/run_model model.onnx [input_0.pb ...]
 *   cc run_model.c $(pkg-config --cflags --libs --static shrink)
 */
#include <shrink.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TOP 5

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: %s MODEL [INPUT.pb ...]\n", argv[0]);
        return 2;
    }
    sh_error err = {0};
    sh_graph *g = NULL;
    if (sh_model_load(argv[1], &g, &err)) {
        fprintf(stderr, "error: %s\n", err.msg);
        return 1;
    }
    int n_in = g->n_inputs, rc = 1;
    sh_tensor **in = calloc((size_t)n_in + 1, sizeof *in);
    sh_program *p = NULL;
    if (!in) goto done;
    if (argc > 2 && argc - 2 != n_in) {
        fprintf(stderr, "error: %s takes %d inputs, %d .pb files given\n", argv[1], n_in, argc - 2);
        goto done;
    }
    uint64_t s = 42;
    for (int i = 0; i < n_in; i++) {
        if (argc > 2) {
            char *name = NULL;
            if (sh_tensorproto_load(argv[2 + i], &in[i], &name, &err)) {
                fprintf(stderr, "error: %s\n", err.msg);
                goto done;
            }
            free(name);
            continue;
        }
        /* random input of the declared shape; unknown dims (batch) become 1 */
        const sh_value *v = &g->values[g->inputs[i]];
        int64_t shape[SH_MAX_DIMS];
        int nd = v->ndim < 0 ? 0 : v->ndim;
        for (int d = 0; d < nd; d++) shape[d] = v->shape[d] > 0 ? v->shape[d] : 1;
        if (!(in[i] = sh_tensor_new(v->fmt, nd, shape, &err))) {
            fprintf(stderr, "error: %s\n", err.msg);
            goto done;
        }
        if (v->fmt == SH_F32) {
            float *x = sh_f32(in[i]);
            for (int64_t k = 0; k < sh_tensor_numel(in[i]); k++) {
                s = s * 6364136223846793005ull + 1442695040888963407ull;
                x[k] = (float)((s >> 40) & 0xFFFF) / 65536.0f;
            }
        }
        char buf[128];
        printf("input  %s %s (%s)\n", v->name, sh_shape_str(nd, shape, buf, sizeof buf),
               v->fmt == SH_F32 ? "random" : "zeros");
    }
    sh_run_opts opts = {.nthreads = 0};
    if (sh_program_new(g, &opts, &p, &err) ||
        sh_program_run(p, (const sh_tensor *const *)in, n_in, &err)) {
        fprintf(stderr, "error: %s\n", err.msg);
        goto done;
    }
    for (int o = 0; o < sh_program_num_outputs(p); o++) {
        sh_tensor *t = sh_program_output(p, o);
        char buf[128];
        printf("output %s %s\n", g->values[g->outputs[o]].name, sh_shape_str(t->ndim, t->shape, buf, sizeof buf));
        if (t->fmt != SH_F32) continue;
        /* the TOP largest values and their flat indices */
        int64_t n = sh_tensor_numel(t), best[TOP];
        int nb = 0;
        const float *y = sh_f32(t);
        for (int64_t k = 0; k < n; k++) {
            int pos = nb < TOP ? nb++ : TOP;
            while (pos > 0 && y[best[pos - 1]] < y[k]) {
                if (pos < TOP) best[pos] = best[pos - 1];
                pos--;
            }
            if (pos < TOP) best[pos] = k;
        }
        for (int k = 0; k < nb; k++) printf("  [%lld] %g\n", (long long)best[k], y[best[k]]);
    }
    rc = 0;
done:
    sh_program_free(p);
    for (int i = 0; i < n_in && in; i++) sh_tensor_free(in[i]);
    free(in);
    sh_graph_free(g);
    return rc;
}
