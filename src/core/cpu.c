/* cpu.c - CPU feature detection (cpuid + xgetbv) and the kernel level
 * (SHRINK_CPU=ref|avx2|avx512 lowers it, read at each call).  No state of
 * our own: sh_cpu_features runs cpuid each time; sh_cpu_level, called per
 * kernel call, reads libgcc's cpu model instead (filled once at start-up). */
#include <stdlib.h>
#include <string.h>

#include "shrink.h"

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>

static uint64_t xgetbv0(void)
{
    uint32_t lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    return ((uint64_t)hi << 32) | lo;
}

int sh_cpu_features(void)
{
    unsigned a, b, c, d;
    int f = 0;
    if (!__get_cpuid(1, &a, &b, &c, &d)) return 0;
    int osxsave = (c >> 27) & 1, avx = (c >> 28) & 1, fma = (c >> 12) & 1, f16c = (c >> 29) & 1;
    if (!osxsave || !avx) return 0;
    uint64_t xcr0 = xgetbv0();
    int ymm_ok = (xcr0 & 0x6) == 0x6, zmm_ok = (xcr0 & 0xe6) == 0xe6;
    if (!ymm_ok) return 0;
    if (fma) f |= SH_CPU_FMA;
    if (f16c) f |= SH_CPU_F16C;
    unsigned max = __get_cpuid_max(0, NULL);
    if (max < 7) return f;
    __cpuid_count(7, 0, a, b, c, d);
    if ((b >> 5) & 1) f |= SH_CPU_AVX2;
    if (zmm_ok) {
        if ((b >> 16) & 1) f |= SH_CPU_AVX512F;
        if ((b >> 30) & 1) f |= SH_CPU_AVX512BW;
        if ((b >> 31) & 1) f |= SH_CPU_AVX512VL;
        if ((c >> 11) & 1) f |= SH_CPU_AVX512VNNI;
    }
    __cpuid_count(7, 1, a, b, c, d);
    if ((a >> 4) & 1) f |= SH_CPU_AVXVNNI;
    return f;
}
#else
int sh_cpu_features(void) { return 0; }
#endif

static const char *const feature_names[SH_CPU_FEATURE_COUNT] = {
    "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl", "avx512_vnni", "avx_vnni",
};

const char *sh_cpu_feature_name(int i)
{
    return i >= 0 && i < SH_CPU_FEATURE_COUNT ? feature_names[i] : NULL;
}

/* The same bits from libgcc's cpu model (cpuid + xgetbv run once by libgcc
 * when the program starts): no cpuid per call, which matters under a
 * hypervisor where every cpuid traps (~20 us per kernel call here). */
static int features_fast(void)
{
#if (defined(__x86_64__) || defined(__i386__)) && defined(__GNUC__)
    int f = 0;
    if (__builtin_cpu_supports("avx2")) f |= SH_CPU_AVX2;
    if (__builtin_cpu_supports("fma")) f |= SH_CPU_FMA;
    if (__builtin_cpu_supports("f16c")) f |= SH_CPU_F16C;
    if (__builtin_cpu_supports("avx512f")) f |= SH_CPU_AVX512F;
    if (__builtin_cpu_supports("avx512bw")) f |= SH_CPU_AVX512BW;
    if (__builtin_cpu_supports("avx512vl")) f |= SH_CPU_AVX512VL;
    if (__builtin_cpu_supports("avx512vnni")) f |= SH_CPU_AVX512VNNI;
    if (__builtin_cpu_supports("avxvnni")) f |= SH_CPU_AVXVNNI;
    return f;
#else
    return sh_cpu_features();
#endif
}

int sh_cpu_level(void)
{
    int f = features_fast(), best = SH_CPU_REF;
    const int need2 = SH_CPU_AVX2 | SH_CPU_FMA | SH_CPU_F16C;
    const int need512 = need2 | SH_CPU_AVX512F | SH_CPU_AVX512BW | SH_CPU_AVX512VL | SH_CPU_AVX512VNNI;
    if ((f & need512) == need512) best = SH_CPU_LEVEL_AVX512;
    else if ((f & need2) == need2) best = SH_CPU_LEVEL_AVX2;
    const char *e = getenv("SHRINK_CPU");
    if (e && *e) {
        int want = best;
        if (!strcmp(e, "ref") || !strcmp(e, "c") || !strcmp(e, "none")) want = SH_CPU_REF;
        else if (!strcmp(e, "avx2")) want = SH_CPU_LEVEL_AVX2;
        else if (!strcmp(e, "avx512")) want = SH_CPU_LEVEL_AVX512;
        if (want < best) best = want;
    }
    return best;
}

const char *sh_cpu_level_name(int level)
{
    switch (level) {
    case SH_CPU_REF: return "ref";
    case SH_CPU_LEVEL_AVX2: return "avx2";
    case SH_CPU_LEVEL_AVX512: return "avx512";
    default: return "?";
    }
}
