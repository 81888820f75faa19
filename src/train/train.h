/* train.h - internals shared by the files of src/train (not public API). */
#ifndef SH_TRAIN_INTERNAL_H
#define SH_TRAIN_INTERNAL_H
#include "shrink.h"

enum { SH_OPT_SGD = 1, SH_OPT_ADAMW = 2 };

struct sh_optimizer {
    int kind;
    sh_train_opts o;
    int n;            /* parameters */
    int64_t t;        /* steps begun */
    int64_t *numel;   /* per parameter: state elements (0: no state yet) */
    float **m, **v;   /* momentum / first moment, second moment */
};

int sh_optimizer_alloc_state(sh_optimizer *opt, int i, int64_t n, sh_error *err);

/* Training position saved in a checkpoint. */
typedef struct sh_train_pos {
    int64_t step;        /* optimizer steps done */
    int64_t epoch;       /* current epoch (0-based) */
    int64_t micro;       /* micro-batches done in the current epoch */
    uint64_t rng;        /* data-order RNG seed */
    int64_t batch, accum;
    int64_t done;        /* 1 when training finished */
} sh_train_pos;

/* Checkpoint: all f32 initializers of g (weights and BN statistics),
 * optimizer state and position; written atomically with a CRC-32. */
int sh_checkpoint_save(const char *path, const sh_graph *g, const sh_optimizer *opt, const sh_train_pos *pos,
                       sh_error *err);
/* Returns SH_OK and fills everything, or an error; *found = 0 when path does
 * not exist (nothing loaded). opt state is allocated as needed. */
int sh_checkpoint_load(const char *path, sh_graph *g, sh_optimizer *opt, sh_train_pos *pos, int *found,
                       sh_error *err);

/* splitmix64 */
static inline uint64_t sh_rng_next(uint64_t *s)
{
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}
/* uniform in [0,1) */
static inline double sh_rng_uniform(uint64_t *s) { return (double)(sh_rng_next(s) >> 11) * (1.0 / 9007199254740992.0); }

#endif
