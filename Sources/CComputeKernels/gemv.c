#include "ComputeKernels.h"
#include "cpu_dispatch.h"

/* ---------- portable scalar versions ---------- */

static void ck_gemv_f16_scalar(const uint16_t *w, size_t rows, size_t cols, const float *x, float *y) {
    float buf[256];
    for (size_t r = 0; r < rows; r++) {
        double acc = 0;
        for (size_t c0 = 0; c0 < cols; c0 += 256) {
            size_t n = cols - c0 < 256 ? cols - c0 : 256;
            ck_f16_to_f32_scalar(w + r * cols + c0, buf, n);
            for (size_t c = 0; c < n; c++) acc += (double)buf[c] * x[c0 + c];
        }
        y[r] += (float)acc;
    }
}

static void ck_gemv_i8_scalar(const int8_t *w, const float *scales, size_t rows, size_t cols, const float *x, float *y) {
    for (size_t r = 0; r < rows; r++) {
        float acc = 0;
        const int8_t *row = w + r * cols;
        for (size_t c = 0; c < cols; c++) acc += (float)row[c] * x[c];
        y[r] += acc * scales[r];
    }
}

/* ---------- AVX2 + FMA + F16C versions: 4 rows at a time, 8 columns per step ---------- */

#ifdef CK_X86

#define CK_LOAD_F16(p) _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(p)))
#define CK_LOAD_I8(p) _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)(p))))

__attribute__((target("avx2,fma,f16c")))
static void ck_gemv_f16_avx2(const uint16_t *w, size_t rows, size_t cols, const float *x, float *y) {
    size_t r = 0;
    size_t cv = cols & ~(size_t)7;
    for (; r + 4 <= rows; r += 4) {
        const uint16_t *w0 = w + r * cols, *w1 = w0 + cols, *w2 = w1 + cols, *w3 = w2 + cols;
        __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps(), a2 = _mm256_setzero_ps(), a3 = _mm256_setzero_ps();
        for (size_t c = 0; c < cv; c += 8) {
            __m256 xv = _mm256_loadu_ps(x + c);
            a0 = _mm256_fmadd_ps(CK_LOAD_F16(w0 + c), xv, a0);
            a1 = _mm256_fmadd_ps(CK_LOAD_F16(w1 + c), xv, a1);
            a2 = _mm256_fmadd_ps(CK_LOAD_F16(w2 + c), xv, a2);
            a3 = _mm256_fmadd_ps(CK_LOAD_F16(w3 + c), xv, a3);
        }
        float s0 = ck_hsum(a0), s1 = ck_hsum(a1), s2 = ck_hsum(a2), s3 = ck_hsum(a3);
        if (cv < cols) {
            const uint16_t *rowsp[4] = {w0, w1, w2, w3};
            float tail[4] = {0, 0, 0, 0};
            for (int k = 0; k < 4; k++) {
                float buf[8];
                ck_f16_to_f32_scalar(rowsp[k] + cv, buf, cols - cv);
                for (size_t c = cv; c < cols; c++) tail[k] += buf[c - cv] * x[c];
            }
            s0 += tail[0]; s1 += tail[1]; s2 += tail[2]; s3 += tail[3];
        }
        y[r] += s0; y[r + 1] += s1; y[r + 2] += s2; y[r + 3] += s3;
    }
    if (r < rows) ck_gemv_f16_scalar(w + r * cols, rows - r, cols, x, y + r);
}

__attribute__((target("avx2,fma")))
static void ck_gemv_i8_avx2(const int8_t *w, const float *scales, size_t rows, size_t cols, const float *x, float *y) {
    size_t r = 0;
    size_t cv = cols & ~(size_t)7;
    for (; r + 4 <= rows; r += 4) {
        const int8_t *w0 = w + r * cols, *w1 = w0 + cols, *w2 = w1 + cols, *w3 = w2 + cols;
        __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps(), a2 = _mm256_setzero_ps(), a3 = _mm256_setzero_ps();
        for (size_t c = 0; c < cv; c += 8) {
            __m256 xv = _mm256_loadu_ps(x + c);
            a0 = _mm256_fmadd_ps(CK_LOAD_I8(w0 + c), xv, a0);
            a1 = _mm256_fmadd_ps(CK_LOAD_I8(w1 + c), xv, a1);
            a2 = _mm256_fmadd_ps(CK_LOAD_I8(w2 + c), xv, a2);
            a3 = _mm256_fmadd_ps(CK_LOAD_I8(w3 + c), xv, a3);
        }
        float s[4] = {ck_hsum(a0), ck_hsum(a1), ck_hsum(a2), ck_hsum(a3)};
        const int8_t *rowsp[4] = {w0, w1, w2, w3};
        for (int k = 0; k < 4; k++) {
            for (size_t c = cv; c < cols; c++) s[k] += (float)rowsp[k][c] * x[c];
            y[r + k] += s[k] * scales[r + k];
        }
    }
    if (r < rows) ck_gemv_i8_scalar(w + r * cols, scales + r, rows - r, cols, x, y + r);
}

static int ck_avx2_fma_state = -1; /* racy init is benign (idempotent) */

int ck_cpu_has_avx2_fma(void) {
    int s = __atomic_load_n(&ck_avx2_fma_state, __ATOMIC_RELAXED);
    if (s < 0) {
        __builtin_cpu_init();
        s = (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && ck_cpu_has_f16c()) ? 1 : 0;
        __atomic_store_n(&ck_avx2_fma_state, s, __ATOMIC_RELAXED);
    }
    return s;
}
#endif

void ck_gemv_f16(const uint16_t *w, size_t rows, size_t cols, const float *x, float *y) {
#ifdef CK_X86
    if (ck_cpu_has_avx2_fma()) { ck_gemv_f16_avx2(w, rows, cols, x, y); return; }
#endif
    ck_gemv_f16_scalar(w, rows, cols, x, y);
}

void ck_gemv_i8(const int8_t *w, const float *scales, size_t rows, size_t cols, const float *x, float *y) {
#ifdef CK_X86
    if (ck_cpu_has_avx2_fma()) { ck_gemv_i8_avx2(w, scales, rows, cols, x, y); return; }
#endif
    ck_gemv_i8_scalar(w, scales, rows, cols, x, y);
}
