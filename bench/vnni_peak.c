/* vnni_peak.c - issue-rate microbenchmark of the int8 dot-product
 * instructions on one core (not part of make test; bench/bench_qgemm.sh runs
 * it).  Every probe is a hand-written asm loop of independent accumulator
 * chains (no loads, no compiler scheduling), timed with the calling thread's
 * CPU time (what the core really gave us on a shared machine):
 *
 *   clock        1-cycle dependent scalar `add` chain: iterations/s = the core
 *                clock (GHz) while the probes run (turbo included)
 *   dpbusd_zmm_C vpdpbusd zmm with C independent chains (C = 1: latency)
 *   dpbusd_ymm_C vpdpbusd ymm
 *   maddubs_zmm  vpmaddubsw + vpmaddwd(ones) + vpaddd: the pre-VNNI sequence
 *   maddubs_ymm  the same on ymm (AVX2)
 *   fma_zmm/ymm  vfmadd231ps, 12 chains: f32 FLOP/s (compare the guide's
 *                222 GFLOP/s one-core FMA figure)
 *
 * Ops are counted as 2 per multiply-add (a zmm vpdpbusd = 64 MACs = 128 ops),
 * and each line also gives instructions per cycle from the measured clock. */
#define _GNU_SOURCE
/* build: cc -O2 -mavx512f -mavx512vl -mavx512bw -mavx512vnni bench/vnni_peak.c */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double cpu_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int cmpd(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

#define ITERS 2000000L

/* 32 dependent adds per iteration: 1 cycle each */
static double probe_clock(void)
{
    long n = ITERS, x = 0;
    double t0 = cpu_now();
    __asm__ volatile("1:\n"
                     ".rept 32\n add $1, %1\n .endr\n"
                     "dec %0\n jnz 1b\n"
                     : "+r"(n), "+r"(x));
    double t = cpu_now() - t0;
    return 32.0 * ITERS / t; /* adds per second = Hz (+ loop overhead hidden) */
}

/* Loop bodies: INSN applied to registers 0..C-1 (the accumulators) with the
 * sources in registers 30 and 31 (zmm/ymm 30, 31 need AVX-512VL for ymm). */
#define S1(op, r, i) op " %%" r "31, %%" r "30, %%" r #i "\n"
#define BODY1(op, r) S1(op, r, 0)
#define BODY4(op, r) S1(op, r, 0) S1(op, r, 1) S1(op, r, 2) S1(op, r, 3)
#define BODY8(op, r) BODY4(op, r) S1(op, r, 4) S1(op, r, 5) S1(op, r, 6) S1(op, r, 7)
#define BODY12(op, r) BODY8(op, r) S1(op, r, 8) S1(op, r, 9) S1(op, r, 10) S1(op, r, 11)
#define BODY16(op, r) BODY12(op, r) S1(op, r, 12) S1(op, r, 13) S1(op, r, 14) S1(op, r, 15)
#define BODY24(op, r) \
    BODY16(op, r) S1(op, r, 16) S1(op, r, 17) S1(op, r, 18) S1(op, r, 19) S1(op, r, 20) S1(op, r, 21) S1(op, r, 22) S1(op, r, 23)

#define CLOB_Z \
    "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6", "xmm7", "xmm8", "xmm9", "xmm10", "xmm11", "xmm12", "xmm13", \
        "xmm14", "xmm15", "xmm16", "xmm17", "xmm18", "xmm19", "xmm20", "xmm21", "xmm22", "xmm23", "xmm24", "xmm25",   \
        "xmm26", "xmm27", "xmm28", "xmm29", "xmm30", "xmm31"

/* returns instructions per second of the body (nins per iteration) */
#define PROBE(name, body, nins)                                                           \
    __attribute__((noinline)) static double name(void)                                    \
    {                                                                                     \
        long n = ITERS;                                                                   \
        double t0 = cpu_now();                                                            \
        __asm__ volatile("vpternlogd $0xff, %%zmm31, %%zmm31, %%zmm31\n"                  \
                         "vpabsb %%zmm31, %%zmm30\n"                                      \
                         "1:\n" body "dec %0\n jnz 1b\n"                                  \
                         "vzeroupper\n"                                                   \
                         : "+r"(n)                                                        \
                         :                                                                \
                         : CLOB_Z, "cc");                                                 \
        return (double)(nins) * ITERS / (cpu_now() - t0);                                 \
    }

PROBE(dpz1, BODY1("vpdpbusd", "zmm"), 1)
PROBE(dpz4, BODY4("vpdpbusd", "zmm"), 4)
PROBE(dpz8, BODY8("vpdpbusd", "zmm"), 8)
PROBE(dpz12, BODY12("vpdpbusd", "zmm"), 12)
PROBE(dpz16, BODY16("vpdpbusd", "zmm"), 16)
PROBE(dpz24, BODY24("vpdpbusd", "zmm"), 24)
PROBE(dpy1, BODY1("vpdpbusd", "ymm"), 1)
PROBE(dpy8, BODY8("vpdpbusd", "ymm"), 8)
PROBE(dpy16, BODY16("vpdpbusd", "ymm"), 16)
PROBE(dpy24, BODY24("vpdpbusd", "ymm"), 24)
PROBE(fmz12, BODY12("vfmadd231ps", "zmm"), 12)
PROBE(fmz24, BODY24("vfmadd231ps", "zmm"), 24)
PROBE(fmy12, BODY12("vfmadd231ps", "ymm"), 12)
PROBE(fmy24, BODY24("vfmadd231ps", "ymm"), 24)

/* pre-VNNI: t = maddubs(a, b) (s16 pairs), t = maddwd(t, ones), c += t; 8
 * chains, temporaries in 8..15, the ones vector in 29 */
#define MB(r, i, t)                                                 \
    "vpmaddubsw %%" r "31, %%" r "30, %%" r #t "\n"                 \
    "vpmaddwd %%" r "29, %%" r #t ", %%" r #t "\n"                  \
    "vpaddd %%" r #t ", %%" r #i ", %%" r #i "\n"
#define MBODY(r) MB(r, 0, 8) MB(r, 1, 9) MB(r, 2, 10) MB(r, 3, 11) MB(r, 4, 12) MB(r, 5, 13) MB(r, 6, 14) MB(r, 7, 15)
__attribute__((noinline)) static double mbz(void)
{
    long n = ITERS;
    double t0 = cpu_now();
    __asm__ volatile("vpternlogd $0xff, %%zmm31, %%zmm31, %%zmm31\n vpabsb %%zmm31, %%zmm30\n"
                     "vpabsw %%zmm31, %%zmm29\n"
                     "1:\n" MBODY("zmm") "dec %0\n jnz 1b\n vzeroupper\n"
                     : "+r"(n) : : CLOB_Z, "cc");
    return 8.0 * ITERS / (cpu_now() - t0); /* 64-MAC groups per second */
}
__attribute__((noinline)) static double mby(void)
{
    long n = ITERS;
    double t0 = cpu_now();
    __asm__ volatile("vpternlogd $0xff, %%zmm31, %%zmm31, %%zmm31\n vpabsb %%zmm31, %%zmm30\n"
                     "vpabsw %%zmm31, %%zmm29\n"
                     "1:\n" MBODY("ymm") "dec %0\n jnz 1b\n vzeroupper\n"
                     : "+r"(n) : : CLOB_Z, "cc");
    return 8.0 * ITERS / (cpu_now() - t0);
}

typedef struct {
    const char *name;
    double (*fn)(void);
    double ops; /* ops per counted unit */
    const char *unit;
} probe;

int main(int argc, char **argv)
{
    int reps = argc > 1 ? atoi(argv[1]) : 7;
    if (reps < 1) reps = 1;
    if (reps > 31) reps = 31;
    const probe P[] = {
        {"dpbusd_zmm_1 (latency)", dpz1, 128, "GOP/s"},
        {"dpbusd_zmm_4", dpz4, 128, "GOP/s"},
        {"dpbusd_zmm_8", dpz8, 128, "GOP/s"},
        {"dpbusd_zmm_12", dpz12, 128, "GOP/s"},
        {"dpbusd_zmm_16", dpz16, 128, "GOP/s"},
        {"dpbusd_zmm_24", dpz24, 128, "GOP/s"},
        {"dpbusd_ymm_1 (latency)", dpy1, 64, "GOP/s"},
        {"dpbusd_ymm_8", dpy8, 64, "GOP/s"},
        {"dpbusd_ymm_16", dpy16, 64, "GOP/s"},
        {"dpbusd_ymm_24", dpy24, 64, "GOP/s"},
        {"maddubs+maddwd+add_zmm_8", mbz, 128, "GOP/s"},
        {"maddubs+maddwd+add_ymm_8", mby, 64, "GOP/s"},
        {"fma_zmm_12", fmz12, 32, "GFLOP/s"},
        {"fma_zmm_24", fmz24, 32, "GFLOP/s"},
        {"fma_ymm_12", fmy12, 16, "GFLOP/s"},
        {"fma_ymm_24", fmy24, 16, "GFLOP/s"},
    };
    int np = (int)(sizeof P / sizeof *P);
    double clk[31];
    for (int r = 0; r < reps; r++) clk[r] = probe_clock();
    qsort(clk, (size_t)reps, sizeof *clk, cmpd);
    double hz = clk[reps / 2];
    printf("%-28s %9.3f GHz (1-cycle add chain, median of %d)\n", "clock", hz * 1e-9, reps);
    double best_int8 = 0;
    for (int i = 0; i < np; i++) {
        double v[31];
        for (int r = 0; r < reps; r++) v[r] = P[i].fn();
        qsort(v, (size_t)reps, sizeof *v, cmpd);
        double ips = v[reps / 2], ops = ips * P[i].ops * 1e-9;
        printf("%-28s %9.1f %-7s  %.2f per cycle (max %.1f)\n", P[i].name, ops, P[i].unit, ips / hz,
               v[reps - 1] * P[i].ops * 1e-9);
        if (!strcmp(P[i].unit, "GOP/s") && ops > best_int8) best_int8 = ops;
    }
    /* the clock again: turbo can move while the vector units are busy */
    for (int r = 0; r < reps; r++) clk[r] = probe_clock();
    qsort(clk, (size_t)reps, sizeof *clk, cmpd);
    printf("%-28s %9.3f GHz (after the probes)\n", "clock", clk[reps / 2] * 1e-9);
    printf("%-28s %9.1f GOP/s (best int8 probe median; 70 %% = %.1f)\n", "int8_peak", best_int8, 0.7 * best_int8);
    return 0;
}
