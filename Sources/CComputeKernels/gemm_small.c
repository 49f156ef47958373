#include "ComputeKernels.h"
#include <stdlib.h>
#include <string.h>

/*
 * Small-batch products with the weights in PyTorch's [out, in] layout:
 *     y[i * ldy + r] += sum_c W[r, c] * x[i * ldx + c]      (times scales[r] for int8)
 *
 * OpenBLAS's sgemm packs the whole weight matrix before multiplying, which for a batch of a few rows costs more
 * than the product itself (a 4096 x 4096 layer: ~12 ms at batch 2 against ~3.3 ms here). These kernels read each
 * weight once: blocks of 4 weight rows x 512 columns (converted to FP32 first for FP16 and int8, so the
 * conversion is paid once per block, not once per input row) are multiplied against 3 input rows at a time,
 * 12 accumulators in registers, the partial sums of each (weight row, input row) pair kept across column blocks.
 */

#include "cpu_dispatch.h"

#define CK_COLS 512      /* columns per block: 4 rows x 512 x 4 B = 8 KiB of weights, L1-resident */
#define CK_BATCH 64      /* input rows per sweep over the weights (the accumulators, 8 KiB, live on the stack) */

/* ---------- portable scalar version ---------- */

static void ck_small_scalar_block(const float *w, size_t ldw, size_t nrows, size_t ncols,
                                  const float *x, size_t ldx, size_t batch, float *y, size_t ldy, const float *scales) {
    for (size_t r = 0; r < nrows; r++) {
        for (size_t i = 0; i < batch; i++) {
            float s = 0;
            for (size_t c = 0; c < ncols; c++) s += w[r * ldw + c] * x[i * ldx + c];
            y[i * ldy + r] += scales ? s * scales[r] : s;
        }
    }
}

#ifdef CK_X86

/* acc[i * 4 + k] += W row k (of 4, stride ldw) . x row i over n columns (n % 8 == 0). */
__attribute__((target("avx2,fma")))
static void ck_small_micro(const float *w0, size_t ldw, const float *x, size_t ldx, size_t batch, size_t n, __m256 *acc) {
    const float *w1 = w0 + ldw, *w2 = w1 + ldw, *w3 = w2 + ldw;
    size_t i = 0;
    for (; i + 3 <= batch; i += 3) {
        const float *xa = x + i * ldx, *xb = xa + ldx, *xc = xb + ldx;
        __m256 *p = acc + i * 4;
        __m256 a0 = p[0], a1 = p[1], a2 = p[2], a3 = p[3];
        __m256 b0 = p[4], b1 = p[5], b2 = p[6], b3 = p[7];
        __m256 c0 = p[8], c1 = p[9], c2 = p[10], c3 = p[11];
        for (size_t c = 0; c < n; c += 8) {
            __m256 va = _mm256_loadu_ps(xa + c), vb = _mm256_loadu_ps(xb + c), vc = _mm256_loadu_ps(xc + c);
            __m256 v;
            v = _mm256_loadu_ps(w0 + c); a0 = _mm256_fmadd_ps(v, va, a0); b0 = _mm256_fmadd_ps(v, vb, b0); c0 = _mm256_fmadd_ps(v, vc, c0);
            v = _mm256_loadu_ps(w1 + c); a1 = _mm256_fmadd_ps(v, va, a1); b1 = _mm256_fmadd_ps(v, vb, b1); c1 = _mm256_fmadd_ps(v, vc, c1);
            v = _mm256_loadu_ps(w2 + c); a2 = _mm256_fmadd_ps(v, va, a2); b2 = _mm256_fmadd_ps(v, vb, b2); c2 = _mm256_fmadd_ps(v, vc, c2);
            v = _mm256_loadu_ps(w3 + c); a3 = _mm256_fmadd_ps(v, va, a3); b3 = _mm256_fmadd_ps(v, vb, b3); c3 = _mm256_fmadd_ps(v, vc, c3);
        }
        p[0] = a0; p[1] = a1; p[2] = a2; p[3] = a3;
        p[4] = b0; p[5] = b1; p[6] = b2; p[7] = b3;
        p[8] = c0; p[9] = c1; p[10] = c2; p[11] = c3;
    }
    for (; i < batch; i++) {
        const float *xa = x + i * ldx;
        __m256 *p = acc + i * 4;
        __m256 a0 = p[0], a1 = p[1], a2 = p[2], a3 = p[3];
        for (size_t c = 0; c < n; c += 8) {
            __m256 va = _mm256_loadu_ps(xa + c);
            a0 = _mm256_fmadd_ps(_mm256_loadu_ps(w0 + c), va, a0);
            a1 = _mm256_fmadd_ps(_mm256_loadu_ps(w1 + c), va, a1);
            a2 = _mm256_fmadd_ps(_mm256_loadu_ps(w2 + c), va, a2);
            a3 = _mm256_fmadd_ps(_mm256_loadu_ps(w3 + c), va, a3);
        }
        p[0] = a0; p[1] = a1; p[2] = a2; p[3] = a3;
    }
}

enum ck_weight_kind { CK_W_F32, CK_W_F16, CK_W_I8 };

/* Converts `n` weights of row `src` (of the given kind) to FP32 (int8 unscaled: the row scale applies at the end). */
__attribute__((target("avx2,fma,f16c")))
static void ck_small_convert(enum ck_weight_kind kind, const void *src, float *dst, size_t n) {
    if (kind == CK_W_F16) {
        ck_f16_to_f32((const uint16_t *)src, dst, n);
    } else {
        const int8_t *q = (const int8_t *)src;
        size_t c = 0;
        for (; c + 8 <= n; c += 8)
            _mm256_storeu_ps(dst + c, _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)(q + c)))));
        for (; c < n; c++) dst[c] = (float)q[c];
    }
}

__attribute__((target("avx2,fma,f16c")))
static void ck_small_avx2(enum ck_weight_kind kind, const void *w, const float *scales, size_t rows, size_t cols,
                          const float *x, size_t ldx, size_t batch, float *y, size_t ldy) {
    __m256 acc[4 * CK_BATCH];
    float buffer[4 * CK_COLS] __attribute__((aligned(32)));
    const size_t elem = kind == CK_W_F32 ? 4 : kind == CK_W_F16 ? 2 : 1;
    const char *base = (const char *)w;
    size_t cv = cols & ~(size_t)7;
    for (size_t i0 = 0; i0 < batch; i0 += CK_BATCH) {
        size_t nb = batch - i0 < CK_BATCH ? batch - i0 : CK_BATCH;
        const float *xb = x + i0 * ldx;
        float *yb = y + i0 * ldy;
        size_t r = 0;
        for (; r + 4 <= rows; r += 4) {
            for (size_t k = 0; k < 4 * nb; k++) acc[k] = _mm256_setzero_ps();
            for (size_t c0 = 0; c0 < cv; c0 += CK_COLS) {
                size_t n = cv - c0 < CK_COLS ? cv - c0 : CK_COLS;
                const float *wp;
                size_t ldw;
                if (kind == CK_W_F32) {
                    wp = (const float *)base + r * cols + c0;
                    ldw = cols;
                } else {
                    for (int k = 0; k < 4; k++) ck_small_convert(kind, base + ((r + k) * cols + c0) * elem, buffer + k * CK_COLS, n);
                    wp = buffer;
                    ldw = CK_COLS;
                }
                ck_small_micro(wp, ldw, xb + c0, ldx, nb, n, acc);
            }
            /* The columns past the last multiple of 8. */
            float tail[4][8];
            size_t nt = cols - cv;
            for (int k = 0; k < 4; k++) {
                if (nt == 0) break;
                if (kind == CK_W_F32) memcpy(tail[k], (const float *)base + (r + k) * cols + cv, nt * sizeof(float));
                else ck_small_convert(kind, base + ((r + k) * cols + cv) * elem, tail[k], nt);
            }
            for (size_t i = 0; i < nb; i++) {
                for (int k = 0; k < 4; k++) {
                    float s = ck_hsum(acc[i * 4 + k]);
                    for (size_t c = 0; c < nt; c++) s += tail[k][c] * xb[i * ldx + cv + c];
                    yb[i * ldy + r + k] += scales ? s * scales[r + k] : s;
                }
            }
        }
        /* The last rows (fewer than 4), one at a time. */
        for (; r < rows; r++) {
            for (size_t c0 = 0; c0 < cols; c0 += 4 * CK_COLS) {
                size_t n = cols - c0 < 4 * CK_COLS ? cols - c0 : 4 * CK_COLS;
                const float *wp;
                if (kind == CK_W_F32) wp = (const float *)base + r * cols + c0;
                else { ck_small_convert(kind, base + (r * cols + c0) * elem, buffer, n); wp = buffer; }
                for (size_t i = 0; i < nb; i++) {
                    float s = 0;
                    for (size_t c = 0; c < n; c++) s += wp[c] * xb[i * ldx + c0 + c];
                    yb[i * ldy + r] += scales ? s * scales[r] : s;
                }
            }
        }
    }
}

/* ---------- AVX-512 version ---------- */

/*
 * Twice the lanes of the AVX2 kernel, and every operand of the inner loop 64-byte aligned (an unaligned 64-byte load
 * crosses a cache line each time, which measured up to a third slower): the input rows are copied once per call into
 * an aligned scratch, zero-padded to a multiple of 16 columns, and each block of 8 weight rows x 512 columns is
 * converted (FP16, int8) or copied (FP32) into an aligned, zero-padded buffer, so no column or row tail needs a
 * scalar loop. 8 weight rows x 3 input rows, 24 accumulators in registers. For a few input rows an FP32 pass is bound
 * by memory and the copy only costs: the weights are then read in place.
 */
#define CK5_WR 8          /* weight rows per block */
#define CK5_XR 3          /* input rows per micro-kernel call */
#define CK5_COLS 512      /* columns per block: 8 rows x 512 x 4 B = 16 KiB, L1-resident */
#define CK5_BATCH 64      /* input rows per sweep over the weights */
#define CK5_DIRECT 8      /* FP32 weights are read in place up to this many input rows (memory-bound) */

/* acc[j*CK5_WR + k] += w row k (stride ldw) . x row j (stride ldx) over n columns (n % 16 == 0), for j < nx. */
__attribute__((target("avx512f"), always_inline))
static inline void ck5_micro(const int nx, const float *w, size_t ldw, const float *x, size_t ldx, size_t n, __m512 *acc) {
    __m512 a[CK5_XR][CK5_WR];
#pragma GCC unroll 8
    for (int j = 0; j < CK5_XR; j++)
#pragma GCC unroll 8
        for (int k = 0; k < CK5_WR; k++) if (j < nx) a[j][k] = acc[j * CK5_WR + k];
    for (size_t c = 0; c < n; c += 16) {
        __m512 xv[CK5_XR];
#pragma GCC unroll 8
        for (int j = 0; j < CK5_XR; j++) if (j < nx) xv[j] = _mm512_loadu_ps(x + j * ldx + c);
#pragma GCC unroll 8
        for (int k = 0; k < CK5_WR; k++) {
            __m512 v = _mm512_loadu_ps(w + k * ldw + c);
#pragma GCC unroll 8
            for (int j = 0; j < CK5_XR; j++) if (j < nx) a[j][k] = _mm512_fmadd_ps(v, xv[j], a[j][k]);
        }
    }
#pragma GCC unroll 8
    for (int j = 0; j < CK5_XR; j++)
#pragma GCC unroll 8
        for (int k = 0; k < CK5_WR; k++) if (j < nx) acc[j * CK5_WR + k] = a[j][k];
}

/* n weights of one row (of the given kind) as FP32 at the aligned `dst`, zero-filled up to `padded`. */
__attribute__((target("avx512f")))
static void ck5_load(enum ck_weight_kind kind, const void *src, float *dst, size_t n, size_t padded) {
    size_t c = 0;
    if (kind == CK_W_F32) {
        const float *f = (const float *)src;
        for (; c + 16 <= n; c += 16) _mm512_store_ps(dst + c, _mm512_loadu_ps(f + c));
        for (; c < n; c++) dst[c] = f[c];
    } else if (kind == CK_W_F16) {
        const uint16_t *h = (const uint16_t *)src;
        for (; c + 16 <= n; c += 16) _mm512_store_ps(dst + c, _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(h + c))));
        if (c < n) { ck_f16_to_f32_scalar(h + c, dst + c, n - c); c = n; }
    } else {
        const int8_t *q = (const int8_t *)src;
        for (; c + 16 <= n; c += 16)
            _mm512_store_ps(dst + c, _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)(q + c)))));
        for (; c < n; c++) dst[c] = (float)q[c];
    }
    for (; c < padded; c++) dst[c] = 0;
}

/* Per-thread scratch of the AVX-512 kernel: the accumulators, the weight block and the packed input rows (grown as
 * needed, kept for the thread's life: a worker's compute threads live as long as the process). */
static _Thread_local float *ck5_scratch;
static _Thread_local size_t ck5_scratch_floats;

__attribute__((target("avx512f")))
static void ck_small_avx512(enum ck_weight_kind kind, const void *w, const float *scales, size_t rows, size_t cols,
                            const float *x, size_t ldx, size_t batch, float *y, size_t ldy) {
    const size_t elem = kind == CK_W_F32 ? 4 : kind == CK_W_F16 ? 2 : 1;
    const char *base = (const char *)w;
    const size_t lds = (cols + 15) & ~(size_t)15;
    const size_t accFloats = CK5_WR * CK5_BATCH * 16, wFloats = CK5_WR * CK5_COLS;
    const size_t need = accFloats + wFloats + (batch < CK5_BATCH ? batch : CK5_BATCH) * lds;
    if (ck5_scratch_floats < need) {
        float *grown = aligned_alloc(64, need * sizeof(float));
        if (!grown) { ck_small_avx2(kind, w, scales, rows, cols, x, ldx, batch, y, ldy); return; }
        free(ck5_scratch);
        ck5_scratch = grown;
        ck5_scratch_floats = need;
    }
    __m512 *acc = (__m512 *)ck5_scratch;
    float *wbuf = ck5_scratch + accFloats, *xs = wbuf + wFloats;
    for (size_t i0 = 0; i0 < batch; i0 += CK5_BATCH) {
        const size_t nb = batch - i0 < CK5_BATCH ? batch - i0 : CK5_BATCH;
        for (size_t i = 0; i < nb; i++) {
            memcpy(xs + i * lds, x + (i0 + i) * ldx, cols * sizeof(float));
            memset(xs + i * lds + cols, 0, (lds - cols) * sizeof(float));
        }
        const int direct = kind == CK_W_F32 && nb <= CK5_DIRECT && cols % 16 == 0;
        for (size_t r = 0; r < rows; r += CK5_WR) {
            const size_t nr = rows - r < CK5_WR ? rows - r : CK5_WR;
            for (size_t k = 0; k < CK5_WR * nb; k++) acc[k] = _mm512_setzero_ps();
            for (size_t c0 = 0; c0 < lds; c0 += CK5_COLS) {
                const size_t n = lds - c0 < CK5_COLS ? lds - c0 : CK5_COLS;
                const size_t valid = cols - c0 < n ? cols - c0 : n;
                const float *wp = wbuf;
                size_t ldw = CK5_COLS;
                if (direct && nr == CK5_WR) {
                    wp = (const float *)base + r * cols + c0;
                    ldw = cols;
                } else {
                    for (size_t k = 0; k < nr; k++) ck5_load(kind, base + ((r + k) * cols + c0) * elem, wbuf + k * CK5_COLS, valid, n);
                    for (size_t k = nr; k < CK5_WR; k++) memset(wbuf + k * CK5_COLS, 0, n * sizeof(float));
                }
                const float *xb = xs + c0;
                size_t i = 0;
                for (; i + CK5_XR <= nb; i += CK5_XR) ck5_micro(CK5_XR, wp, ldw, xb + i * lds, lds, n, acc + i * CK5_WR);
                if (nb - i == 2) ck5_micro(2, wp, ldw, xb + i * lds, lds, n, acc + i * CK5_WR);
                else if (nb - i == 1) ck5_micro(1, wp, ldw, xb + i * lds, lds, n, acc + i * CK5_WR);
            }
            float *yb = y + i0 * ldy;
            for (size_t i = 0; i < nb; i++) {
                for (size_t k = 0; k < nr; k++) {
                    float s = _mm512_reduce_add_ps(acc[i * CK5_WR + k]);
                    yb[i * ldy + r + k] += scales ? s * scales[r + k] : s;
                }
            }
        }
    }
}

#endif

/* The instruction set the kernels use: the best the CPU has, capped by ck_gemm_small_limit_isa (tests and the bench
 * compare the paths on one machine). 0 scalar, 1 AVX2 + FMA + F16C, 2 AVX-512F. */
static int ck_isa_cap = CK_ISA_AVX512;
static int ck_avx512_state = -1; /* racy init is benign (idempotent) */

static int ck_isa_supported(void) {
#ifdef CK_X86
    if (!ck_cpu_has_avx2_fma()) return CK_ISA_SCALAR;
    int s = __atomic_load_n(&ck_avx512_state, __ATOMIC_RELAXED);
    if (s < 0) {
        __builtin_cpu_init();
        s = __builtin_cpu_supports("avx512f") ? 1 : 0;
        __atomic_store_n(&ck_avx512_state, s, __ATOMIC_RELAXED);
    }
    return s ? CK_ISA_AVX512 : CK_ISA_AVX2;
#else
    return CK_ISA_SCALAR;
#endif
}

int ck_gemm_small_isa(void) {
    int supported = ck_isa_supported(), cap = __atomic_load_n(&ck_isa_cap, __ATOMIC_RELAXED);
    return supported < cap ? supported : cap;
}

int ck_gemm_small_limit_isa(int isa) {
    __atomic_store_n(&ck_isa_cap, isa < CK_ISA_SCALAR ? CK_ISA_SCALAR : isa, __ATOMIC_RELAXED);
    return ck_gemm_small_isa();
}

int ck_gemm_small_accelerated(void) { return ck_gemm_small_isa() > CK_ISA_SCALAR; }

#ifdef CK_X86
/* The vectorised kernel of the instruction set in force; 0 when there is none (the caller runs its portable loop).
 * One FP16 or int8 row goes to the fused matrix-vector kernels, which read the weights in place and convert in
 * registers (the block kernels convert into a buffer first, which only pays when several rows share it). */
static int ck_small_vectorised(enum ck_weight_kind kind, const void *w, const float *scales, size_t rows, size_t cols,
                               const float *x, size_t ldx, size_t batch, float *y, size_t ldy) {
    const int isa = ck_gemm_small_isa();
    if (isa < CK_ISA_AVX2) return 0;
    if (batch == 1 && kind == CK_W_F16) ck_gemv_f16((const uint16_t *)w, rows, cols, x, y);
    else if (batch == 1 && kind == CK_W_I8) ck_gemv_i8((const int8_t *)w, scales, rows, cols, x, y);
    else if (isa >= CK_ISA_AVX512) ck_small_avx512(kind, w, scales, rows, cols, x, ldx, batch, y, ldy);
    else ck_small_avx2(kind, w, scales, rows, cols, x, ldx, batch, y, ldy);
    return 1;
}
#endif

void ck_gemm_small_f32(const float *w, size_t rows, size_t cols, const float *x, size_t ldx, size_t batch, float *y, size_t ldy) {
#ifdef CK_X86
    if (ck_small_vectorised(CK_W_F32, w, NULL, rows, cols, x, ldx, batch, y, ldy)) return;
#endif
    ck_small_scalar_block(w, cols, rows, cols, x, ldx, batch, y, ldy, NULL);
}

void ck_gemm_small_f16(const uint16_t *w, size_t rows, size_t cols, const float *x, size_t ldx, size_t batch, float *y, size_t ldy) {
#ifdef CK_X86
    if (ck_small_vectorised(CK_W_F16, w, NULL, rows, cols, x, ldx, batch, y, ldy)) return;
#endif
    float row[256];
    for (size_t r = 0; r < rows; r++) {
        for (size_t c0 = 0; c0 < cols; c0 += 256) {
            size_t n = cols - c0 < 256 ? cols - c0 : 256;
            ck_f16_to_f32_scalar(w + r * cols + c0, row, n);
            ck_small_scalar_block(row, n, 1, n, x + c0, ldx, batch, y + r, ldy, NULL);
        }
    }
}

void ck_gemm_small_i8(const int8_t *w, const float *scales, size_t rows, size_t cols, const float *x, size_t ldx, size_t batch,
                      float *y, size_t ldy) {
#ifdef CK_X86
    if (ck_small_vectorised(CK_W_I8, w, scales, rows, cols, x, ldx, batch, y, ldy)) return;
#endif
    for (size_t r = 0; r < rows; r++) {
        for (size_t i = 0; i < batch; i++) {
            float s = 0;
            for (size_t c = 0; c < cols; c++) s += (float)w[r * cols + c] * x[i * ldx + c];
            y[i * ldy + r] += s * scales[r];
        }
    }
}

/* ---------- the same products split across threads by weight rows ---------- */

#include <pthread.h>
#ifdef __linux__
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>
#endif

int ck_set_thread_nice(int nice) {
#ifdef __linux__
    /* On Linux the nice value belongs to the thread: PRIO_PROCESS with a thread id sets only that thread. */
    return setpriority(PRIO_PROCESS, (id_t)syscall(SYS_gettid), nice);
#else
    (void)nice;
    return 0;
#endif
}

static int ck_pool_nice = 0;

void ck_compute_thread_nice(int nice) { __atomic_store_n(&ck_pool_nice, nice, __ATOMIC_RELAXED); }

/*
 * A small persistent pool: helper threads park on a condition variable and wake per call; the caller works too,
 * and every thread claims chunks of weight rows until none is left. One call at a time (a mutex serialises callers):
 * split passes run one layer at a time across the pool, which is why the batcher splits only when it runs one pass
 * at a time. Threads are created on first use and live for the process.
 */
#define CK_POOL_MAX 64

struct ck_job {
    int kind;
    const void *w;
    const float *scales;
    size_t rows, cols, ldx, batch, ldy;
    const float *x;
    float *y;
    size_t parts;       /* chunks of weight rows */
    size_t threads;     /* threads taking part (the caller and threads - 1 helpers) */
};

/* Chunks are claimed from a shared counter, so a thread the scheduler preempts (the compute threads run niced, and
 * the worker's own threads take the core whenever they wake) does not hold the pass up: the others take its share,
 * and the caller waits for chunks, not for helpers (a helper that wakes late finds nothing left). */

static pthread_mutex_t ck_pool_call = PTHREAD_MUTEX_INITIALIZER;
static pthread_mutex_t ck_pool_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t ck_pool_wake = PTHREAD_COND_INITIALIZER;
static pthread_cond_t ck_pool_done = PTHREAD_COND_INITIALIZER;
static size_t ck_pool_threads = 0;   /* helpers started */
static uint32_t ck_pool_generation = 0;
static struct ck_job ck_pool_job;
/* (generation << 32) | next chunk: a helper that wakes late, after its call has ended, cannot claim a chunk of the
 * next call with the old call's pointers, because the generation no longer matches. */
static uint64_t ck_pool_claim;
static size_t ck_pool_finished;      /* chunks finished in this call, guarded by ck_pool_lock */

static void ck_run_part(const struct ck_job *job, size_t part) {
    /* Rows split in multiples of 4 so every share keeps the 4-row micro-kernel. */
    size_t quads = (job->rows + 3) / 4;
    size_t first = (quads * part / job->parts) * 4, last = (quads * (part + 1) / job->parts) * 4;
    if (last > job->rows) last = job->rows;
    if (first >= last) return;
    size_t n = last - first;
    switch (job->kind) {
    case 0: ck_gemm_small_f32((const float *)job->w + first * job->cols, n, job->cols, job->x, job->ldx, job->batch, job->y + first, job->ldy); break;
    case 1: ck_gemm_small_f16((const uint16_t *)job->w + first * job->cols, n, job->cols, job->x, job->ldx, job->batch, job->y + first, job->ldy); break;
    default: ck_gemm_small_i8((const int8_t *)job->w + first * job->cols, job->scales + first, n, job->cols, job->x, job->ldx, job->batch, job->y + first, job->ldy); break;
    }
}

/* Claims and runs chunks of call `generation` until none is left; returns how many this thread ran. */
static size_t ck_run_chunks(const struct ck_job *job, uint32_t generation) {
    size_t ran = 0;
    for (;;) {
        uint64_t claim = __atomic_load_n(&ck_pool_claim, __ATOMIC_ACQUIRE);
        for (;;) {
            if ((uint32_t)(claim >> 32) != generation || (claim & 0xffffffffu) >= job->parts) return ran;
            if (__atomic_compare_exchange_n(&ck_pool_claim, &claim, claim + 1, 1, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE)) break;
        }
        ck_run_part(job, (size_t)(claim & 0xffffffffu));
        ran++;
    }
}

static void ck_finish_chunks(size_t ran, size_t parts) {
    if (ran == 0) return;
    pthread_mutex_lock(&ck_pool_lock);
    ck_pool_finished += ran;
    if (ck_pool_finished == parts) pthread_cond_signal(&ck_pool_done);
    pthread_mutex_unlock(&ck_pool_lock);
}

static void *ck_pool_main(void *arg) {
    size_t index = (size_t)(uintptr_t)arg;  /* helper i takes part in calls of more than i + 1 threads */
    uint32_t seen = 0;
    /* A new thread inherits its creator's nice value (a compute lane's): set the pool's own explicitly. */
    ck_set_thread_nice(__atomic_load_n(&ck_pool_nice, __ATOMIC_RELAXED));
    pthread_mutex_lock(&ck_pool_lock);
    for (;;) {
        while (ck_pool_generation == seen) pthread_cond_wait(&ck_pool_wake, &ck_pool_lock);
        seen = ck_pool_generation;
        struct ck_job job = ck_pool_job;
        if (index + 1 >= job.threads) continue;  /* this call asked for fewer threads */
        pthread_mutex_unlock(&ck_pool_lock);
        ck_finish_chunks(ck_run_chunks(&job, seen), job.parts);
        pthread_mutex_lock(&ck_pool_lock);
    }
    return NULL;
}

static void ck_parallel(struct ck_job job, size_t threads) {
    size_t quads = (job.rows + 3) / 4;
    if (threads > CK_POOL_MAX) threads = CK_POOL_MAX;
    if (threads > quads) threads = quads;
    if (threads <= 1) { job.parts = 1; job.threads = 1; ck_run_part(&job, 0); return; }
    pthread_mutex_lock(&ck_pool_call);
    pthread_mutex_lock(&ck_pool_lock);
    while (ck_pool_threads + 1 < threads) {
        pthread_t thread;
        if (pthread_create(&thread, NULL, ck_pool_main, (void *)(uintptr_t)ck_pool_threads) != 0) break;
        pthread_detach(thread);
        ck_pool_threads++;
    }
    if (threads > ck_pool_threads + 1) threads = ck_pool_threads + 1;
    job.threads = threads;
    /* About 8 chunks per thread, each at least 16 rows (4 micro-kernel blocks), at least one per thread. */
    job.parts = threads * 8;
    if (job.parts > quads / 4) job.parts = quads / 4 > threads ? quads / 4 : threads;
    uint32_t generation = ++ck_pool_generation;
    ck_pool_job = job;
    ck_pool_finished = 0;
    __atomic_store_n(&ck_pool_claim, (uint64_t)generation << 32, __ATOMIC_RELEASE);
    /* Wakes every helper; those beyond this call's thread count go back to sleep. */
    pthread_cond_broadcast(&ck_pool_wake);
    pthread_mutex_unlock(&ck_pool_lock);
    ck_finish_chunks(ck_run_chunks(&job, generation), job.parts);
    pthread_mutex_lock(&ck_pool_lock);
    while (ck_pool_finished < job.parts) pthread_cond_wait(&ck_pool_done, &ck_pool_lock);
    pthread_mutex_unlock(&ck_pool_lock);
    pthread_mutex_unlock(&ck_pool_call);
}

void ck_gemm_small_f32_mt(const float *w, size_t rows, size_t cols, const float *x, size_t ldx, size_t batch, float *y, size_t ldy, size_t threads) {
    struct ck_job job = {0, w, NULL, rows, cols, ldx, batch, ldy, x, y, 1, 1};
    ck_parallel(job, threads);
}

void ck_gemm_small_f16_mt(const uint16_t *w, size_t rows, size_t cols, const float *x, size_t ldx, size_t batch, float *y, size_t ldy, size_t threads) {
    struct ck_job job = {1, w, NULL, rows, cols, ldx, batch, ldy, x, y, 1, 1};
    ck_parallel(job, threads);
}

void ck_gemm_small_i8_mt(const int8_t *w, const float *scales, size_t rows, size_t cols, const float *x, size_t ldx, size_t batch,
                         float *y, size_t ldy, size_t threads) {
    struct ck_job job = {2, w, scales, rows, cols, ldx, batch, ldy, x, y, 1, 1};
    ck_parallel(job, threads);
}
