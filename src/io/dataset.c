/* dataset.c - dataset specs: "fashion-mnist:train[:N]", "fashion-mnist:test",
 * "idx:IMAGES.gz,LABELS.gz[,n=N]", "text:FILE[,tok=TOKENIZER.bin]".
 *
 * Images are stored as f32 in [0,1] (pixel / 255), NCHW with C = 1.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "shrink.h"

#define FMNIST_DIR "/usr/share/datasets/fashion-mnist"

int sh_idx_load_u8(const char *what, const char *path, int rank, int64_t *dims, unsigned char **data,
                   sh_error *err);

static char *xstrdup(const char *s)
{
    size_t n = strlen(s) + 1;
    char *d = malloc(n);
    if (d) memcpy(d, s, n);
    return d;
}

void sh_dataset_free(sh_dataset *d)
{
    if (!d) return;
    free(d->x);
    free(d->y);
    free(d->tokens);
    free(d->doc_off);
    free(d->desc);
    free(d);
}

/* Parse a non-negative count; -1 if s is not one. */
static int64_t parse_count(const char *s)
{
    if (!*s) return -1;
    char *end;
    long long v = strtoll(s, &end, 10);
    if (*end || v <= 0) return -1;
    return v;
}

static int load_images(const char *spec, const char *img, const char *lab, int64_t limit, sh_dataset **out,
                       sh_error *err)
{
    int64_t di[3], dl[1];
    unsigned char *px = NULL, *lb = NULL;
    int rc = sh_idx_load_u8(spec, img, 3, di, &px, err);
    if (rc) return rc;
    rc = sh_idx_load_u8(spec, lab, 1, dl, &lb, err);
    if (rc) {
        free(px);
        return rc;
    }
    if (di[0] != dl[0]) {
        free(px);
        free(lb);
        return sh_err(err, SH_EFORMAT, "%s: %lld images in %s but %lld labels in %s", spec, (long long)di[0], img,
                      (long long)dl[0], lab);
    }
    int64_t n = di[0];
    if (limit > 0 && limit < n) n = limit;
    if (limit > di[0]) {
        free(px);
        free(lb);
        return sh_err(err, SH_EINVAL, "%s: asked for %lld images, the set has %lld", spec, (long long)limit,
                      (long long)di[0]);
    }
    sh_dataset *d = calloc(1, sizeof *d);
    int64_t per = di[1] * di[2];
    if (d) {
        d->x = malloc(sizeof(float) * (size_t)(n * per));
        d->y = malloc(sizeof(int32_t) * (size_t)n);
        d->desc = xstrdup(spec);
    }
    if (!d || !d->x || !d->y || !d->desc) {
        sh_dataset_free(d);
        free(px);
        free(lb);
        return sh_err(err, SH_ENOMEM, "%s: out of memory", spec);
    }
    d->kind = 1;
    d->n = n;
    d->c = 1;
    d->h = (int)di[1];
    d->w = (int)di[2];
    for (int64_t i = 0; i < n * per; i++) d->x[i] = (float)px[i] * (1.0f / 255.0f);
    int maxl = 0;
    for (int64_t i = 0; i < n; i++) {
        d->y[i] = lb[i];
        if (lb[i] > maxl) maxl = lb[i];
    }
    /* label values of the full file decide the class count, so a prefix of a
     * set has the same number of classes as the whole set */
    for (int64_t i = n; i < dl[0]; i++)
        if (lb[i] > maxl) maxl = lb[i];
    d->n_classes = maxl + 1;
    free(px);
    free(lb);
    *out = d;
    return SH_OK;
}

static int load_text_bytes(const char *spec, const char *path, sh_dataset **out, sh_error *err)
{
    void *buf;
    size_t n;
    int rc = sh_read_file(path, &buf, &n, err);
    if (rc) return sh_error_wrap(err, "%s", spec);
    if (n == 0) {
        free(buf);
        return sh_err(err, SH_EFORMAT, "%s: %s is empty", spec, path);
    }
    sh_dataset *d = calloc(1, sizeof *d);
    if (d) {
        d->tokens = malloc(sizeof(int32_t) * n);
        d->doc_off = malloc(sizeof(int64_t) * 2);
        d->desc = xstrdup(spec);
    }
    if (!d || !d->tokens || !d->doc_off || !d->desc) {
        sh_dataset_free(d);
        free(buf);
        return sh_err(err, SH_ENOMEM, "%s: out of memory", spec);
    }
    const unsigned char *b = buf;
    for (size_t i = 0; i < n; i++) d->tokens[i] = b[i];
    free(buf);
    d->kind = 2;
    d->n = (int64_t)n;
    d->vocab = 256;
    d->n_docs = 1;
    d->doc_off[0] = 0;
    d->doc_off[1] = (int64_t)n;
    *out = d;
    return SH_OK;
}

/* Tokenized text: documents split on "<|endoftext|>" lines, BOS in front
 * (sh_dataset_from_text in eval/lm.c, tokenizer in io/tokenizer.c). */
static int sh_dataset_text_tok(const char *spec, const char *path, const char *tok, sh_dataset **out, sh_error *err)
{
    sh_tokenizer *t = NULL;
    int rc = sh_tokenizer_load(tok, 0, &t, err);
    if (rc) return sh_error_wrap(err, "%s", spec);
    rc = sh_dataset_from_text(path, t, out, err);
    sh_tokenizer_free(t);
    if (rc) return sh_error_wrap(err, "%s", spec);
    free((*out)->desc);
    (*out)->desc = xstrdup(spec);
    return SH_OK;
}

int sh_dataset_load(const char *spec, sh_dataset **out, sh_error *err)
{
    *out = NULL;
    if (!spec || !*spec) return sh_err(err, SH_EINVAL, "empty dataset spec");
    const char *colon = strchr(spec, ':');
    if (!colon)
        return sh_err(err, SH_EINVAL,
                      "dataset '%s': expected KIND:ARGS (fashion-mnist:train, fashion-mnist:test, "
                      "idx:IMAGES,LABELS, text:FILE)",
                      spec);
    size_t kl = (size_t)(colon - spec);
    char *args = xstrdup(colon + 1);
    if (!args) return sh_err(err, SH_ENOMEM, "out of memory");
    int rc;
    /* split off ",key=value" options */
    int64_t limit = 0;
    char *tok = NULL;
    char *opt = strchr(args, ',');
    char *first_opt = NULL;
    /* for idx: the first comma separates the two files */
    if (kl == 3 && strncmp(spec, "idx", 3) == 0 && opt) opt = strchr(opt + 1, ',');
    if (opt) {
        first_opt = opt;
        *opt++ = 0;
        while (opt) {
            char *next = strchr(opt, ',');
            if (next) *next++ = 0;
            if (strncmp(opt, "n=", 2) == 0) {
                limit = parse_count(opt + 2);
                if (limit < 0) {
                    rc = sh_err(err, SH_EINVAL, "dataset '%s': n= expects a positive integer, got '%s'", spec, opt + 2);
                    goto done;
                }
            } else if (strncmp(opt, "tok=", 4) == 0 && opt[4]) {
                tok = opt + 4;
            } else {
                rc = sh_err(err, SH_EINVAL, "dataset '%s': unknown option '%s' (n=N, tok=FILE)", spec, opt);
                goto done;
            }
            opt = next;
        }
    }
    (void)first_opt;
    if (kl == 13 && strncmp(spec, "fashion-mnist", 13) == 0) {
        char *split = args, *cnt = strchr(args, ':');
        if (cnt) {
            *cnt++ = 0;
            limit = parse_count(cnt);
            if (limit < 0) {
                rc = sh_err(err, SH_EINVAL, "dataset '%s': expected a positive image count after ':', got '%s'", spec,
                            cnt);
                goto done;
            }
        }
        const char *pre;
        if (strcmp(split, "train") == 0) pre = "train";
        else if (strcmp(split, "test") == 0 || strcmp(split, "t10k") == 0) pre = "t10k";
        else {
            rc = sh_err(err, SH_EINVAL, "dataset '%s': unknown split '%s' (train or test)", spec, split);
            goto done;
        }
        char img[512], lab[512], what[64];
        snprintf(img, sizeof img, FMNIST_DIR "/%s-images-idx3-ubyte.gz", pre);
        snprintf(lab, sizeof lab, FMNIST_DIR "/%s-labels-idx1-ubyte.gz", pre);
        snprintf(what, sizeof what, "fashion-mnist:%s", split);
        rc = load_images(what, img, lab, limit, out, err);
        if (!rc) {
            free((*out)->desc);
            (*out)->desc = xstrdup(spec);
        }
    } else if (kl == 3 && strncmp(spec, "idx", 3) == 0) {
        char *comma = strchr(args, ',');
        if (!comma || !comma[1] || comma == args) {
            rc = sh_err(err, SH_EINVAL, "dataset '%s': expected idx:IMAGES,LABELS", spec);
            goto done;
        }
        *comma = 0;
        rc = load_images(spec, args, comma + 1, limit, out, err);
    } else if (kl == 4 && strncmp(spec, "text", 4) == 0) {
        if (!*args) {
            rc = sh_err(err, SH_EINVAL, "dataset '%s': expected text:FILE", spec);
            goto done;
        }
        if (tok) rc = sh_dataset_text_tok(spec, args, tok, out, err);
        else rc = load_text_bytes(spec, args, out, err);
        if (!rc && limit > 0 && limit < (*out)->n) (*out)->n = limit;
    } else {
        rc = sh_err(err, SH_EINVAL, "dataset '%s': unknown kind '%.*s' (fashion-mnist, idx, text)", spec, (int)kl,
                    spec);
    }
done:
    free(args);
    return rc;
}
