/* golden_elem.c - see golden_elem.h. */
#include <stdlib.h>
#include <string.h>

#include "golden_elem.h"
#include "test.h"

#define MAX_IO 8

/* Path of the golden file next to this source file (tests/data/elem). */
static const char *golden_path(void)
{
    static char path[1024];
    const char *f = __FILE__, *slash = strrchr(f, '/');
    int n = slash ? (int)(slash - f) : 0;
    snprintf(path, sizeof path, "%.*s%sdata/elem/golden.txt", n, f, n ? "/" : "");
    FILE *fp = fopen(path, "r");
    if (fp) {
        fclose(fp);
        return path;
    }
    return "tests/data/elem/golden.txt";
}

/* Parse "t fmt ndim d.. : v.." (the text after "t "); NULL for "none". */
static sh_tensor *parse_tensor(char *s, int *ok)
{
    char *save = NULL, *tok = strtok_r(s, " ", &save);
    *ok = 1;
    if (!tok || !strcmp(tok, "none")) return NULL;
    sh_format f = !strcmp(tok, "f32") ? SH_F32 : !strcmp(tok, "i64") ? SH_I64 : SH_I32;
    int nd = atoi(strtok_r(NULL, " ", &save));
    int64_t shape[SH_MAX_DIMS];
    for (int i = 0; i < nd; i++) shape[i] = atoll(strtok_r(NULL, " ", &save));
    strtok_r(NULL, " ", &save); /* ":" */
    sh_tensor *t = sh_tensor_new(f, nd, shape, NULL);
    if (!t) {
        *ok = 0;
        return NULL;
    }
    int64_t n = sh_tensor_numel(t);
    for (int64_t i = 0; i < n; i++) {
        tok = strtok_r(NULL, " ", &save);
        if (!tok) {
            *ok = 0;
            break;
        }
        if (f == SH_F32) ((float *)t->data)[i] = strtof(tok, NULL);
        else if (f == SH_I64) ((int64_t *)t->data)[i] = strtoll(tok, NULL, 10);
        else ((int32_t *)t->data)[i] = (int32_t)strtol(tok, NULL, 10);
    }
    return t;
}

static void set_attr(sh_graph *g, int node, char *a)
{
    char kind = a[0];
    char *eq = strchr(a, '=');
    if (!eq || a[1] != ':') return;
    *eq = 0;
    const char *name = a + 2, *val = eq + 1;
    if (kind == 'f') sh_node_set_float(g, node, name, strtof(val, NULL));
    else if (kind == 's') sh_node_set_string(g, node, name, val);
    else {
        int64_t v[64];
        int n = 0;
        const char *p = val;
        while (*p && n < 64) {
            char *end;
            v[n++] = strtoll(p, &end, 10);
            p = *end == ',' ? end + 1 : end;
            if (end == p && *p) break;
        }
        /* single ints are INT attributes unless the name is a list attribute */
        int is_list = !strcmp(name, "axes") || !strcmp(name, "perm") || !strcmp(name, "pads") ||
                      !strcmp(name, "starts") || !strcmp(name, "ends") || !strcmp(name, "shape");
        if (n == 1 && !is_list) sh_node_set_int(g, node, name, v[0]);
        else sh_node_set_ints(g, node, name, n, v);
    }
}

void golden_elem_attrs(sh_graph *g, int node, void *spec)
{
    if (!spec) return;
    char buf[1024], *save = NULL;
    snprintf(buf, sizeof buf, "%s", (const char *)spec);
    for (char *a = strtok_r(buf, " ", &save); a; a = strtok_r(NULL, " ", &save)) set_attr(g, node, a);
}

static void run_case(const char *name, const char *op, int n_in, int n_out, char **attrs, int n_attrs,
                     sh_tensor **ins, sh_tensor **refs)
{
    sh_error err = {0};
    sh_graph *g = sh_graph_new(name);
    g->opset = 17;
    const char *in_names[MAX_IO], *out_names[MAX_IO];
    char inb[MAX_IO][16], outb[MAX_IO][16];
    const sh_tensor *gin[MAX_IO];
    int n_gin = 0;
    for (int i = 0; i < n_in; i++) {
        snprintf(inb[i], sizeof inb[i], "in%d", i);
        in_names[i] = inb[i];
        if (!ins[i]) {
            in_names[i] = "";
            continue;
        }
        if (ins[i]->fmt == SH_F32) {
            sh_graph_add_input(g, inb[i], SH_F32, ins[i]->ndim, ins[i]->shape, &err);
            gin[n_gin++] = ins[i];
        } else {
            sh_graph_add_init(g, inb[i], sh_tensor_clone(ins[i], &err), &err);
        }
    }
    for (int j = 0; j < n_out; j++) {
        snprintf(outb[j], sizeof outb[j], "out%d", j);
        out_names[j] = outb[j];
    }
    int node = sh_graph_add_node(g, op, name, n_in, in_names, n_out, out_names, &err);
    CHECK_MSG(node >= 0, "%s: add node: %s", name, err.msg);
    if (node < 0) {
        sh_graph_free(g);
        return;
    }
    for (int a = 0; a < n_attrs; a++) set_attr(g, node, attrs[a]);
    for (int j = 0; j < n_out; j++) sh_graph_mark_output(g, out_names[j], &err);
    sh_program *p = NULL;
    int rc = sh_program_new(g, NULL, &p, &err);
    if (!rc) rc = sh_program_run(p, gin, n_gin, &err);
    CHECK_MSG(rc == SH_OK, "%s (%s): %s", name, op, err.msg);
    for (int j = 0; !rc && j < n_out; j++) {
        sh_tensor *y = sh_program_output(p, j), *r = refs[j];
        char s1[160], s2[160];
        int same = y && y->fmt == r->fmt && y->ndim == r->ndim;
        for (int d = 0; same && d < r->ndim; d++) same = y->shape[d] == r->shape[d];
        CHECK_MSG(same, "%s (%s): output %d is %s %s, expected %s %s", name, op, j,
                  y ? sh_format_get(y->fmt)->name : "?", y ? sh_shape_str(y->ndim, y->shape, s1, sizeof s1) : "-",
                  sh_format_get(r->fmt)->name, sh_shape_str(r->ndim, r->shape, s2, sizeof s2));
        if (!same) continue;
        int64_t n = sh_tensor_numel(r);
        for (int64_t i = 0; i < n; i++) {
            if (r->fmt == SH_F32) {
                float a = ((float *)y->data)[i], b = ((float *)r->data)[i];
                double tol = 2e-5 * fmax(1.0, fabs(b));
                if (!(fabs(a - b) <= tol)) {
                    CHECK_MSG(0, "%s (%s): output %d element %lld = %.8g, expected %.8g", name, op, j, (long long)i, a, b);
                    break;
                }
            } else if (r->fmt == SH_I64) {
                int64_t a = ((int64_t *)y->data)[i], b = ((int64_t *)r->data)[i];
                if (a != b) {
                    CHECK_MSG(0, "%s (%s): output %d element %lld = %lld, expected %lld", name, op, j, (long long)i,
                              (long long)a, (long long)b);
                    break;
                }
            } else if (memcmp(y->data, r->data, r->nbytes) != 0) {
                CHECK_MSG(0, "%s (%s): output %d differs", name, op, j);
                break;
            }
        }
    }
    sh_program_free(p);
    sh_graph_free(g);
}

int golden_elem_run(const char *prefix)
{
    const char *path = golden_path();
    FILE *fp = fopen(path, "r");
    if (!fp) SKIP("tests/data/elem/golden.txt not found (run tests from the repository root)");
    size_t cap = 1 << 20;
    char *line = malloc(cap);
    int ran = 0;
    while (fgets(line, (int)cap, fp)) {
        if (strncmp(line, "case ", 5) != 0) continue;
        line[strcspn(line, "\n")] = 0;
        char *save = NULL;
        strtok_r(line, " ", &save);
        char name[128], op[64];
        snprintf(name, sizeof name, "%s", strtok_r(NULL, " ", &save));
        snprintf(op, sizeof op, "%s", strtok_r(NULL, " ", &save));
        int n_in = atoi(strtok_r(NULL, " ", &save)), n_out = atoi(strtok_r(NULL, " ", &save));
        char *attrs[16], attrbuf[16][256];
        int n_attrs = 0;
        char *a;
        while ((a = strtok_r(NULL, " ", &save)) && n_attrs < 16) {
            snprintf(attrbuf[n_attrs], sizeof attrbuf[n_attrs], "%s", a);
            attrs[n_attrs] = attrbuf[n_attrs];
            n_attrs++;
        }
        sh_tensor *ins[MAX_IO] = {0}, *refs[MAX_IO] = {0};
        int ok = 1, want = strncmp(name, prefix, strlen(prefix)) == 0;
        for (int i = 0; i < n_in + n_out && ok; i++) {
            if (!fgets(line, (int)cap, fp)) {
                ok = 0;
                break;
            }
            line[strcspn(line, "\n")] = 0;
            if (!want) continue;
            sh_tensor *t = parse_tensor(line + 2, &ok);
            if (i < n_in) ins[i] = t;
            else refs[i - n_in] = t;
        }
        CHECK_MSG(ok, "%s: malformed golden record", name);
        if (want && ok) {
            run_case(name, op, n_in, n_out, attrs, n_attrs, ins, refs);
            ran++;
        }
        for (int i = 0; i < MAX_IO; i++) sh_tensor_free(ins[i]), sh_tensor_free(refs[i]);
    }
    free(line);
    fclose(fp);
    CHECK_MSG(ran > 0, "no golden case starts with '%s'", prefix);
    return ran;
}
