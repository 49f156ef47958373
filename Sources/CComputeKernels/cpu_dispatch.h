#ifndef JOBFARM_CPU_DISPATCH_H
#define JOBFARM_CPU_DISPATCH_H

/* Shared by the kernels of this target (not part of its public header). */

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define CK_X86 1

/* 1 when the running CPU has AVX2, FMA and F16C (checked once; a racy first check is benign: idempotent). */
int ck_cpu_has_avx2_fma(void);

/* The sum of the 8 lanes of `v`. */
__attribute__((target("avx2,fma")))
static inline float ck_hsum(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}
#endif

#endif
