#include "ComputeKernels.h"

#include <string.h>

#include "cpu_dispatch.h"

/* Base64 (RFC 4648, standard alphabet) of whole groups: 4 characters <-> 3 bytes. Padding and the reporting of a
 * bad character's offset are the caller's (Swift's); these kernels only go fast where the text is clean, and stop
 * at the first group that is not. AVX2 where the running CPU has it (checked once), portable C everywhere else. */

/* ---------- portable: one table per position of a group, so a group is four loads and three ORs ---------- */

/* ck_b64_d[k][c]: the bits character c contributes at position k of a group, already shifted into place in the
 * 24-bit group value; 0x01000000 for a character outside the alphabet (so any bad character sets bit 24).
 * Constants made by the compiler: a table filled lazily at run time was refilled by a second thread while a third
 * read it, and refused clean text now and then (1.5 % of processes decoding on 4 threads at start). */
#define CK_B64_VALUE(c) ((c) >= 'A' && (c) <= 'Z' ? (c) - 'A' : (c) >= 'a' && (c) <= 'z' ? (c) - 'a' + 26 \
                         : (c) >= '0' && (c) <= '9' ? (c) - '0' + 52 : (c) == '+' ? 62 : (c) == '/' ? 63 : -1)
#define CK_B64_ENTRY(k, c) (CK_B64_VALUE(c) < 0 ? 0x01000000u : (uint32_t)CK_B64_VALUE(c) << (18 - 6 * (k)))
#define CK_B64_ROW4(k, c) CK_B64_ENTRY(k, c), CK_B64_ENTRY(k, (c) + 1), CK_B64_ENTRY(k, (c) + 2), CK_B64_ENTRY(k, (c) + 3)
#define CK_B64_ROW16(k, c) CK_B64_ROW4(k, c), CK_B64_ROW4(k, (c) + 4), CK_B64_ROW4(k, (c) + 8), CK_B64_ROW4(k, (c) + 12)
#define CK_B64_ROW64(k, c) CK_B64_ROW16(k, c), CK_B64_ROW16(k, (c) + 16), CK_B64_ROW16(k, (c) + 32), CK_B64_ROW16(k, (c) + 48)
#define CK_B64_TABLE(k) { CK_B64_ROW64(k, 0), CK_B64_ROW64(k, 64), CK_B64_ROW64(k, 128), CK_B64_ROW64(k, 192) }
static const uint32_t ck_b64_d[4][256] = { CK_B64_TABLE(0), CK_B64_TABLE(1), CK_B64_TABLE(2), CK_B64_TABLE(3) };

static const char ck_b64_alphabet[64] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

size_t ck_base64_decode_groups_portable(const uint8_t *src, size_t len, uint8_t *dst) {
    size_t i = 0;
    len -= len % 4;
    for (; i < len; i += 4, dst += 3) {
        uint32_t word = ck_b64_d[0][src[i]] | ck_b64_d[1][src[i + 1]] | ck_b64_d[2][src[i + 2]] | ck_b64_d[3][src[i + 3]];
        if (word >> 24) break;
        dst[0] = (uint8_t)(word >> 16);
        dst[1] = (uint8_t)(word >> 8);
        dst[2] = (uint8_t)word;
    }
    return i;
}

void ck_base64_encode_groups_portable(const uint8_t *src, size_t len, uint8_t *dst) {
    len -= len % 3;
    for (size_t i = 0; i < len; i += 3, dst += 4) {
        uint32_t word = (uint32_t)src[i] << 16 | (uint32_t)src[i + 1] << 8 | src[i + 2];
        dst[0] = (uint8_t)ck_b64_alphabet[word >> 18];
        dst[1] = (uint8_t)ck_b64_alphabet[(word >> 12) & 63];
        dst[2] = (uint8_t)ck_b64_alphabet[(word >> 6) & 63];
        dst[3] = (uint8_t)ck_b64_alphabet[word & 63];
    }
}

#ifdef CK_X86
/* ---------- AVX2: 32 characters <-> 24 bytes a step (the nibble-table method of Muła and Lemire) ---------- */

static int ck_b64_avx2_state = -1;

static int ck_b64_has_avx2(void) {
    int s = __atomic_load_n(&ck_b64_avx2_state, __ATOMIC_RELAXED);
    if (s < 0) {
        __builtin_cpu_init();
        s = __builtin_cpu_supports("avx2") ? 1 : 0;
        __atomic_store_n(&ck_b64_avx2_state, s, __ATOMIC_RELAXED);
    }
    return s;
}

/* Decodes 32 characters at `src` into 24 bytes at `dst`; returns 0 (and writes nothing) when any of them is
 * outside the alphabet, `=` included. */
__attribute__((target("avx2")))
static inline int ck_b64_decode32_avx2(const uint8_t *src, uint8_t *dst) {
    /* A character is valid when its low nibble's class bits and its high nibble's class bit do not meet. */
    const __m256i lut_lo = _mm256_setr_epi8(
        0x15, 0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x13, 0x1A, 0x1B, 0x1B, 0x1B, 0x1A,
        0x15, 0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x13, 0x1A, 0x1B, 0x1B, 0x1B, 0x1A);
    const __m256i lut_hi = _mm256_setr_epi8(
        0x10, 0x10, 0x01, 0x02, 0x04, 0x08, 0x04, 0x08, 0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x10,
        0x10, 0x10, 0x01, 0x02, 0x04, 0x08, 0x04, 0x08, 0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x10);
    /* What to add to a valid character, by its high nibble ('/' moved to slot 1): its 6-bit value. */
    const __m256i lut_roll = _mm256_setr_epi8(
        0, 16, 19, 4, -65, -65, -71, -71, 0, 0, 0, 0, 0, 0, 0, 0,
        0, 16, 19, 4, -65, -65, -71, -71, 0, 0, 0, 0, 0, 0, 0, 0);
    const __m256i mask_2f = _mm256_set1_epi8(0x2F);
    __m256i in = _mm256_loadu_si256((const __m256i *)src);
    __m256i hi_nibbles = _mm256_and_si256(_mm256_srli_epi32(in, 4), mask_2f);
    __m256i lo_nibbles = _mm256_and_si256(in, mask_2f);
    __m256i lo = _mm256_shuffle_epi8(lut_lo, lo_nibbles);
    __m256i hi = _mm256_shuffle_epi8(lut_hi, hi_nibbles);
    if (!_mm256_testz_si256(lo, hi)) return 0;
    __m256i eq_2f = _mm256_cmpeq_epi8(in, mask_2f);
    __m256i roll = _mm256_shuffle_epi8(lut_roll, _mm256_add_epi8(eq_2f, hi_nibbles));
    __m256i values = _mm256_add_epi8(in, roll);
    /* Four 6-bit values per 32-bit lane -> one 24-bit value (first character highest). */
    __m256i pairs = _mm256_maddubs_epi16(values, _mm256_set1_epi32(0x01400140));
    __m256i words = _mm256_madd_epi16(pairs, _mm256_set1_epi32(0x00011000));
    /* Bytes 2,1,0 of each lane in order, 12 per 128-bit half, then the halves together. */
    words = _mm256_shuffle_epi8(words, _mm256_setr_epi8(
        2, 1, 0, 6, 5, 4, 10, 9, 8, 14, 13, 12, -1, -1, -1, -1,
        2, 1, 0, 6, 5, 4, 10, 9, 8, 14, 13, 12, -1, -1, -1, -1));
    words = _mm256_permutevar8x32_epi32(words, _mm256_setr_epi32(0, 1, 2, 4, 5, 6, 7, 7));
    _mm_storeu_si128((__m128i *)dst, _mm256_castsi256_si128(words));
    _mm_storel_epi64((__m128i *)(dst + 16), _mm256_extracti128_si256(words, 1));
    return 1;
}

__attribute__((target("avx2")))
static size_t ck_base64_decode_groups_avx2(const uint8_t *src, size_t len, uint8_t *dst) {
    size_t i = 0;
    len -= len % 4;
    while (i + 32 <= len && ck_b64_decode32_avx2(src + i, dst + i / 4 * 3)) i += 32;
    /* The tail (or a block with a bad character: the portable loop finds its group). */
    return i + ck_base64_decode_groups_portable(src + i, len - i, dst + i / 4 * 3);
}

/* Encodes 24 bytes at `src` into 32 characters at `dst`; reads 28 bytes (4 past the 24). */
__attribute__((target("avx2")))
static inline void ck_b64_encode24_avx2(const uint8_t *src, uint8_t *dst) {
    __m128i lo = _mm_loadu_si128((const __m128i *)src);
    __m128i hi = _mm_loadu_si128((const __m128i *)(src + 12));
    __m256i in = _mm256_inserti128_si256(_mm256_castsi128_si256(lo), hi, 1);
    /* Each 3-byte group into a 32-bit lane as b1 b0 b2 b1, so the 6-bit fields sit where the multiplies want. */
    in = _mm256_shuffle_epi8(in, _mm256_setr_epi8(
        1, 0, 2, 1, 4, 3, 5, 4, 7, 6, 8, 7, 10, 9, 11, 10,
        1, 0, 2, 1, 4, 3, 5, 4, 7, 6, 8, 7, 10, 9, 11, 10));
    __m256i t0 = _mm256_and_si256(in, _mm256_set1_epi32(0x0FC0FC00));
    __m256i t1 = _mm256_mulhi_epu16(t0, _mm256_set1_epi32(0x04000040));
    __m256i t2 = _mm256_and_si256(in, _mm256_set1_epi32(0x003F03F0));
    __m256i t3 = _mm256_mullo_epi16(t2, _mm256_set1_epi32(0x01000010));
    __m256i indices = _mm256_or_si256(t1, t3); /* one 6-bit value per byte, in output order */
    /* 6-bit value -> character: add an offset picked by its range (A-Z, a-z, 0-9, +, /). */
    __m256i reduced = _mm256_subs_epu8(indices, _mm256_set1_epi8(51));
    __m256i less = _mm256_cmpgt_epi8(_mm256_set1_epi8(26), indices);
    reduced = _mm256_or_si256(reduced, _mm256_and_si256(less, _mm256_set1_epi8(13)));
    const __m256i offsets = _mm256_setr_epi8(
        'a' - 26, '0' - 52, '0' - 52, '0' - 52, '0' - 52, '0' - 52, '0' - 52, '0' - 52, '0' - 52, '0' - 52, '0' - 52,
        '+' - 62, '/' - 63, 'A', 0, 0,
        'a' - 26, '0' - 52, '0' - 52, '0' - 52, '0' - 52, '0' - 52, '0' - 52, '0' - 52, '0' - 52, '0' - 52, '0' - 52,
        '+' - 62, '/' - 63, 'A', 0, 0);
    __m256i out = _mm256_add_epi8(_mm256_shuffle_epi8(offsets, reduced), indices);
    _mm256_storeu_si256((__m256i *)dst, out);
}

__attribute__((target("avx2")))
static void ck_base64_encode_groups_avx2(const uint8_t *src, size_t len, uint8_t *dst) {
    len -= len % 3;
    size_t i = 0;
    for (; i + 28 <= len; i += 24) ck_b64_encode24_avx2(src + i, dst + i / 3 * 4);
    ck_base64_encode_groups_portable(src + i, len - i, dst + i / 3 * 4);
}
#endif

size_t ck_base64_decode_groups(const uint8_t *src, size_t len, uint8_t *dst) {
#ifdef CK_X86
    if (ck_b64_has_avx2()) return ck_base64_decode_groups_avx2(src, len, dst);
#endif
    return ck_base64_decode_groups_portable(src, len, dst);
}

void ck_base64_encode_groups(const uint8_t *src, size_t len, uint8_t *dst) {
#ifdef CK_X86
    if (ck_b64_has_avx2()) { ck_base64_encode_groups_avx2(src, len, dst); return; }
#endif
    ck_base64_encode_groups_portable(src, len, dst);
}

int ck_base64_accelerated(void) {
#ifdef CK_X86
    return ck_b64_has_avx2();
#else
    return 0;
#endif
}
