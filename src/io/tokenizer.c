/* tokenizer.c - llama2.c / sentencepiece-style BPE tokenizer (tok*.bin).
 *
 * File: int32 max_token_length, then per token: float32 score, int32 length,
 * that many bytes.  Token 1 is BOS, 2 is EOS, 3..258 are the bytes <0x00>..<0xFF>.
 *
 * Encoding is llama2.c's: dummy-prefix " ", one token per UTF-8 character
 * (byte tokens as fallback), then repeatedly merge the adjacent pair with the
 * highest score (leftmost on ties).  The merges run on a linked list with a
 * heap of candidate pairs, so long texts encode in O(n log n) with exactly the
 * result of llama2.c's O(n^2) loop.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "shrink.h"

struct sh_tokenizer {
    int vocab_size;
    int max_token_length;
    char **vocab;      /* NUL-terminated pieces */
    int *len;          /* piece lengths in bytes */
    float *scores;
    int hash_cap;      /* open addressing: piece -> id */
    int *hash;         /* -1 empty */
    unsigned char byte_pieces[512];
};

static uint32_t fnv(const char *s, int n)
{
    uint32_t h = 2166136261u;
    for (int i = 0; i < n; i++) h = (h ^ (unsigned char)s[i]) * 16777619u;
    return h;
}

static int lookup(const sh_tokenizer *t, const char *s, int n)
{
    uint32_t m = (uint32_t)t->hash_cap - 1;
    for (uint32_t i = fnv(s, n) & m;; i = (i + 1) & m) {
        int id = t->hash[i];
        if (id < 0) return -1;
        if (t->len[id] == n && memcmp(t->vocab[id], s, (size_t)n) == 0) return id;
    }
}

void sh_tokenizer_free(sh_tokenizer *t)
{
    if (!t) return;
    if (t->vocab)
        for (int i = 0; i < t->vocab_size; i++) free(t->vocab[i]);
    free(t->vocab);
    free(t->len);
    free(t->scores);
    free(t->hash);
    free(t);
}

int sh_tokenizer_vocab_size(const sh_tokenizer *t) { return t ? t->vocab_size : 0; }

int sh_tokenizer_load(const char *path, int vocab_size, sh_tokenizer **out, sh_error *err)
{
    *out = NULL;
    void *data;
    size_t size;
    int rc = sh_read_file(path, &data, &size, err);
    if (rc) return rc;
    const unsigned char *p = data;
    if (size < 4) {
        free(data);
        return sh_err(err, SH_EFORMAT, "%s: truncated: expected 4 bytes for max_token_length, file has %zu", path, size);
    }
    int32_t maxlen;
    memcpy(&maxlen, p, 4);
    if (maxlen <= 0 || maxlen > 65536) {
        free(data);
        return sh_err(err, SH_EFORMAT, "%s: bad tokenizer header: max_token_length %d (expected 1..65536)", path,
                      maxlen);
    }
    /* count entries (vocab_size <= 0: as many as the file holds) */
    size_t off = 4;
    int n = 0;
    while (off < size && (vocab_size <= 0 || n < vocab_size)) {
        if (off + 8 > size) break;
        int32_t l;
        memcpy(&l, p + off + 4, 4);
        if (l < 0 || l > maxlen) {
            free(data);
            return sh_err(err, SH_EFORMAT, "%s: token %d at offset %zu has length %d (max_token_length %d)", path, n,
                          off, l, maxlen);
        }
        if (off + 8 + (size_t)l > size) break;
        off += 8 + (size_t)l;
        n++;
        if (n > (1 << 22)) {
            free(data);
            return sh_err(err, SH_EFORMAT, "%s: more than %d tokens", path, 1 << 22);
        }
    }
    if ((vocab_size > 0 && n < vocab_size) || (off != size && vocab_size <= 0)) {
        free(data);
        return sh_err(err, SH_EFORMAT, "%s: truncated: token %d of %d is incomplete at offset %zu (file has %zu bytes)",
                      path, n, vocab_size > 0 ? vocab_size : n + 1, off, size);
    }
    if (n < 259) {
        free(data);
        return sh_err(err, SH_EFORMAT, "%s: %d tokens; a llama2.c tokenizer has at least 259 (BOS, EOS, 256 bytes)",
                      path, n);
    }
    sh_tokenizer *t = calloc(1, sizeof *t);
    if (!t) {
        free(data);
        return sh_err(err, SH_ENOMEM, "out of memory");
    }
    t->vocab_size = n;
    t->max_token_length = maxlen;
    t->vocab = calloc((size_t)n, sizeof(char *));
    t->len = malloc(sizeof(int) * (size_t)n);
    t->scores = malloc(sizeof(float) * (size_t)n);
    t->hash_cap = 16;
    while (t->hash_cap < 2 * n) t->hash_cap *= 2;
    t->hash = malloc(sizeof(int) * (size_t)t->hash_cap);
    if (!t->vocab || !t->len || !t->scores || !t->hash) goto oom;
    for (int i = 0; i < t->hash_cap; i++) t->hash[i] = -1;
    off = 4;
    for (int i = 0; i < n; i++) {
        int32_t l;
        memcpy(&t->scores[i], p + off, 4);
        memcpy(&l, p + off + 4, 4);
        t->vocab[i] = malloc((size_t)l + 1);
        if (!t->vocab[i]) goto oom;
        memcpy(t->vocab[i], p + off + 8, (size_t)l);
        t->vocab[i][l] = 0;
        t->len[i] = l;
        off += 8 + (size_t)l;
        /* first id wins for duplicate pieces */
        if (lookup(t, t->vocab[i], l) < 0) {
            uint32_t m = (uint32_t)t->hash_cap - 1, h = fnv(t->vocab[i], l) & m;
            while (t->hash[h] >= 0) h = (h + 1) & m;
            t->hash[h] = i;
        }
    }
    for (int i = 0; i < 256; i++) {
        t->byte_pieces[i * 2] = (unsigned char)i;
        t->byte_pieces[i * 2 + 1] = 0;
    }
    free(data);
    *out = t;
    return SH_OK;
oom:
    free(data);
    sh_tokenizer_free(t);
    return sh_err(err, SH_ENOMEM, "%s: out of memory", path);
}

const char *sh_tokenizer_decode(const sh_tokenizer *t, int prev, int token)
{
    if (!t || token < 0 || token >= t->vocab_size) return "";
    const char *piece = t->vocab[token];
    if (prev == 1 && piece[0] == ' ') piece++;
    /* <0xHH> */
    if (t->len[token] == 6 && piece[0] == '<' && piece[1] == '0' && piece[2] == 'x' && piece[5] == '>') {
        int v = 0, ok = 1;
        for (int i = 3; i < 5; i++) {
            char c = piece[i];
            v *= 16;
            if (c >= '0' && c <= '9') v += c - '0';
            else if (c >= 'A' && c <= 'F') v += c - 'A' + 10;
            else if (c >= 'a' && c <= 'f') v += c - 'a' + 10;
            else ok = 0;
        }
        if (ok) return (const char *)t->byte_pieces + v * 2;
    }
    return piece;
}

/* ---- encoding ------------------------------------------------------------ */

typedef struct cand {
    float score;
    int left;      /* node index of the left token (list order == index order) */
    int right;
    int lt, rt;    /* token ids when pushed (stale check) */
    int merged;
} cand;

/* max-heap: higher score first, then smaller left index */
static int cand_before(const cand *a, const cand *b)
{
    if (a->score != b->score) return a->score > b->score;
    return a->left < b->left;
}

typedef struct heap {
    cand *a;
    int n, cap;
} heap;

static int heap_push(heap *h, cand c)
{
    if (h->n == h->cap) {
        int cap = h->cap ? h->cap * 2 : 256;
        cand *na = realloc(h->a, sizeof(cand) * (size_t)cap);
        if (!na) return SH_ENOMEM;
        h->a = na, h->cap = cap;
    }
    int i = h->n++;
    h->a[i] = c;
    while (i > 0) {
        int p = (i - 1) / 2;
        if (!cand_before(&h->a[i], &h->a[p])) break;
        cand tmp = h->a[i];
        h->a[i] = h->a[p], h->a[p] = tmp;
        i = p;
    }
    return SH_OK;
}

static cand heap_pop(heap *h)
{
    cand top = h->a[0];
    h->a[0] = h->a[--h->n];
    int i = 0;
    for (;;) {
        int l = 2 * i + 1, r = l + 1, m = i;
        if (l < h->n && cand_before(&h->a[l], &h->a[m])) m = l;
        if (r < h->n && cand_before(&h->a[r], &h->a[m])) m = r;
        if (m == i) break;
        cand tmp = h->a[i];
        h->a[i] = h->a[m], h->a[m] = tmp;
        i = m;
    }
    return top;
}

static int try_pair(const sh_tokenizer *t, heap *h, const int *tok, int left, int right, char *buf)
{
    if (left < 0 || right < 0) return SH_OK;
    int a = tok[left], b = tok[right];
    int la = t->len[a], lb = t->len[b];
    memcpy(buf, t->vocab[a], (size_t)la);
    memcpy(buf + la, t->vocab[b], (size_t)lb);
    int id = lookup(t, buf, la + lb);
    if (id < 0 || !(t->scores[id] > -1e10f)) return SH_OK;
    return heap_push(h, (cand){t->scores[id], left, right, a, b, id});
}

int sh_tokenizer_encode(const sh_tokenizer *t, const char *text, int bos, int eos, int **tokens, int *n,
                        sh_error *err)
{
    *tokens = NULL;
    *n = 0;
    if (!t || !text) return sh_err(err, SH_EINVAL, "tokenizer encode: NULL argument");
    size_t tl = strlen(text);
    if (tl > (size_t)1 << 30) return sh_err(err, SH_EINVAL, "tokenizer encode: text of %zu bytes is too long", tl);
    size_t cap = tl + 3;
    int *tok = malloc(sizeof(int) * cap);
    int *next = malloc(sizeof(int) * cap), *prev = malloc(sizeof(int) * cap);
    char *buf = malloc(2 * (size_t)t->max_token_length + 8);
    heap h = {0};
    int rc = SH_OK;
    if (!tok || !next || !prev || !buf) {
        rc = sh_err(err, SH_ENOMEM, "out of memory encoding %zu bytes", tl);
        goto done;
    }
    int m = 0; /* symbols before merging (no BOS/EOS) */
    if (tl > 0) {
        int sp = lookup(t, " ", 1);
        if (sp >= 0) tok[m++] = sp;
    }
    for (size_t i = 0; i < tl;) {
        /* one UTF-8 character: a lead byte and up to 3 continuation bytes */
        size_t j = i + 1;
        while (j < tl && j - i < 4 && ((unsigned char)text[j] & 0xC0) == 0x80) j++;
        int id = lookup(t, text + i, (int)(j - i));
        if (id >= 0) tok[m++] = id;
        else
            for (size_t b = i; b < j; b++) {
                int bid = (unsigned char)text[b] + 3;
                tok[m++] = bid < t->vocab_size ? bid : 0;
            }
        i = j;
    }
    for (int i = 0; i < m; i++) {
        next[i] = i + 1 < m ? i + 1 : -1;
        prev[i] = i - 1;
    }
    for (int i = 0; i + 1 < m && !rc; i++) rc = try_pair(t, &h, tok, i, i + 1, buf);
    while (!rc && h.n > 0) {
        cand c = heap_pop(&h);
        /* stale: left was merged into something else, or right is gone */
        if (tok[c.left] != c.lt || next[c.left] != c.right || tok[c.right] != c.rt) continue;
        tok[c.left] = c.merged;
        int r = c.right;
        next[c.left] = next[r];
        if (next[r] >= 0) prev[next[r]] = c.left;
        tok[r] = -1;
        next[r] = -2;
        rc = try_pair(t, &h, tok, prev[c.left], c.left, buf);
        if (!rc) rc = try_pair(t, &h, tok, c.left, next[c.left], buf);
    }
    if (rc) {
        rc = sh_err(err, SH_ENOMEM, "out of memory encoding %zu bytes", tl);
        goto done;
    }
    {
        int k = 0;
        int *res = malloc(sizeof(int) * ((size_t)m + 3));
        if (!res) {
            rc = sh_err(err, SH_ENOMEM, "out of memory");
            goto done;
        }
        if (bos) res[k++] = 1;
        for (int i = m > 0 ? 0 : -1; i >= 0; i = next[i]) res[k++] = tok[i];
        if (eos) res[k++] = 2;
        *tokens = res;
        *n = k;
    }
done:
    free(tok), free(next), free(prev), free(buf), free(h.a);
    return rc;
}
