#ifndef JOBFARM_COMPUTE_KERNELS_H
#define JOBFARM_COMPUTE_KERNELS_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/// 1 when the running CPU supports F16C (and AVX), 0 otherwise.
int ck_cpu_has_f16c(void);

/// Converts `count` IEEE binary16 values (raw bits) to binary32.
/// Uses F16C when available, the portable scalar path otherwise.
void ck_f16_to_f32(const uint16_t *src, float *dst, size_t count);

/// Converts `count` binary32 values to binary16 bits, round-to-nearest-even.
void ck_f32_to_f16(const float *src, uint16_t *dst, size_t count);

/// Portable scalar conversions (always available, used as fallback and by tests).
void ck_f16_to_f32_scalar(const uint16_t *src, float *dst, size_t count);
void ck_f32_to_f16_scalar(const float *src, uint16_t *dst, size_t count);

/// dst[i] = (float)src[i] * scale, for int8 dequantisation of one row.
void ck_i8_to_f32_scaled(const int8_t *src, float *dst, size_t count, float scale);

/// Fused matrix-vector products for one input row (batch 1), reading the
/// compressed weights directly: y[r] += sum_c W[r, c] * x[c] for r < rows.
/// `w` is row-major rows x cols. Uses AVX2+FMA+F16C when available.
void ck_gemv_f16(const uint16_t *w, size_t rows, size_t cols, const float *x, float *y);

/// As ck_gemv_f16 for int8 weights with per-row scales: y[r] += scales[r] * sum_c q[r, c] * x[c].
void ck_gemv_i8(const int8_t *w, const float *scales, size_t rows, size_t cols, const float *x, float *y);

#ifdef __cplusplus
}
#endif

#endif
