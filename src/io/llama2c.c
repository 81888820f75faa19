/* llama2c.c - llama2.c checkpoints (version 0 header) <-> the graph IR.
 *
 * A Llama model is an ordinary graph: Gather (embedding), RMSNorm, Gemm
 * (transB=1, weights [out,in] as in llama2.c), RoPE, Attention (KV cache),
 * SiluMul and Add.  sh_llama_build (random weights) and sh_llama2c_load build
 * the same graph.  The legacy RoPE tables of the file are not used by the
 * model; so that load -> save reproduces a file byte for byte, the entries
 * that differ from shrink's own computation of them are kept in graph meta
 * ("llama.rope_fix").
 */
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "shrink.h"

#define NAME_MAX_LEN 128

static char *dupstr(const char *s)
{
    size_t n = strlen(s) + 1;
    char *d = malloc(n);
    if (d) memcpy(d, s, n);
    return d;
}

/* ---- the graph -------------------------------------------------------- */

static int set_domain(sh_graph *g, int k)
{
    char *d = dupstr("com.shrink");
    if (!d) return SH_ENOMEM;
    free(g->nodes[k].domain);
    g->nodes[k].domain = d;
    return SH_OK;
}

static int add_w(sh_graph *g, const char *name, int64_t d0, int64_t d1, sh_error *err)
{
    int64_t shape[2] = {d0, d1};
    sh_tensor *t = sh_tensor_new(SH_F32, d1 > 0 ? 2 : 1, shape, err);
    if (!t) return err ? err->code : SH_ENOMEM;
    int rc = sh_graph_add_init(g, name, t, err);
    return rc < 0 ? rc : SH_OK;
}

static int node(sh_graph *g, const char *op, const char *name, int n_in, const char *const *in, const char *out,
                int shrink_op, sh_error *err)
{
    const char *outs[1] = {out};
    int k = sh_graph_add_node(g, op, name, n_in, in, 1, outs, err);
    if (k < 0) return k;
    if (shrink_op && set_domain(g, k)) return sh_err(err, SH_ENOMEM, "out of memory");
    return k;
}

static int gemm(sh_graph *g, const char *name, const char *x, const char *w, const char *out, sh_error *err)
{
    const char *in[2] = {x, w};
    int k = node(g, "Gemm", name, 2, in, out, 0, err);
    if (k < 0) return k;
    sh_node_set_int(g, k, "transB", 1);
    return k;
}

static int rmsnorm(sh_graph *g, const char *name, const char *x, const char *w, const char *out, sh_error *err)
{
    const char *in[2] = {x, w};
    int k = node(g, "RMSNorm", name, 2, in, out, 1, err);
    if (k < 0) return k;
    sh_node_set_float(g, k, "epsilon", 1e-5f);
    return k;
}

static void set_meta_int(sh_graph *g, const char *key, int64_t v)
{
    char b[32];
    snprintf(b, sizeof b, "%" PRId64, v);
    sh_graph_set_meta(g, key, b);
}

static int check_config(const sh_llama_config *c, const char *what, sh_error *err)
{
#define BAD(...) return sh_err(err, SH_EFORMAT, __VA_ARGS__)
    if (c->dim <= 0 || c->dim > (1 << 16)) BAD("%s: bad llama2.c header: dim %d (expected 1..65536)", what, c->dim);
    if (c->hidden_dim <= 0 || c->hidden_dim > (1 << 18))
        BAD("%s: bad llama2.c header: hidden_dim %d (expected 1..262144)", what, c->hidden_dim);
    if (c->n_layers <= 0 || c->n_layers > 1024)
        BAD("%s: bad llama2.c header: n_layers %d (expected 1..1024)", what, c->n_layers);
    if (c->n_heads <= 0 || c->n_heads > c->dim || c->dim % c->n_heads)
        BAD("%s: bad llama2.c header: n_heads %d does not divide dim %d", what, c->n_heads, c->dim);
    if ((c->dim / c->n_heads) % 2)
        BAD("%s: bad llama2.c header: head size %d (dim %d / n_heads %d) must be even for RoPE", what,
            c->dim / c->n_heads, c->dim, c->n_heads);
    if (c->n_kv_heads <= 0 || c->n_kv_heads > c->n_heads || c->n_heads % c->n_kv_heads)
        BAD("%s: bad llama2.c header: n_kv_heads %d does not divide n_heads %d", what, c->n_kv_heads, c->n_heads);
    if (c->vocab_size <= 0 || c->vocab_size > (1 << 22))
        BAD("%s: bad llama2.c header: vocab_size %d (expected 1..4194304)", what, c->vocab_size);
    if (c->seq_len <= 0 || c->seq_len > (1 << 20))
        BAD("%s: bad llama2.c header: seq_len %d (expected 1..1048576)", what, c->seq_len);
#undef BAD
    return SH_OK;
}

/* Graph with zero-filled weights. */
static int make_graph(const sh_llama_config *c, const char *name, sh_graph **out, sh_error *err)
{
    *out = NULL;
    int rc = check_config(c, "llama config", err);
    if (rc) return rc;
    sh_graph *g = sh_graph_new(name);
    if (!g) return sh_err(err, SH_ENOMEM, "out of memory");
    g->opset = 17;
    int64_t dim = c->dim, hid = c->hidden_dim, hs = dim / c->n_heads, kvd = hs * c->n_kv_heads;
    char a[NAME_MAX_LEN], b[NAME_MAX_LEN], x[NAME_MAX_LEN], h[NAME_MAX_LEN], nm[NAME_MAX_LEN];
    char q[NAME_MAX_LEN], kk[NAME_MAX_LEN], v[NAME_MAX_LEN], o[NAME_MAX_LEN];
    int64_t tshape[2] = {-1, -1};
#define TRY(e)                                                                                                         \
    do {                                                                                                               \
        int _r = (e);                                                                                                  \
        if (_r < 0) {                                                                                                  \
            rc = _r;                                                                                                   \
            goto fail;                                                                                                 \
        }                                                                                                              \
    } while (0)
    TRY(sh_graph_add_input(g, "tokens", SH_I64, 2, tshape, err));
    TRY(add_w(g, "tok_embeddings.weight", c->vocab_size, dim, err));
    {
        const char *in[2] = {"tok_embeddings.weight", "tokens"};
        TRY(node(g, "Gather", "tok_embeddings", 2, in, "embeddings", 0, err));
    }
    snprintf(x, sizeof x, "embeddings");
    for (int l = 0; l < c->n_layers; l++) {
#define P(buf, fmt) snprintf(buf, sizeof buf, "layers.%d." fmt, l)
        P(a, "attention_norm.weight");
        TRY(add_w(g, a, dim, 0, err));
        P(nm, "attention_norm"), P(h, "attention_norm.out");
        TRY(rmsnorm(g, nm, x, a, h, err));
        const char *wn[3] = {"wq", "wk", "wv"};
        char *outs[3] = {q, kk, v};
        int64_t od[3] = {dim, kvd, kvd};
        for (int i = 0; i < 3; i++) {
            snprintf(a, sizeof a, "layers.%d.attention.%s.weight", l, wn[i]);
            TRY(add_w(g, a, od[i], dim, err));
            snprintf(nm, sizeof nm, "layers.%d.attention.%s", l, wn[i]);
            snprintf(outs[i], NAME_MAX_LEN, "layers.%d.attention.%s.out", l, wn[i]);
            TRY(gemm(g, nm, h, a, outs[i], err));
        }
        for (int i = 0; i < 2; i++) {
            snprintf(nm, sizeof nm, "layers.%d.attention.rope_%s", l, i ? "k" : "q");
            snprintf(b, sizeof b, "layers.%d.attention.rope_%s.out", l, i ? "k" : "q");
            const char *in[1] = {outs[i]};
            int k = node(g, "RoPE", nm, 1, in, b, 1, err);
            TRY(k);
            sh_node_set_int(g, k, "head_size", hs);
            sh_node_set_float(g, k, "theta", 10000.0f);
            snprintf(outs[i], NAME_MAX_LEN, "%s", b);
        }
        {
            P(nm, "attention.attn"), P(o, "attention.attn.out");
            const char *in[3] = {q, kk, v};
            int k = node(g, "Attention", nm, 3, in, o, 1, err);
            TRY(k);
            sh_node_set_int(g, k, "n_heads", c->n_heads);
            sh_node_set_int(g, k, "n_kv_heads", c->n_kv_heads);
            sh_node_set_int(g, k, "causal", 1);
        }
        P(a, "attention.wo.weight");
        TRY(add_w(g, a, dim, dim, err));
        P(nm, "attention.wo"), P(b, "attention.wo.out");
        TRY(gemm(g, nm, o, a, b, err));
        {
            P(nm, "attention.residual"), P(h, "attention.residual.out");
            const char *in[2] = {x, b};
            TRY(node(g, "Add", nm, 2, in, h, 0, err));
            snprintf(x, sizeof x, "%s", h);
        }
        P(a, "ffn_norm.weight");
        TRY(add_w(g, a, dim, 0, err));
        P(nm, "ffn_norm"), P(h, "ffn_norm.out");
        TRY(rmsnorm(g, nm, x, a, h, err));
        P(a, "feed_forward.w1.weight");
        TRY(add_w(g, a, hid, dim, err));
        P(nm, "feed_forward.w1"), P(q, "feed_forward.w1.out");
        TRY(gemm(g, nm, h, a, q, err));
        P(a, "feed_forward.w3.weight");
        TRY(add_w(g, a, hid, dim, err));
        P(nm, "feed_forward.w3"), P(kk, "feed_forward.w3.out");
        TRY(gemm(g, nm, h, a, kk, err));
        {
            P(nm, "feed_forward.silu_mul"), P(v, "feed_forward.silu_mul.out");
            const char *in[2] = {q, kk};
            TRY(node(g, "SiluMul", nm, 2, in, v, 1, err));
        }
        P(a, "feed_forward.w2.weight");
        TRY(add_w(g, a, dim, hid, err));
        P(nm, "feed_forward.w2"), P(b, "feed_forward.w2.out");
        TRY(gemm(g, nm, v, a, b, err));
        {
            P(nm, "feed_forward.residual"), P(h, "out");
            const char *in[2] = {x, b};
            TRY(node(g, "Add", nm, 2, in, h, 0, err));
            snprintf(x, sizeof x, "%s", h);
        }
#undef P
    }
    TRY(add_w(g, "norm.weight", dim, 0, err));
    TRY(rmsnorm(g, "norm", x, "norm.weight", "norm.out", err));
    if (!c->shared_classifier) TRY(add_w(g, "output.weight", c->vocab_size, dim, err));
    TRY(gemm(g, "output", "norm.out", c->shared_classifier ? "tok_embeddings.weight" : "output.weight", "logits",
             err));
    TRY(sh_graph_mark_output(g, "logits", err));
#undef TRY
    sh_graph_set_meta(g, "model_kind", "llama");
    set_meta_int(g, "llama.dim", c->dim);
    set_meta_int(g, "llama.hidden_dim", c->hidden_dim);
    set_meta_int(g, "llama.n_layers", c->n_layers);
    set_meta_int(g, "llama.n_heads", c->n_heads);
    set_meta_int(g, "llama.n_kv_heads", c->n_kv_heads);
    set_meta_int(g, "llama.vocab_size", c->vocab_size);
    set_meta_int(g, "llama.seq_len", c->seq_len);
    set_meta_int(g, "llama.shared_classifier", c->shared_classifier ? 1 : 0);
    sh_graph_set_meta(g, "llama.rope_theta", "10000");
    sh_graph_set_meta(g, "llama.norm_eps", "1e-05");
    *out = g;
    return SH_OK;
fail:
    sh_graph_free(g);
    return rc;
}

static float *winit(sh_graph *g, const char *name)
{
    int v = sh_graph_find(g, name);
    return v >= 0 && g->values[v].init ? g->values[v].init->data : NULL;
}

static uint64_t splitmix(uint64_t *s)
{
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

int sh_llama_build(const sh_llama_config *cfg, uint64_t seed, sh_graph **out, sh_error *err)
{
    sh_graph *g;
    int rc = make_graph(cfg, "llama", &g, err);
    if (rc) return rc;
    uint64_t s = seed;
    for (int i = 0; i < g->n_values; i++) {
        sh_tensor *t = g->values[i].init;
        if (!t) continue;
        float *d = t->data;
        int64_t n = sh_tensor_numel(t);
        if (t->ndim == 1) { /* norm weights */
            for (int64_t j = 0; j < n; j++) d[j] = 1.0f;
            continue;
        }
        /* normal(0, 0.02) as llama2.c's training script; Box-Muller */
        float std = 0.02f;
        if (strstr(g->values[i].name, ".wo.") || strstr(g->values[i].name, ".w2."))
            std = 0.02f / sqrtf(2.0f * (float)cfg->n_layers);
        for (int64_t j = 0; j < n; j += 2) {
            double u1 = ((double)(splitmix(&s) >> 11) + 1.0) / 9007199254740993.0;
            double u2 = (double)(splitmix(&s) >> 11) / 9007199254740992.0;
            double r = sqrt(-2.0 * log(u1));
            d[j] = (float)(r * cos(2 * M_PI * u2)) * std;
            if (j + 1 < n) d[j + 1] = (float)(r * sin(2 * M_PI * u2)) * std;
        }
    }
    *out = g;
    return SH_OK;
}

/* ---- file layout ------------------------------------------------------ */

/* The tensors of a version-0 file in file order: name template (with %d for
 * the layer, or none), elements per layer (or in total), per layer flag. */
typedef struct entry {
    const char *fmt;
    int64_t n;
    int per_layer;
} entry;

static int layout(const sh_llama_config *c, entry *e)
{
    int64_t dim = c->dim, hid = c->hidden_dim, kvd = (int64_t)dim / c->n_heads * c->n_kv_heads;
    int64_t V = c->vocab_size;
    int n = 0;
    e[n++] = (entry){"tok_embeddings.weight", V * dim, 0};
    e[n++] = (entry){"layers.%d.attention_norm.weight", dim, 1};
    e[n++] = (entry){"layers.%d.attention.wq.weight", dim * dim, 1};
    e[n++] = (entry){"layers.%d.attention.wk.weight", kvd * dim, 1};
    e[n++] = (entry){"layers.%d.attention.wv.weight", kvd * dim, 1};
    e[n++] = (entry){"layers.%d.attention.wo.weight", dim * dim, 1};
    e[n++] = (entry){"layers.%d.ffn_norm.weight", dim, 1};
    e[n++] = (entry){"layers.%d.feed_forward.w1.weight", hid * dim, 1};
    e[n++] = (entry){"layers.%d.feed_forward.w2.weight", dim * hid, 1};
    e[n++] = (entry){"layers.%d.feed_forward.w3.weight", hid * dim, 1};
    e[n++] = (entry){"norm.weight", dim, 0};
    e[n++] = (entry){"(legacy RoPE cos table)", (int64_t)c->seq_len * (dim / c->n_heads / 2), 0};
    e[n++] = (entry){"(legacy RoPE sin table)", (int64_t)c->seq_len * (dim / c->n_heads / 2), 0};
    if (!c->shared_classifier) e[n++] = (entry){"output.weight", V * dim, 0};
    return n;
}

static void entry_name(const entry *e, int l, char *buf, size_t n)
{
    if (e->per_layer) snprintf(buf, n, e->fmt, l);
    else snprintf(buf, n, "%s", e->fmt);
}

/* The legacy tables as llama2.c's export computes them (float32 torch),
 * reproduced as closely as C allows: cos and sin of t * freq. */
static void rope_tables(const sh_llama_config *c, float *tab)
{
    int64_t hs = c->dim / c->n_heads, h2 = hs / 2, S = c->seq_len;
    for (int64_t i = 0; i < h2; i++) {
        float freq = 1.0f / powf(10000.0f, (float)(2 * i) / (float)hs);
        for (int64_t t = 0; t < S; t++) {
            float v = (float)t * freq;
            tab[t * h2 + i] = (float)cos((double)v);
            tab[S * h2 + t * h2 + i] = (float)sin((double)v);
        }
    }
}

static void base_name(const char *path, char *buf, size_t n)
{
    const char *s = strrchr(path, '/');
    snprintf(buf, n, "%s", s ? s + 1 : path);
    char *dot = strrchr(buf, '.');
    if (dot && dot != buf) *dot = 0;
}

int sh_llama2c_load(const char *path, sh_graph **out, sh_error *err)
{
    *out = NULL;
    void *buf;
    size_t size;
    int rc = sh_read_file(path, &buf, &size, err);
    if (rc) return rc;
    const unsigned char *p = buf;
    if (size < 28) {
        free(buf);
        return sh_err(err, SH_EFORMAT, "%s: truncated: expected 28 bytes for the llama2.c header, file has %zu", path,
                      size);
    }
    int32_t h[7];
    memcpy(h, p, sizeof h);
    sh_llama_config c = {h[0], h[1], h[2], h[3], h[4], h[5] < 0 ? -h[5] : h[5], h[6], h[5] > 0};
    if (h[5] == INT32_MIN) c.vocab_size = 0;
    if ((rc = check_config(&c, path, err))) {
        free(buf);
        return rc;
    }
    entry e[16];
    int ne = layout(&c, e);
    /* sizes and truncation, in file order */
    int64_t off = 28;
    for (int i = 0; i < ne; i++)
        for (int l = 0; l < (e[i].per_layer ? c.n_layers : 1); l++) {
            off += 4 * e[i].n;
            if ((uint64_t)off > size) {
                char nm[NAME_MAX_LEN];
                entry_name(&e[i], l, nm, sizeof nm);
                free(buf);
                return sh_err(err, SH_EFORMAT, "%s: truncated: expected %" PRId64 " bytes for %s, file has %zu",
                              path, off, nm, size);
            }
        }
    if ((uint64_t)off != size) {
        free(buf);
        return sh_err(err, SH_EFORMAT,
                      "%s: %zu bytes, but a llama2.c version-0 file with this header (dim %d, hidden_dim %d, "
                      "n_layers %d, n_heads %d, n_kv_heads %d, vocab_size %d, seq_len %d) has %" PRId64 " bytes",
                      path, size, c.dim, c.hidden_dim, c.n_layers, c.n_heads, c.n_kv_heads, h[5], c.seq_len, off);
    }
    char gname[NAME_MAX_LEN];
    base_name(path, gname, sizeof gname);
    sh_graph *g;
    if ((rc = make_graph(&c, gname, &g, err))) {
        free(buf);
        sh_error_wrap(err, "%s", path);
        return rc;
    }
    off = 28;
    int64_t h2 = c.dim / c.n_heads / 2, ntab = 2 * c.seq_len * h2;
    const float *file_tab = NULL;
    for (int i = 0; i < ne; i++)
        for (int l = 0; l < (e[i].per_layer ? c.n_layers : 1); l++) {
            char nm[NAME_MAX_LEN];
            entry_name(&e[i], l, nm, sizeof nm);
            if (nm[0] == '(') {
                if (!file_tab) file_tab = (const float *)(p + off);
            } else {
                float *d = winit(g, nm);
                if (!d) {
                    sh_graph_free(g);
                    free(buf);
                    return sh_err(err, SH_EINTERNAL, "%s: no tensor %s in the graph", path, nm);
                }
                memcpy(d, p + off, 4 * (size_t)e[i].n);
            }
            off += 4 * e[i].n;
        }
    /* legacy tables: keep the entries that differ from rope_tables() */
    float *tab = malloc(sizeof(float) * (size_t)(ntab + 1));
    if (!tab) {
        sh_graph_free(g);
        free(buf);
        return sh_err(err, SH_ENOMEM, "out of memory");
    }
    rope_tables(&c, tab);
    size_t cap = 1, len = 0;
    char *fix = malloc(cap);
    for (int64_t i = 0; fix && i < ntab; i++) {
        float f;
        memcpy(&f, (const char *)file_tab + 4 * i, 4);
        if (memcmp(&f, &tab[i], 4) == 0) continue;
        uint32_t bits;
        memcpy(&bits, &f, 4);
        char item[40];
        int n = snprintf(item, sizeof item, "%s%" PRId64 ":%08" PRIx32, len ? "," : "", i, bits);
        if (len + (size_t)n + 1 > cap) {
            while (len + (size_t)n + 1 > cap) cap *= 2;
            char *nf = realloc(fix, cap);
            if (!nf) {
                free(fix);
                fix = NULL;
                break;
            }
            fix = nf;
        }
        memcpy(fix + len, item, (size_t)n + 1);
        len += (size_t)n;
    }
    free(tab);
    free(buf);
    if (!fix) {
        sh_graph_free(g);
        return sh_err(err, SH_ENOMEM, "out of memory");
    }
    if (len) sh_graph_set_meta(g, "llama.rope_fix", fix);
    free(fix);
    *out = g;
    return SH_OK;
}

/* ---- config of a graph ------------------------------------------------- */

static int meta_int(const sh_graph *g, const char *key, int *v)
{
    const char *s = sh_graph_get_meta(g, key);
    if (!s || !*s) return 0;
    char *end;
    long x = strtol(s, &end, 10);
    if (*end || x < INT32_MIN || x > INT32_MAX) return 0;
    *v = (int)x;
    return 1;
}

static const sh_value *value_of(const sh_graph *g, const char *name)
{
    int v = sh_graph_find(g, name);
    return v >= 0 ? &g->values[v] : NULL;
}

int sh_llama_config_of(const sh_graph *g, sh_llama_config *cfg, sh_error *err)
{
    memset(cfg, 0, sizeof *cfg);
    const char *kind = sh_graph_get_meta(g, "model_kind");
    int have_meta = kind && strcmp(kind, "llama") == 0;
    if (have_meta) {
        meta_int(g, "llama.dim", &cfg->dim);
        meta_int(g, "llama.hidden_dim", &cfg->hidden_dim);
        meta_int(g, "llama.n_layers", &cfg->n_layers);
        meta_int(g, "llama.n_heads", &cfg->n_heads);
        meta_int(g, "llama.n_kv_heads", &cfg->n_kv_heads);
        meta_int(g, "llama.vocab_size", &cfg->vocab_size);
        meta_int(g, "llama.seq_len", &cfg->seq_len);
        meta_int(g, "llama.shared_classifier", &cfg->shared_classifier);
    }
    /* weight shapes win over meta (compression passes may change them) */
    const sh_value *emb = value_of(g, "tok_embeddings.weight");
    if (emb && emb->ndim == 2) cfg->vocab_size = (int)emb->shape[0], cfg->dim = (int)emb->shape[1];
    int L = 0;
    char nm[NAME_MAX_LEN];
    for (;; L++) {
        snprintf(nm, sizeof nm, "layers.%d.attention.wq.weight", L);
        if (!value_of(g, nm)) break;
    }
    if (L) cfg->n_layers = L;
    const sh_value *w1 = value_of(g, "layers.0.feed_forward.w1.weight");
    if (w1 && w1->ndim == 2) cfg->hidden_dim = (int)w1->shape[0];
    for (int i = 0; i < g->n_nodes; i++)
        if (strcmp(g->nodes[i].op, "Attention") == 0) {
            cfg->n_heads = (int)sh_attr_int(&g->nodes[i], "n_heads", cfg->n_heads);
            cfg->n_kv_heads = (int)sh_attr_int(&g->nodes[i], "n_kv_heads", cfg->n_heads);
            break;
        }
    if (value_of(g, "output.weight")) cfg->shared_classifier = 0;
    else if (emb) cfg->shared_classifier = 1;
    if (cfg->seq_len <= 0) cfg->seq_len = 512;
    if (!emb || !L || cfg->n_heads <= 0)
        return sh_err(err, SH_EUNSUPPORTED,
                      "graph '%s' is not a Llama model (needs tok_embeddings.weight, layers.N.attention.wq.weight "
                      "and an Attention node)",
                      g->name ? g->name : "?");
    return check_config(cfg, g->name ? g->name : "graph", err);
}

/* ---- save --------------------------------------------------------------- */

static int tensor_f32(const sh_graph *g, const char *name, int64_t n, float *dst, sh_error *err)
{
    const sh_value *v = value_of(g, name);
    if (!v || !v->init)
        return sh_err(err, SH_EINVAL, "llama2.c export: the graph has no weight '%s'", name);
    const sh_tensor *t = v->init;
    if (sh_tensor_numel(t) != n)
        return sh_err(err, SH_ESHAPE, "llama2.c export: weight '%s' has %" PRId64 " elements, expected %" PRId64, name,
                      sh_tensor_numel(t), n);
    if (t->fmt == SH_F32) {
        memcpy(dst, t->data, 4 * (size_t)n);
        return SH_OK;
    }
    const sh_format_traits *tr = sh_format_get(t->fmt);
    if (tr && (tr->packed || tr->is_quantized))
        return sh_err(err, SH_EUNSUPPORTED,
                      "llama2.c export: weight '%s' is %s, and a llama2.c .bin holds f32 weights only "
                      "(save as .onnx to keep it compressed)",
                      name, tr->name);
    if (!tr || !tr->to_f32 || !tr->block_elems || n % tr->block_elems)
        return sh_err(err, SH_EUNSUPPORTED, "llama2.c export: weight '%s' has format %s, which cannot be converted",
                      name, tr ? tr->name : "?");
    tr->to_f32(t->data, dst, n);
    return SH_OK;
}

int sh_llama2c_save(const sh_graph *g, const char *path, sh_error *err)
{
    sh_llama_config c;
    int rc = sh_llama_config_of(g, &c, err);
    if (rc) {
        sh_error_wrap(err, "%s", path);
        return rc;
    }
    entry e[16];
    int ne = layout(&c, e);
    int64_t total = 28;
    for (int i = 0; i < ne; i++) total += 4 * e[i].n * (e[i].per_layer ? c.n_layers : 1);
    char *buf = malloc((size_t)total);
    if (!buf) return sh_err(err, SH_ENOMEM, "%s: out of memory (%" PRId64 " bytes)", path, total);
    int32_t h[7] = {c.dim, c.hidden_dim, c.n_layers, c.n_heads, c.n_kv_heads,
                    c.shared_classifier ? c.vocab_size : -c.vocab_size, c.seq_len};
    memcpy(buf, h, sizeof h);
    int64_t off = 28;
    for (int i = 0; i < ne && !rc; i++)
        for (int l = 0; l < (e[i].per_layer ? c.n_layers : 1) && !rc; l++) {
            char nm[NAME_MAX_LEN];
            entry_name(&e[i], l, nm, sizeof nm);
            if (nm[0] != '(') rc = tensor_f32(g, nm, e[i].n, (float *)(buf + off), err);
            else if (strcmp(e[i].fmt, "(legacy RoPE cos table)") == 0) { /* both tables at once */
                float *tab = (float *)(buf + off);
                rope_tables(&c, tab);
                int64_t ntab = 2 * e[i].n;
                const char *fix = sh_graph_get_meta(g, "llama.rope_fix");
                while (fix && *fix) {
                    char *end;
                    long long idx = strtoll(fix, &end, 10);
                    if (*end != ':') break;
                    unsigned long bits = strtoul(end + 1, &end, 16);
                    if (idx >= 0 && idx < ntab) {
                        uint32_t b32 = (uint32_t)bits;
                        memcpy(&tab[idx], &b32, 4);
                    }
                    fix = *end == ',' ? end + 1 : end;
                    if (*end != ',') break;
                }
            }
            off += 4 * e[i].n;
        }
    if (!rc) rc = sh_write_atomic(path, buf, (size_t)total, err);
    free(buf);
    return rc;
}
