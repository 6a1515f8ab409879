/* trellis_avx2.h - glq_trellis_3inst of eight 16-bit states at once (AVX2 + F16C), for the fused CPU decode of
 * src/layers/trellis_linear.c; tests/c/test_trellis.c compares it with glq_trellis_3inst on all 65536 states.
 *
 * glq forms r = ((89226354·s + 64248484) & 0x8FFF8FFF) ^ 0x3B603B60 and adds its two fp16 halves in fp16. The
 * mask and xor leave each half a sign (bit 15), exponent bits 0, 1, 1 and 12 more bits (the exponent's low two and
 * the mantissa: the product's bits 11..0 ^ 0xB60): a normal fp16 with exponent 12..15, |v| in [2^-3, 2). Its f32
 * is sign | 0x3E000000 | (those 12 bits) << 13 (f32 exponent 124 + their top two), which integer shifts and masks
 * build without converting: xor the product with 0x0B600B60, shift the half to the top of the word, shift right
 * arithmetically by 3 (the 12 bits to 24..13, the sign stays in bit 31), keep those with 0x81FFE000, set
 * 0x3E000000. The f32 sum of the halves is exact; F16C rounds it to fp16 (nearest even) and back, as glq does. */
#ifndef GLQ_TRELLIS_AVX2_H
#define GLQ_TRELLIS_AVX2_H
#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>

/* f32 of the fp16 half in bits 31..16 of u (the LCG output xored with 0x0B600B60) */
__attribute__((target("avx2,fma,f16c"), always_inline)) static inline __m256 glq_3inst_top_half_avx2(__m256i u) {
  const __m256i bits = _mm256_and_si256(_mm256_srai_epi32(u, 3), _mm256_set1_epi32((int)0x81FFE000u));
  return _mm256_castsi256_ps(_mm256_or_si256(bits, _mm256_set1_epi32(0x3E000000)));
}

/* the 3inst values of the states in s (each < 65536) */
__attribute__((target("avx2,fma,f16c"), always_inline)) static inline __m256 glq_trellis_3inst_avx2(__m256i s) {
  __m256i u = _mm256_add_epi32(_mm256_mullo_epi32(s, _mm256_set1_epi32(89226354)), _mm256_set1_epi32(64248484));
  u = _mm256_xor_si256(u, _mm256_set1_epi32(0x0B600B60));
  const __m256 sum = _mm256_add_ps(glq_3inst_top_half_avx2(_mm256_slli_epi32(u, 16)), glq_3inst_top_half_avx2(u));
  return _mm256_cvtph_ps(_mm256_cvtps_ph(sum, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
}
#endif
#endif
