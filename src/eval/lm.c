/* lm.c - language models: teacher-forced NLL / perplexity, KL between two
 * models, text generation with a KV cache, token data sets from text files. */
#include <ctype.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "shrink.h"

/* ---- running a token window --------------------------------------------- */

typedef struct lm_runner {
    sh_program *p;
    int out_idx;       /* graph output holding the logits */
    int64_t *buf;      /* i64 token buffer */
    int64_t cap;
} lm_runner;

static int runner_new(sh_graph *g, int nthreads, lm_runner *r, sh_error *err)
{
    memset(r, 0, sizeof *r);
    if (g->n_inputs != 1)
        return sh_err(err, SH_EUNSUPPORTED, "language model '%s' must take one input (tokens), it takes %d",
                      g->name ? g->name : "?", g->n_inputs);
    if (g->n_outputs < 1) return sh_err(err, SH_EUNSUPPORTED, "language model has no outputs");
    for (int i = 0; i < g->n_outputs; i++)
        if (strcmp(g->values[g->outputs[i]].name, "logits") == 0) r->out_idx = i;
    sh_run_opts o = {0};
    o.nthreads = nthreads;
    return sh_program_new(g, &o, &r->p, err);
}

static void runner_free(lm_runner *r)
{
    sh_program_free(r->p);
    free(r->buf);
    memset(r, 0, sizeof *r);
}

/* Run B rows of T tokens (rows[b] for i32 data, or tokint for one row of
 * ints) starting at position pos; *logits -> [B*T, V] rows. */
static int runner_run_rows(lm_runner *r, const int32_t *const *rows, const int *tokint, int64_t B, int64_t T,
                           int64_t pos, const float **logits, int64_t *V, sh_error *err)
{
    if (B * T > r->cap) {
        int64_t *nb = realloc(r->buf, sizeof(int64_t) * (size_t)(B * T));
        if (!nb) return sh_err(err, SH_ENOMEM, "out of memory");
        r->buf = nb, r->cap = B * T;
    }
    for (int64_t b = 0; b < B; b++)
        for (int64_t i = 0; i < T; i++) r->buf[b * T + i] = rows ? rows[b][i] : tokint[i];
    sh_tensor in = {0};
    in.fmt = SH_I64, in.ndim = 2, in.shape[0] = B, in.shape[1] = T;
    in.data = r->buf, in.nbytes = sizeof(int64_t) * (size_t)(B * T);
    const sh_tensor *ins[1] = {&in};
    sh_program_set_pos(r->p, pos);
    int rc = sh_program_run(r->p, ins, 1, err);
    if (rc) return rc;
    sh_tensor *o = sh_program_output(r->p, r->out_idx);
    if (!o || !o->data || o->fmt != SH_F32 || o->ndim < 2)
        return sh_err(err, SH_EUNSUPPORTED, "language model output is not f32 logits [B,T,vocab]");
    int64_t n = sh_tensor_numel(o), v = o->shape[o->ndim - 1];
    if (v <= 0 || n != B * T * v) {
        char b[160];
        return sh_err(err, SH_ESHAPE, "language model output %s for %lldx%lld tokens: expected [%lld,%lld,vocab]",
                      sh_shape_str(o->ndim, o->shape, b, sizeof b), (long long)B, (long long)T, (long long)B,
                      (long long)T);
    }
    *logits = o->data;
    *V = v;
    return SH_OK;
}

static int runner_run(lm_runner *r, const int *tokint, int64_t T, int64_t pos, const float **logits, int64_t *V,
                      sh_error *err)
{
    return runner_run_rows(r, NULL, tokint, 1, T, pos, logits, V, err);
}

static int model_seq_len(const sh_graph *g, const sh_eval_opts *o)
{
    if (o && o->seq_len > 0) return o->seq_len;
    int64_t fb, ft;
    sh_graph_token_dims(g, &fb, &ft);
    if (ft > 1) return (int)ft;
    sh_llama_config c;
    sh_error e = {0};
    if (sh_llama_config_of(g, &c, &e) == SH_OK && c.seq_len > 0) return c.seq_len;
    const char *s = sh_graph_get_meta(g, "seq_len");
    if (s && atoi(s) > 1) return atoi(s);
    return 512;
}

/* Documents of d: [off[i], off[i+1]). */
static void doc_range(const sh_dataset *d, int64_t i, int64_t *a, int64_t *b)
{
    if (d->doc_off && d->n_docs > 0) {
        *a = d->doc_off[i];
        *b = d->doc_off[i + 1];
    } else {
        *a = 0;
        *b = d->n;
    }
}

static int check_tokens(const sh_dataset *d, sh_error *err)
{
    if (!d || d->kind != 2 || !d->tokens)
        return sh_err(err, SH_EINVAL, "language-model evaluation needs a token data set (text:FILE,tok=...)");
    if (d->doc_off && d->n_docs > 0) {
        for (int64_t i = 0; i < d->n_docs; i++)
            if (d->doc_off[i] < 0 || d->doc_off[i] > d->doc_off[i + 1] || d->doc_off[i + 1] > d->n)
                return sh_err(err, SH_EINVAL, "token data set: bad document offsets at document %lld", (long long)i);
    }
    return SH_OK;
}

/* Window plan: a document of L tokens is covered by windows [s, e) of at most
 * W tokens; window k scores targets (scored_from, e) (positions inside the
 * document), each target once. */
typedef struct win_iter {
    int64_t L, W, s, e, from, done;
} win_iter;

static int win_next(win_iter *w)
{
    if (w->done >= w->L - 1) return 0; /* all targets 1..L-1 scored */
    if (w->e == 0) w->s = 0;
    else {
        int64_t step = w->W / 2 > 0 ? w->W / 2 : 1;
        w->s = w->e - (w->W - step);
        if (w->s < 0) w->s = 0;
        if (w->s + w->W > w->L) w->s = w->L - w->W > 0 ? w->L - w->W : 0;
    }
    w->e = w->s + w->W < w->L ? w->s + w->W : w->L;
    w->from = w->done; /* targets index > from are new */
    w->done = w->e - 1;
    return 1;
}

static int64_t count_targets(const sh_dataset *d, int64_t limit)
{
    int64_t n = 0, nd = d->doc_off && d->n_docs > 0 ? d->n_docs : 1;
    for (int64_t i = 0; i < nd; i++) {
        int64_t a, b;
        doc_range(d, i, &a, &b);
        if (b - a > 1) n += b - a - 1;
    }
    return limit > 0 && limit < n ? limit : n;
}

static double row_logsumexp(const float *l, int64_t V)
{
    float mx = l[0];
    for (int64_t j = 1; j < V; j++)
        if (l[j] > mx) mx = l[j];
    double s = 0.0;
    for (int64_t j = 0; j < V; j++) s += exp((double)l[j] - mx);
    return mx + log(s);
}

/* Shared driver: for each scored target, fn(ctx, logits rows of model A (and
 * B), target) */
typedef int (*score_fn)(void *ctx, const float *la, const float *lb, int64_t V, int32_t target, sh_error *err);

static int lm_drive(sh_graph *ga, sh_graph *gb, const sh_dataset *d, const sh_eval_opts *o, score_fn fn, void *ctx,
                    int64_t *scored, double *seconds, sh_error *err)
{
    int rc = check_tokens(d, err);
    if (rc) return rc;
    int nthreads = o ? o->nthreads : 0;
    int64_t limit = o && o->limit > 0 ? o->limit : 0;
    int W = model_seq_len(ga, o);
    if (gb) {
        int Wb = model_seq_len(gb, o);
        if (Wb < W) W = Wb;
    }
    if (W < 2) return sh_err(err, SH_EINVAL, "context window of %d tokens is too short", W);
    lm_runner ra, rb;
    memset(&rb, 0, sizeof rb);
    if ((rc = runner_new(ga, nthreads, &ra, err))) return rc;
    if (gb && (rc = runner_new(gb, nthreads, &rb, err))) {
        runner_free(&ra);
        return rc;
    }
    int64_t total = count_targets(d, limit), n = 0, nd = d->doc_off && d->n_docs > 0 ? d->n_docs : 1;
    /* windows of equal length run together, up to maxb rows and 8192 tokens */
    int64_t maxb = o && o->batch > 0 ? o->batch : 16;
    if (maxb * W > 8192) maxb = 8192 / W > 0 ? 8192 / W : 1;
    /* a model with a fixed input shape [FB, FT] gets exactly that: shorter
     * windows padded with token 0 after their end (causal: the scored
     * positions do not see the padding), missing rows padded likewise */
    int64_t FB, FT;
    sh_graph_token_dims(ga, &FB, &FT);
    if (FB > 0) maxb = FB;
    int32_t *padbuf = NULL;
    typedef struct pend {
        int64_t doc, a, s, e, from;
    } pend;
    pend *pb = malloc(sizeof(pend) * (size_t)maxb);
    const int32_t **rows = malloc(sizeof(int32_t *) * (size_t)maxb);
    if (!pb || !rows) {
        free(pb), free(rows);
        runner_free(&ra), runner_free(&rb);
        return sh_err(err, SH_ENOMEM, "out of memory");
    }
    int64_t np = 0, planned = 0; /* planned: targets in queued windows */
    double t0 = sh_now();
    int64_t i = 0, a = 0, b = 0;
    win_iter w = {0};
    int have_doc = 0, done = 0;
    while (!rc && !done) {
        /* next window, if any and within the limit */
        int got = 0;
        while (!got && !(limit && planned >= limit)) {
            if (!have_doc) {
                if (i >= nd) break;
                doc_range(d, i, &a, &b);
                w = (win_iter){b - a, W, 0, 0, 0, 0};
                have_doc = 1;
            }
            if (win_next(&w)) got = 1;
            else have_doc = 0, i++;
        }
        int flush = np > 0 && (!got || np == maxb || (pb[0].e - pb[0].s) != (w.e - w.s));
        if (flush) {
            int64_t T = pb[0].e - pb[0].s, Va = 0, Vb = 0, nr = np;
            const float *la = NULL, *lb = NULL;
            for (int64_t k = 0; k < np; k++) rows[k] = d->tokens + pb[k].a + pb[k].s;
            if ((FT > 0 && FT > T) || (FB > 0 && FB > np)) {
                int64_t TT = FT > T ? FT : T;
                nr = FB > np ? FB : np;
                free(padbuf);
                padbuf = calloc((size_t)(nr * TT), sizeof(int32_t));
                if (!padbuf) {
                    rc = sh_err(err, SH_ENOMEM, "out of memory");
                    break;
                }
                for (int64_t k = 0; k < np; k++) memcpy(padbuf + k * TT, rows[k], sizeof(int32_t) * (size_t)T);
                for (int64_t k = 0; k < nr; k++) rows[k] = padbuf + k * TT;
                T = TT;
            }
            rc = runner_run_rows(&ra, rows, NULL, nr, T, 0, &la, &Va, err);
            if (!rc && gb) {
                rc = runner_run_rows(&rb, rows, NULL, nr, T, 0, &lb, &Vb, err);
                if (!rc && Vb != Va)
                    rc = sh_err(err, SH_ESHAPE, "the two models have different vocabularies (%lld and %lld)",
                                (long long)Va, (long long)Vb);
            }
            for (int64_t k = 0; k < np && !rc; k++)
                for (int64_t j = pb[k].from + 1; !rc && j < pb[k].e && (!limit || n < limit); j++) {
                    int32_t tgt = d->tokens[pb[k].a + j];
                    if (tgt < 0 || tgt >= Va) {
                        rc = sh_err(err, SH_EINVAL,
                                    "token %d at document %lld position %lld is outside the model's vocabulary of %lld",
                                    tgt, (long long)pb[k].doc, (long long)j, (long long)Va);
                        break;
                    }
                    int64_t row = k * T + j - 1 - pb[k].s; /* T: the padded length */
                    rc = fn(ctx, la + row * Va, gb ? lb + row * Va : NULL, Va, tgt, err);
                    n++;
                }
            np = 0;
            if (!rc && o && o->progress) o->progress(o->progress_ctx, n, total);
        }
        if (got) {
            pb[np++] = (pend){i, a, w.s, w.e, w.from};
            planned += w.e - 1 - w.from;
        } else if (!flush || np == 0) {
            done = 1;
        }
    }
    free(pb), free(rows), free(padbuf);
    *seconds = sh_now() - t0;
    *scored = n;
    runner_free(&ra);
    runner_free(&rb);
    return rc;
}

typedef struct nll_acc {
    double sum;
} nll_acc;

static int nll_fn(void *ctx, const float *la, const float *lb, int64_t V, int32_t tgt, sh_error *err)
{
    (void)lb, (void)err;
    nll_acc *a = ctx;
    a->sum += row_logsumexp(la, V) - la[tgt];
    return SH_OK;
}

int sh_eval_lm_ex(sh_graph *g, const sh_dataset *d, const sh_eval_opts *opts, sh_eval_report *rep, sh_error *err)
{
    memset(rep, 0, sizeof *rep);
    rep->kind = 2;
    nll_acc acc = {0};
    int64_t n = 0;
    double sec = 0;
    int rc = lm_drive(g, NULL, d, opts, nll_fn, &acc, &n, &sec, err);
    if (rc) return rc;
    if (n == 0) return sh_err(err, SH_EINVAL, "token data set has no token to score (documents of 1 token or less)");
    rep->n = n;
    rep->nll = acc.sum / (double)n;
    rep->ppl = exp(rep->nll);
    rep->seconds = sec;
    rep->throughput = sec > 0 ? (double)n / sec : 0;
    rep->params = sh_graph_param_count(g);
    rep->param_bytes = sh_graph_param_bytes(g);
    return SH_OK;
}

int sh_eval_lm(sh_graph *g, const sh_dataset *d, int nthreads, sh_eval_report *rep, sh_error *err)
{
    sh_eval_opts o;
    memset(&o, 0, sizeof o);
    o.nthreads = nthreads;
    return sh_eval_lm_ex(g, d, &o, rep, err);
}

typedef struct kl_acc {
    double sum;
    float *pa;
} kl_acc;

static int kl_fn(void *ctx, const float *la, const float *lb, int64_t V, int32_t tgt, sh_error *err)
{
    (void)tgt, (void)err;
    kl_acc *a = ctx;
    double za = row_logsumexp(la, V), zb = row_logsumexp(lb, V), kl = 0.0;
    for (int64_t j = 0; j < V; j++) {
        double lpa = la[j] - za, lpb = lb[j] - zb;
        kl += exp(lpa) * (lpa - lpb);
    }
    a->sum += kl > 0 ? kl : 0;
    return SH_OK;
}

int sh_lm_kl(sh_graph *ref, sh_graph *g, const sh_dataset *d, const sh_eval_opts *opts, double *kl, sh_error *err)
{
    *kl = 0;
    kl_acc acc = {0};
    int64_t n = 0;
    double sec = 0;
    int rc = lm_drive(ref, g, d, opts, kl_fn, &acc, &n, &sec, err);
    if (rc) return rc;
    if (n == 0) return sh_err(err, SH_EINVAL, "token data set has no token to score");
    *kl = acc.sum / (double)n;
    return SH_OK;
}

/* ---- generation ------------------------------------------------------------ */

static uint32_t rng_u32(uint64_t *s)
{
    *s ^= *s >> 12;
    *s ^= *s << 25;
    *s ^= *s >> 27;
    return (uint32_t)((*s * 0x2545F4914F6CDD1Dull) >> 32);
}

static float rng_f32(uint64_t *s) { return (float)(rng_u32(s) >> 8) / 16777216.0f; }

typedef struct prob_index {
    float prob;
    int index;
} prob_index;

static int cmp_prob(const void *a, const void *b)
{
    const prob_index *x = a, *y = b;
    if (x->prob > y->prob) return -1;
    if (x->prob < y->prob) return 1;
    return 0;
}

/* llama2.c's sampler; probs: scratch of V floats, pi: V entries. */
static int sample(const float *logits, int V, float temperature, float topp, uint64_t *rng, float *probs,
                  prob_index *pi)
{
    if (temperature == 0.0f) {
        int best = 0;
        for (int i = 1; i < V; i++)
            if (logits[i] > logits[best]) best = i;
        return best;
    }
    for (int i = 0; i < V; i++) probs[i] = logits[i] / temperature;
    float mx = probs[0];
    for (int i = 1; i < V; i++)
        if (probs[i] > mx) mx = probs[i];
    float sum = 0.0f;
    for (int i = 0; i < V; i++) {
        probs[i] = expf(probs[i] - mx);
        sum += probs[i];
    }
    for (int i = 0; i < V; i++) probs[i] /= sum;
    float coin = rng_f32(rng);
    if (topp <= 0 || topp >= 1) {
        float cdf = 0.0f;
        for (int i = 0; i < V; i++) {
            cdf += probs[i];
            if (coin < cdf) return i;
        }
        return V - 1;
    }
    int n0 = 0;
    const float cutoff = (1.0f - topp) / (float)(V - 1);
    for (int i = 0; i < V; i++)
        if (probs[i] >= cutoff) pi[n0].index = i, pi[n0].prob = probs[i], n0++;
    qsort(pi, (size_t)n0, sizeof *pi, cmp_prob);
    float cum = 0.0f;
    int last = n0 - 1;
    for (int i = 0; i < n0; i++) {
        cum += pi[i].prob;
        if (cum > topp) {
            last = i;
            break;
        }
    }
    float r = coin * cum, cdf = 0.0f;
    for (int i = 0; i <= last; i++) {
        cdf += pi[i].prob;
        if (r < cdf) return pi[i].index;
    }
    return last >= 0 ? pi[last].index : 0;
}

static void emit_piece(const char *piece, void (*emit)(const char *, void *), void *ud)
{
    if (!emit || !piece || !piece[0]) return;
    if (!piece[1]) {
        unsigned char b = (unsigned char)piece[0];
        if (b < 0x80 && !(isprint(b) || isspace(b))) return; /* raw control byte */
    }
    emit(piece, ud);
}

int sh_generate(sh_graph *g, const sh_tokenizer *tok, const char *prompt, int steps, float temperature,
                float topp, uint64_t seed, int nthreads, void (*emit)(const char *piece, void *ud), void *ud,
                sh_generate_stats *stats, sh_error *err)
{
    if (stats) memset(stats, 0, sizeof *stats);
    if (!g || !tok) return sh_err(err, SH_EINVAL, "generate: model and tokenizer are required");
    if (!(temperature >= 0.0f) || !isfinite(temperature))
        return sh_err(err, SH_EINVAL, "generate: temperature %g must be >= 0", (double)temperature);
    int seq_len = model_seq_len(g, NULL);
    if (steps <= 0 || steps > seq_len) steps = seq_len;
    int *toks = NULL, n = 0;
    int rc = sh_tokenizer_encode(tok, prompt ? prompt : "", 1, 0, &toks, &n, err);
    if (rc) return rc;
    lm_runner r;
    if ((rc = runner_new(g, nthreads, &r, err))) {
        free(toks);
        return rc;
    }
    int V = sh_tokenizer_vocab_size(tok);
    float *probs = malloc(sizeof(float) * (size_t)V);
    prob_index *pi = malloc(sizeof(prob_index) * (size_t)V);
    if (!probs || !pi) {
        rc = sh_err(err, SH_ENOMEM, "out of memory");
        goto done;
    }
    uint64_t rng = seed ? seed : 0x5EED5EED5EEDull;
    /* prompt pieces that fall within steps */
    for (int i = 1; i < n && i < steps; i++) emit_piece(sh_tokenizer_decode(tok, toks[i - 1], toks[i]), emit, ud);
    if (stats) stats->prompt_tokens = n;
    if (n >= steps) goto done;
    double t0 = sh_now();
    const float *logits;
    int64_t Vm;
    if ((rc = runner_run(&r, toks, n, 0, &logits, &Vm, err))) goto done;
    if (Vm != V) {
        rc = sh_err(err, SH_EINVAL, "tokenizer has %d tokens but the model's vocabulary has %lld", V, (long long)Vm);
        goto done;
    }
    int next = sample(logits + (int64_t)(n - 1) * V, V, temperature, topp, &rng, probs, pi);
    int token = toks[n - 1], pos = n, gen = 1;
    double t1 = sh_now();
    for (;;) {
        if (next == 1) break;
        emit_piece(sh_tokenizer_decode(tok, token, next), emit, ud);
        token = next;
        if (pos >= steps) break;
        if ((rc = runner_run(&r, &token, 1, pos, &logits, &Vm, err))) break;
        next = sample(logits, V, temperature, topp, &rng, probs, pi);
        pos++;
        gen++;
    }
    if (stats) {
        double t2 = sh_now();
        stats->generated_tokens = gen;
        stats->prefill_seconds = t1 - t0;
        stats->gen_seconds = t2 - t1;
        stats->tokens_per_s = t2 > t0 ? (double)gen / (t2 - t0) : 0;
    }
done:
    free(probs);
    free(pi);
    free(toks);
    runner_free(&r);
    return rc;
}

/* ---- token data sets from text ------------------------------------------- */

typedef struct ivec {
    int32_t *a;
    int64_t n, cap;
} ivec;

static int ivec_push(ivec *v, int32_t x)
{
    if (v->n == v->cap) {
        int64_t cap = v->cap ? v->cap * 2 : 4096;
        int32_t *na = realloc(v->a, sizeof(int32_t) * (size_t)cap);
        if (!na) return SH_ENOMEM;
        v->a = na, v->cap = cap;
    }
    v->a[v->n++] = x;
    return SH_OK;
}

static int is_separator(const char *s, size_t n)
{
    while (n && isspace((unsigned char)s[n - 1])) n--;
    while (n && isspace((unsigned char)*s)) s++, n--;
    return n == 13 && memcmp(s, "<|endoftext|>", 13) == 0;
}

int sh_dataset_from_text(const char *path, const sh_tokenizer *tok, sh_dataset **out, sh_error *err)
{
    *out = NULL;
    char *text;
    size_t size;
    int rc = sh_read_file(path, (void **)&text, &size, err);
    if (rc) return rc;
    ivec toks = {0};
    int64_t *off = NULL, n_docs = 0, cap_docs = 0;
    size_t doc_start = 0, i = 0;
    while (!rc) {
        /* find the end of the current line */
        size_t ls = i, le = i;
        while (le < size && text[le] != '\n') le++;
        int at_end = ls >= size, sep = !at_end && is_separator(text + ls, le - ls);
        if (sep || at_end) {
            size_t a = doc_start, b = sep ? ls : size;
            while (a < b && isspace((unsigned char)text[a])) a++;
            while (b > a && isspace((unsigned char)text[b - 1])) b--;
            if (b > a) {
                if (n_docs + 2 > cap_docs) {
                    cap_docs = cap_docs ? cap_docs * 2 : 64;
                    int64_t *no = realloc(off, sizeof(int64_t) * (size_t)cap_docs);
                    if (!no) {
                        rc = sh_err(err, SH_ENOMEM, "out of memory");
                        break;
                    }
                    off = no;
                }
                off[n_docs++] = toks.n;
                if (tok) {
                    char save = text[b];
                    text[b] = 0;
                    int *t = NULL, nt = 0;
                    rc = sh_tokenizer_encode(tok, text + a, 1, 0, &t, &nt, err);
                    text[b] = save;
                    for (int k = 0; !rc && k < nt; k++)
                        if (ivec_push(&toks, t[k])) rc = sh_err(err, SH_ENOMEM, "out of memory");
                    free(t);
                } else {
                    for (size_t k = a; !rc && k < b; k++)
                        if (ivec_push(&toks, (unsigned char)text[k])) rc = sh_err(err, SH_ENOMEM, "out of memory");
                }
            }
            if (at_end) break;
            doc_start = le + 1;
        }
        i = le + 1;
        if (le >= size && !sep) {
            i = size; /* next iteration closes the last document */
        }
    }
    free(text);
    if (!rc && n_docs == 0) rc = sh_err(err, SH_EINVAL, "%s: no text", path);
    sh_dataset *d = NULL;
    if (!rc) {
        d = calloc(1, sizeof *d);
        size_t dl = strlen(path) + 6;
        char *desc = malloc(dl);
        if (!d || !desc) {
            free(d), free(desc);
            d = NULL;
            rc = sh_err(err, SH_ENOMEM, "out of memory");
        } else {
            snprintf(desc, dl, "text:%s", path);
            off[n_docs] = toks.n;
            d->kind = 2;
            d->n = toks.n;
            d->tokens = toks.a;
            d->vocab = tok ? sh_tokenizer_vocab_size(tok) : 256;
            d->n_docs = n_docs;
            d->doc_off = off;
            d->desc = desc;
            *out = d;
            return SH_OK;
        }
    }
    free(toks.a);
    free(off);
    return rc;
}
