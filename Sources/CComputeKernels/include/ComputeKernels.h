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

/// Small-batch products that read each weight once (OpenBLAS's sgemm packs the whole matrix first, which costs
/// more than the product for a few rows): y[i*ldy + r] += sum_c W[r, c] * x[i*ldx + c] for r < rows, i < batch,
/// `w` row-major rows x cols (PyTorch's [out, in]). AVX2+FMA(+F16C) when available, scalar otherwise.
void ck_gemm_small_f32(const float *w, size_t rows, size_t cols, const float *x, size_t ldx, size_t batch, float *y, size_t ldy);
void ck_gemm_small_f16(const uint16_t *w, size_t rows, size_t cols, const float *x, size_t ldx, size_t batch, float *y, size_t ldy);
/// As above for int8 weights with per-row scales: y[i*ldy + r] += scales[r] * sum_c q[r, c] * x[i*ldx + c].
void ck_gemm_small_i8(const int8_t *w, const float *scales, size_t rows, size_t cols, const float *x, size_t ldx, size_t batch,
                      float *y, size_t ldy);
/// The same split by weight rows across `threads` threads (the caller and a persistent pool of helpers; one call
/// runs at a time). Each thread streams its own share of the weights, so a memory-bound pass gets the bandwidth of
/// several cores without reading the weights twice.
void ck_gemm_small_f32_mt(const float *w, size_t rows, size_t cols, const float *x, size_t ldx, size_t batch, float *y, size_t ldy,
                          size_t threads);
void ck_gemm_small_f16_mt(const uint16_t *w, size_t rows, size_t cols, const float *x, size_t ldx, size_t batch, float *y, size_t ldy,
                          size_t threads);
void ck_gemm_small_i8_mt(const int8_t *w, const float *scales, size_t rows, size_t cols, const float *x, size_t ldx, size_t batch,
                         float *y, size_t ldy, size_t threads);
/// Sets the calling thread's nice value (Linux: per thread; elsewhere a no-op). Returns 0 on success.
int ck_set_thread_nice(int nice);
/// The nice value the small-batch kernels' helper threads take when they start (default 0).
void ck_compute_thread_nice(int nice);
/// 1 when the small-batch kernels run vectorised on this CPU.
int ck_gemm_small_accelerated(void);

/// The instruction sets of the small-batch kernels, in order.
#define CK_ISA_SCALAR 0
#define CK_ISA_AVX2 1      /* AVX2 + FMA + F16C */
#define CK_ISA_AVX512 2    /* AVX-512F */
/// The instruction set the small-batch kernels use now: the best this CPU has, capped by ck_gemm_small_limit_isa.
int ck_gemm_small_isa(void);
/// Caps the instruction set of the small-batch kernels (process-wide; CK_ISA_AVX512 lifts the cap) and returns the
/// one now in use. For comparing the paths on one machine: results agree to rounding, speeds differ.
int ck_gemm_small_limit_isa(int isa);

/// Base64 (RFC 4648, standard alphabet) of whole groups, no padding: the caller handles a padded last group.
/// Decodes the 4-character groups of `src` (`len` characters; a partial group at the end is ignored) into `dst`
/// (3 bytes a group) and stops before the first group holding a character outside the alphabet (`=` included).
/// Returns the characters decoded: `len - len % 4` when all were clean. AVX2 when the CPU has it, portable otherwise.
size_t ck_base64_decode_groups(const uint8_t *src, size_t len, uint8_t *dst);
/// Encodes the whole 3-byte groups of `src` (`len` bytes; a partial group at the end is ignored) into `dst`
/// (4 characters a group).
void ck_base64_encode_groups(const uint8_t *src, size_t len, uint8_t *dst);
/// The portable versions of the two above, whatever the CPU (for tests comparing both paths).
size_t ck_base64_decode_groups_portable(const uint8_t *src, size_t len, uint8_t *dst);
void ck_base64_encode_groups_portable(const uint8_t *src, size_t len, uint8_t *dst);
/// 1 when the base64 kernels run vectorised on this CPU.
int ck_base64_accelerated(void);

#ifdef __cplusplus
}
#endif

#endif
