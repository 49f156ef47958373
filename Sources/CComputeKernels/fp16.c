#include "ComputeKernels.h"

#include <string.h>

#include "cpu_dispatch.h"

/* ---------- portable scalar conversions (bit exact with F16C, RNE) ---------- */

static inline float ck_bits_to_f32(uint32_t bits) {
    float f;
    memcpy(&f, &bits, sizeof f);
    return f;
}

static inline uint32_t ck_f32_to_bits(float f) {
    uint32_t bits;
    memcpy(&bits, &f, sizeof bits);
    return bits;
}

static inline float ck_half_to_float(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t exp = (h >> 10) & 0x1Fu;
    uint32_t mant = h & 0x3FFu;
    if (exp == 0x1F) { /* inf / NaN (keep payload, quiet bit like F16C) */
        return ck_bits_to_f32(sign | 0x7F800000u | (mant << 13) | (mant ? 0x00400000u : 0));
    }
    if (exp == 0) {
        if (mant == 0) return ck_bits_to_f32(sign);
        /* subnormal: value = mant * 2^-24 (exact in float) */
        float v = (float)mant * 5.9604644775390625e-08f;
        return sign ? -v : v;
    }
    return ck_bits_to_f32(sign | ((exp + 112u) << 23) | (mant << 13));
}

static inline uint16_t ck_float_to_half(float f) {
    uint32_t x = ck_f32_to_bits(f);
    uint16_t sign = (uint16_t)((x >> 16) & 0x8000u);
    uint32_t absx = x & 0x7FFFFFFFu;
    if (absx >= 0x7F800000u) { /* inf or NaN */
        if (absx == 0x7F800000u) return sign | 0x7C00u;
        return sign | 0x7E00u | (uint16_t)((absx >> 13) & 0x3FFu);
    }
    if (absx >= 0x477FF000u) { /* rounds to >= 65520 -> inf */
        return sign | 0x7C00u;
    }
    if (absx < 0x38800000u) { /* result is subnormal or zero */
        if (absx < 0x33000000u) return sign; /* < 2^-25 rounds to 0 (ties-to-even at 2^-25) */
        uint32_t exp = absx >> 23;
        uint32_t mant = (absx & 0x7FFFFFu) | 0x800000u;
        uint32_t shift = 126u - exp; /* 14..24 */
        uint32_t result = mant >> shift;
        uint32_t rem = mant & ((1u << shift) - 1u);
        uint32_t half = 1u << (shift - 1u);
        if (rem > half || (rem == half && (result & 1u))) result += 1u;
        return sign | (uint16_t)result;
    }
    /* normal: rebias exponent, round mantissa to 10 bits (RNE) */
    uint32_t base = absx - 0x38000000u; /* exponent 127 -> 15 */
    uint32_t result = base >> 13;
    uint32_t rem = base & 0x1FFFu;
    if (rem > 0x1000u || (rem == 0x1000u && (result & 1u))) result += 1u;
    return sign | (uint16_t)result;
}

void ck_f16_to_f32_scalar(const uint16_t *src, float *dst, size_t count) {
    for (size_t i = 0; i < count; i++) dst[i] = ck_half_to_float(src[i]);
}

void ck_f32_to_f16_scalar(const float *src, uint16_t *dst, size_t count) {
    for (size_t i = 0; i < count; i++) dst[i] = ck_float_to_half(src[i]);
}

/* ---------- F16C paths ---------- */

#ifdef CK_X86
/* Outputs at least this large (in floats, 8 MiB) are written with non-temporal
   stores: they cannot stay in cache anyway, and streaming stores skip the
   read-for-ownership of the destination, cutting memory traffic by a third. */
#define CK_STREAM_THRESHOLD ((size_t)1 << 21)

__attribute__((target("avx,f16c")))
static void ck_f16_to_f32_f16c_stream(const uint16_t *src, float *dst, size_t count) {
    size_t i = 0;
    while (i < count && ((uintptr_t)(dst + i) & 31u) != 0) { dst[i] = ck_half_to_float(src[i]); i++; }
    for (; i + 32 <= count; i += 32) {
        __m256 a = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(src + i)));
        __m256 b = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(src + i + 8)));
        __m256 c = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(src + i + 16)));
        __m256 d = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(src + i + 24)));
        _mm256_stream_ps(dst + i, a);
        _mm256_stream_ps(dst + i + 8, b);
        _mm256_stream_ps(dst + i + 16, c);
        _mm256_stream_ps(dst + i + 24, d);
    }
    _mm_sfence();
    for (; i < count; i++) dst[i] = ck_half_to_float(src[i]);
}

__attribute__((target("avx,f16c")))
static void ck_f16_to_f32_f16c(const uint16_t *src, float *dst, size_t count) {
    if (count >= CK_STREAM_THRESHOLD) { ck_f16_to_f32_f16c_stream(src, dst, count); return; }
    size_t i = 0;
    for (; i + 32 <= count; i += 32) {
        __m256 a = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(src + i)));
        __m256 b = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(src + i + 8)));
        __m256 c = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(src + i + 16)));
        __m256 d = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(src + i + 24)));
        _mm256_storeu_ps(dst + i, a);
        _mm256_storeu_ps(dst + i + 8, b);
        _mm256_storeu_ps(dst + i + 16, c);
        _mm256_storeu_ps(dst + i + 24, d);
    }
    for (; i + 8 <= count; i += 8) {
        _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(src + i))));
    }
    for (; i < count; i++) dst[i] = ck_half_to_float(src[i]);
}

__attribute__((target("avx,f16c")))
static void ck_f32_to_f16_f16c(const float *src, uint16_t *dst, size_t count) {
    size_t i = 0;
    for (; i + 16 <= count; i += 16) {
        __m128i a = _mm256_cvtps_ph(_mm256_loadu_ps(src + i), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
        __m128i b = _mm256_cvtps_ph(_mm256_loadu_ps(src + i + 8), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
        _mm_storeu_si128((__m128i *)(dst + i), a);
        _mm_storeu_si128((__m128i *)(dst + i + 8), b);
    }
    for (; i + 8 <= count; i += 8) {
        _mm_storeu_si128((__m128i *)(dst + i),
                         _mm256_cvtps_ph(_mm256_loadu_ps(src + i), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
    }
    for (; i < count; i++) dst[i] = ck_float_to_half(src[i]);
}
#endif

/* ---------- dispatch ---------- */

static int ck_f16c_state = -1; /* -1 unknown, 0 no, 1 yes; racy init is benign (idempotent) */

int ck_cpu_has_f16c(void) {
    int s = __atomic_load_n(&ck_f16c_state, __ATOMIC_RELAXED);
    if (s < 0) {
#ifdef CK_X86
        __builtin_cpu_init();
        s = (__builtin_cpu_supports("avx") && __builtin_cpu_supports("f16c")) ? 1 : 0;
#else
        s = 0;
#endif
        __atomic_store_n(&ck_f16c_state, s, __ATOMIC_RELAXED);
    }
    return s;
}

void ck_f16_to_f32(const uint16_t *src, float *dst, size_t count) {
#ifdef CK_X86
    if (ck_cpu_has_f16c()) { ck_f16_to_f32_f16c(src, dst, count); return; }
#endif
    ck_f16_to_f32_scalar(src, dst, count);
}

void ck_f32_to_f16(const float *src, uint16_t *dst, size_t count) {
#ifdef CK_X86
    if (ck_cpu_has_f16c()) { ck_f32_to_f16_f16c(src, dst, count); return; }
#endif
    ck_f32_to_f16_scalar(src, dst, count);
}

void ck_i8_to_f32_scaled(const int8_t *src, float *dst, size_t count, float scale) {
    for (size_t i = 0; i < count; i++) dst[i] = (float)src[i] * scale;
}
