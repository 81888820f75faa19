/* cmd_info.c - shrink info MODEL [--json]: kind, inputs/outputs, a per-layer
 * table (output shape, parameters, bytes, FLOPs), totals, op histogram. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cli.h"

static const char *usage_text =
    "Usage: shrink info MODEL [--json]\n"
    "\n"
    "Show what a model is made of: its kind, inputs and outputs with shapes, one\n"
    "row per node (output shape for a batch of 1, parameters, bytes, FLOPs for\n"
    "Conv/Gemm/MatMul), totals and a histogram of op types.\n"
    "MODEL is an ONNX file (.onnx) or a llama2.c checkpoint (.bin).\n"
    "\n"
    "Options:\n"
    "  --json      one JSON object on stdout instead of tables\n"
    "  -h, --help  this help\n"
    "\n"
    "Example:\n"
    "  shrink info out/cnn.onnx\n"
    "\n" CLI_EXIT_CODES;

/* "[N,1,28,28]" with -1 shown as N (first dim) or ? */
static char *shape_txt(int ndim, const int64_t *shape, char *buf, size_t n)
{
    if (ndim < 0) {
        snprintf(buf, n, "?");
        return buf;
    }
    size_t o = 0;
    o += (size_t)snprintf(buf + o, n - o, "[");
    for (int i = 0; i < ndim && o < n; i++) {
        if (shape[i] < 0) o += (size_t)snprintf(buf + o, n - o, "%s%s", i ? "," : "", i == 0 ? "N" : "?");
        else o += (size_t)snprintf(buf + o, n - o, "%s%lld", i ? "," : "", (long long)shape[i]);
    }
    if (o < n) snprintf(buf + o, n - o, "]");
    return buf;
}

static void json_shape(FILE *f, int ndim, const int64_t *shape)
{
    if (ndim < 0) {
        fputs("null", f);
        return;
    }
    fputc('[', f);
    for (int i = 0; i < ndim; i++) fprintf(f, "%s%lld", i ? "," : "", (long long)shape[i]);
    fputc(']', f);
}

/* Which output dims follow the inputs' unknown dims (batch, sequence): infer
 * once with those dims = 2 and once = 1 (the shapes left in the graph), and
 * mark the dims that differ.  dyn[v] is a bitmask of dims of value v. */
static int infer_dynamic(sh_graph *g, unsigned char *dyn, sh_error *err)
{
    int nin = g->n_inputs, any = 0, rc = SH_OK;
    for (int i = 0; i < nin; i++) {
        const sh_value *v = &g->values[g->inputs[i]];
        for (int d = 0; d < v->ndim; d++) any |= v->shape[d] < 0;
    }
    if (any) {
        sh_tensor **t2 = calloc((size_t)nin + 1, sizeof *t2);
        int64_t(*s2)[SH_MAX_DIMS] = calloc((size_t)g->n_values + 1, sizeof *s2);
        int *nd2 = calloc((size_t)g->n_values + 1, sizeof *nd2);
        int ok = t2 && s2 && nd2;
        for (int i = 0; ok && i < nin; i++) {
            const sh_value *v = &g->values[g->inputs[i]];
            int64_t shape[SH_MAX_DIMS];
            int nd = v->ndim < 0 ? 0 : v->ndim;
            for (int d = 0; d < nd; d++) shape[d] = v->shape[d] < 0 ? 2 : v->shape[d];
            ok = (t2[i] = sh_tensor_new(v->fmt, nd, shape, NULL)) != NULL;
        }
        sh_error e2 = {0};
        if (ok && sh_graph_infer_shapes(g, (const sh_tensor *const *)t2, &e2) == SH_OK)
            for (int v = 0; v < g->n_values; v++) {
                nd2[v] = g->values[v].ndim;
                memcpy(s2[v], g->values[v].shape, sizeof s2[v]);
            }
        else ok = 0;
        rc = sh_graph_infer_shapes(g, NULL, err);
        if (!rc && ok)
            for (int v = 0; v < g->n_values; v++) {
                const sh_value *x = &g->values[v];
                if (x->init || x->ndim != nd2[v]) continue;
                for (int d = 0; d < x->ndim && d < 8; d++)
                    if (x->shape[d] != s2[v][d]) dyn[v] |= (unsigned char)(1u << d);
            }
        for (int i = 0; t2 && i < nin; i++) sh_tensor_free(t2[i]);
        free(t2), free(s2), free(nd2);
        return rc;
    }
    return sh_graph_infer_shapes(g, NULL, err);
}

/* A copy of value v's shape with dynamic dims set to -1. */
static void dyn_shape(const sh_value *v, unsigned char mask, int64_t *out)
{
    for (int d = 0; d < v->ndim && d < SH_MAX_DIMS; d++) out[d] = (mask >> d) & 1 ? -1 : v->shape[d];
}

typedef struct {
    int64_t params, bytes;
    double flops; /* -1: not estimated */
} layer_t;

static int64_t numel_known(const sh_value *v)
{
    if (v->ndim < 0) return -1;
    int64_t n = 1;
    for (int i = 0; i < v->ndim; i++) {
        if (v->shape[i] < 0) return -1;
        n *= v->shape[i];
    }
    return n;
}

/* FLOPs (2 per multiply-add) of one node, from the inferred shapes; -1 if not estimated. */
static double node_flops(const sh_graph *g, const sh_node *n)
{
    if (n->n_out < 1 || n->out[0] < 0 || n->n_in < 2 || n->in[0] < 0 || n->in[1] < 0) return -1;
    const sh_value *y = &g->values[n->out[0]], *a = &g->values[n->in[0]], *b = &g->values[n->in[1]];
    int64_t out = numel_known(y);
    if (out < 0) return -1;
    if (strcmp(n->op, "Conv") == 0) {
        if (b->ndim < 2) return -1;
        int64_t k = 1;
        for (int i = 1; i < b->ndim; i++) k *= b->shape[i];
        return 2.0 * (double)out * (double)k;
    }
    if (strcmp(n->op, "Gemm") == 0) {
        /* K from B ([K,N], or [N,K] with transB) */
        if (b->ndim != 2) return -1;
        int64_t k = sh_attr_int(n, "transB", 0) ? b->shape[1] : b->shape[0];
        return 2.0 * (double)out * (double)k;
    }
    if (strcmp(n->op, "MatMul") == 0) {
        if (a->ndim < 1) return -1;
        return 2.0 * (double)out * (double)a->shape[a->ndim - 1];
    }
    return -1;
}

static const char *has_op(const sh_graph *g, const char *op)
{
    for (int i = 0; i < g->n_nodes; i++)
        if (strcmp(g->nodes[i].op, op) == 0) return op;
    return NULL;
}

static const char *base_kind(const sh_graph *g, const char *path)
{
    size_t l = strlen(path);
    if (has_op(g, "RMSNorm") || has_op(g, "Attention") || has_op(g, "RoPE") ||
        (l > 4 && strcmp(path + l - 4, ".bin") == 0))
        return "transformer language model (Llama)";
    if (has_op(g, "Conv")) return "convolutional network";
    if (has_op(g, "Gemm") || has_op(g, "MatMul")) return "fully connected network";
    return "graph";
}

/* "convolutional network (built-in 'cnn')" when the graph says where it came from */
static const char *model_kind(const sh_graph *g, const char *path, char *buf, size_t n)
{
    const char *base = base_kind(g, path), *m = sh_graph_get_meta(g, "shrink.model");
    if (m && *m) {
        snprintf(buf, n, "%s (built-in '%s')", base, m);
        return buf;
    }
    return base;
}

static const char *model_format(const char *path)
{
    size_t l = strlen(path);
    if (l > 5 && strcmp(path + l - 5, ".onnx") == 0) return "ONNX";
    if (l > 4 && strcmp(path + l - 4, ".bin") == 0) return "llama2.c";
    return "model";
}

typedef struct {
    const char *op;
    int count;
} opcount_t;

static int cmp_opcount(const void *a, const void *b)
{
    const opcount_t *x = a, *y = b;
    if (x->count != y->count) return y->count - x->count;
    return strcmp(x->op, y->op);
}

static const char *flops_txt(double f, char *buf, int n)
{
    if (f < 0) snprintf(buf, (size_t)n, "-");
    else if (f < 1e4) snprintf(buf, (size_t)n, "%.0f", f);
    else if (f < 1e6) snprintf(buf, (size_t)n, "%.1fK", f / 1e3);
    else if (f < 1e9) snprintf(buf, (size_t)n, "%.1fM", f / 1e6);
    else snprintf(buf, (size_t)n, "%.2fG", f / 1e9);
    return buf;
}

int cmd_info(int argc, char **argv)
{
    const char *path = NULL;
    int json = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (cli_is_help(a)) {
            fputs(usage_text, stdout);
            return EXIT_OK;
        } else if (strcmp(a, "--json") == 0) json = 1;
        else if (a[0] == '-' && a[1]) return cli_usage("info", "unknown option '%s'", a);
        else if (!path) path = a;
        else return cli_usage("info", "unexpected argument '%s' (one MODEL only)", a);
    }
    if (!path) return cli_usage("info", "missing MODEL");

    sh_error err = {0};
    sh_graph *g = NULL;
    if (sh_model_load(path, &g, &err)) return cli_fail("info", &err);
    struct stat st;
    int64_t file_bytes = stat(path, &st) == 0 ? (int64_t)st.st_size : -1;

    /* declared input/output shapes before inference fills in the batch */
    int nin = g->n_inputs, nout = g->n_outputs;
    sh_value *decl = calloc((size_t)(nin + nout) + 1, sizeof *decl);
    layer_t *L = calloc((size_t)g->n_nodes + 1, sizeof *L);
    unsigned char *seen = calloc((size_t)g->n_values + 1, 1);
    unsigned char *dyn = calloc((size_t)g->n_values + 1, 1);
    opcount_t *ops = calloc((size_t)g->n_nodes + 1, sizeof *ops);
    if (!decl || !L || !seen || !ops || !dyn) {
        free(decl), free(L), free(seen), free(ops), free(dyn);
        sh_graph_free(g);
        sh_err(&err, SH_ENOMEM, "out of memory");
        return cli_fail("info", &err);
    }
    for (int i = 0; i < nin; i++) decl[i] = g->values[g->inputs[i]];
    /* shape inference for a batch of 1 (also checks the graph: unknown ops
     * are listed in one error, reported after the table) */
    sh_error ierr = {0};
    int irc = infer_dynamic(g, dyn, &ierr);
    for (int i = 0; i < nout; i++) {
        decl[nin + i] = g->values[g->outputs[i]];
        if (irc == SH_OK) dyn_shape(&g->values[g->outputs[i]], dyn[g->outputs[i]], decl[nin + i].shape);
    }
    int64_t ys[SH_MAX_DIMS];
    int any_dyn = 0;
    for (int i = 0; i < nin; i++)
        for (int d = 0; d < decl[i].ndim; d++) any_dyn |= decl[i].shape[d] < 0;

    int64_t tot_params = 0, tot_bytes = 0;
    double tot_flops = 0;
    int n_ops = 0;
    for (int k = 0; k < g->n_nodes; k++) {
        const sh_node *n = &g->nodes[k];
        for (int j = 0; j < n->n_in; j++) {
            int v = n->in[j];
            if (v < 0 || !g->values[v].init || seen[v]) continue;
            seen[v] = 1;
            const sh_tensor *t = g->values[v].init;
            if (sh_format_get(t->fmt) && sh_format_get(t->fmt)->is_float) L[k].params += sh_tensor_numel(t);
            L[k].bytes += (int64_t)t->nbytes;
        }
        L[k].flops = irc == SH_OK ? node_flops(g, n) : -1;
        tot_params += L[k].params;
        tot_bytes += L[k].bytes;
        if (L[k].flops > 0) tot_flops += L[k].flops;
        int o = 0;
        while (o < n_ops && strcmp(ops[o].op, n->op) != 0) o++;
        if (o == n_ops) ops[n_ops++] = (opcount_t){n->op, 0};
        ops[o].count++;
    }
    /* initializers not used by any node still count toward the model's size */
    for (int v = 0; v < g->n_values; v++) {
        if (!g->values[v].init || seen[v]) continue;
        const sh_tensor *t = g->values[v].init;
        if (sh_format_get(t->fmt) && sh_format_get(t->fmt)->is_float) tot_params += sh_tensor_numel(t);
        tot_bytes += (int64_t)t->nbytes;
    }
    qsort(ops, (size_t)n_ops, sizeof *ops, cmp_opcount);
    char b1[64], b2[64], b3[64], sh[200], kb[256];
    const char *kind = model_kind(g, path, kb, sizeof kb);

    if (json) {
        printf("{\"model\":");
        cli_json_str(stdout, path);
        printf(",\"format\":");
        cli_json_str(stdout, model_format(path));
        printf(",\"kind\":");
        cli_json_str(stdout, kind);
        printf(",\"opset\":%lld,\"file_bytes\":%lld,\"params\":%lld,\"param_bytes\":%lld,\"flops\":%.0f,\"nodes\":%d",
               (long long)g->opset, (long long)file_bytes, (long long)tot_params, (long long)tot_bytes, tot_flops,
               g->n_nodes);
        for (int io = 0; io < 2; io++) {
            printf(",\"%s\":[", io ? "outputs" : "inputs");
            int cnt = io ? nout : nin;
            for (int i = 0; i < cnt; i++) {
                const sh_value *v = &decl[io ? nin + i : i];
                printf("%s{\"name\":", i ? "," : "");
                cli_json_str(stdout, v->name);
                printf(",\"format\":");
                cli_json_str(stdout, sh_format_get(v->fmt) ? sh_format_get(v->fmt)->name : "?");
                printf(",\"shape\":");
                json_shape(stdout, v->ndim, v->shape);
                printf("}");
            }
            printf("]");
        }
        printf(",\"layers\":[");
        for (int k = 0; k < g->n_nodes; k++) {
            const sh_node *n = &g->nodes[k];
            const sh_value *y = n->n_out > 0 && n->out[0] >= 0 ? &g->values[n->out[0]] : NULL;
            printf("%s{\"name\":", k ? "," : "");
            cli_json_str(stdout, n->name);
            printf(",\"op\":");
            cli_json_str(stdout, n->op);
            printf(",\"shape\":");
            if (y && irc == SH_OK) {
                dyn_shape(y, dyn[n->out[0]], ys);
                json_shape(stdout, y->ndim, ys);
            }
            else printf("null");
            printf(",\"params\":%lld,\"bytes\":%lld,\"flops\":", (long long)L[k].params, (long long)L[k].bytes);
            if (L[k].flops >= 0) printf("%.0f}", L[k].flops);
            else printf("null}");
        }
        printf("],\"ops\":{");
        for (int o = 0; o < n_ops; o++) {
            printf("%s", o ? "," : "");
            cli_json_str(stdout, ops[o].op);
            printf(":%d", ops[o].count);
        }
        printf("},\"meta\":{");
        for (int i = 0; i < g->n_meta; i++) {
            printf("%s", i ? "," : "");
            cli_json_str(stdout, g->meta_keys[i]);
            printf(":");
            cli_json_str(stdout, g->meta_vals[i]);
        }
        printf("}");
        if (irc != SH_OK) {
            printf(",\"error\":");
            cli_json_str(stdout, ierr.msg);
        }
        printf("}\n");
    } else {
        printf("model    %s (%s", path, model_format(path));
        if (strcmp(model_format(path), "ONNX") == 0) printf(", opset %lld", (long long)g->opset);
        printf(")\nkind     %s\n", kind);
        for (int io = 0; io < 2; io++) {
            int cnt = io ? nout : nin;
            for (int i = 0; i < cnt; i++) {
                const sh_value *v = &decl[io ? nin + i : i];
                printf("%-8s %s %s %s\n", i ? "" : (io ? "outputs" : "inputs"), v->name,
                       sh_format_get(v->fmt) ? sh_format_get(v->fmt)->name : "?",
                       shape_txt(v->ndim, v->shape, sh, sizeof sh));
            }
        }
        int wname = 4, wop = 2;
        for (int k = 0; k < g->n_nodes; k++) {
            int ln = (int)strlen(g->nodes[k].name), lo = (int)strlen(g->nodes[k].op);
            if (ln > wname) wname = ln;
            if (lo > wop) wop = lo;
        }
        if (wname > 40) wname = 40;
        printf("\n%4s  %-*s  %-*s  %-20s %10s %10s %9s\n", "#", wname, "node", wop, "op", "output",
               "params", "bytes", "FLOPs");
        for (int k = 0; k < g->n_nodes; k++) {
            const sh_node *n = &g->nodes[k];
            const sh_value *y = n->n_out > 0 && n->out[0] >= 0 ? &g->values[n->out[0]] : NULL;
            if (y && irc == SH_OK) {
                dyn_shape(y, dyn[n->out[0]], ys);
                shape_txt(y->ndim, ys, sh, sizeof sh);
            }
            else snprintf(sh, sizeof sh, "?");
            printf("%4d  %-*.*s  %-*s  %-20s %10lld %10s %9s\n", k, wname, wname, n->name, wop, n->op, sh,
                   (long long)L[k].params, L[k].bytes ? cli_bytes(L[k].bytes, b1, sizeof b1) : "0",
                   flops_txt(L[k].flops, b2, sizeof b2));
        }
        printf("\ntotal    %d nodes, %lld parameters, %s of weights, file %s, %s FLOPs per item%s\n", g->n_nodes,
               (long long)tot_params, cli_bytes(tot_bytes, b1, sizeof b1),
               file_bytes >= 0 ? cli_bytes(file_bytes, b2, sizeof b2) : "?", flops_txt(tot_flops, b3, sizeof b3),
               any_dyn ? " (N and ? taken as 1)" : "");
        printf("ops     ");
        for (int o = 0; o < n_ops; o++) printf(" %s %d%s", ops[o].op, ops[o].count, o + 1 < n_ops ? "," : "");
        printf("\n");
    }
    fflush(stdout);
    free(decl), free(L), free(seen), free(ops), free(dyn);
    sh_graph_free(g);
    if (irc != SH_OK) {
        sh_error_wrap(&ierr, "%s", path);
        return cli_fail("info", &ierr);
    }
    return EXIT_OK;
}
