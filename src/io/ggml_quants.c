#include "ggml_quants.h"
#include <math.h>
#include <string.h>
#include "../core/error.h"
#include "../core/pool.h"
#include "../core/tensor.h"

typedef struct {
  const char *name;
  int64_t block;
  size_t bytes;
} type_info;

/* Indexed by ggml type id; sizes are those of ggml's block structs. Gaps are removed ids. */
static const type_info types[] = {
  [0] = {"f32", 1, 4},         [1] = {"f16", 1, 2},        [2] = {"q4_0", 32, 18},
  [3] = {"q4_1", 32, 20},      [6] = {"q5_0", 32, 22},     [7] = {"q5_1", 32, 24},
  [8] = {"q8_0", 32, 34},      [9] = {"q8_1", 32, 36},     [10] = {"q2_k", 256, 84},
  [11] = {"q3_k", 256, 110},   [12] = {"q4_k", 256, 144},  [13] = {"q5_k", 256, 176},
  [14] = {"q6_k", 256, 210},   [15] = {"q8_k", 256, 292},  [16] = {"iq2_xxs", 256, 66},
  [17] = {"iq2_xs", 256, 74},  [18] = {"iq3_xxs", 256, 98}, [19] = {"iq1_s", 256, 50},
  [20] = {"iq4_nl", 32, 18},   [21] = {"iq3_s", 256, 110}, [22] = {"iq2_s", 256, 82},
  [23] = {"iq4_xs", 256, 136}, [24] = {"i8", 1, 1},        [25] = {"i16", 1, 2},
  [26] = {"i32", 1, 4},        [27] = {"i64", 1, 8},       [28] = {"f64", 1, 8},
  [29] = {"iq1_m", 256, 56},   [30] = {"bf16", 1, 2},      [34] = {"tq1_0", 256, 54},
  [35] = {"tq2_0", 256, 66},   [39] = {"mxfp4", 32, 17},   [40] = {"nvfp4", 64, 36},
  [41] = {"q1_0", 128, 18},
};
#define NTYPES (sizeof types / sizeof types[0])

const char *glq_ggml_type_name(uint32_t type) {
  return type < NTYPES ? types[type].name : NULL;
}

int glq_ggml_type_block(uint32_t type, int64_t *block_elems, size_t *block_bytes) {
  if (!glq_ggml_type_name(type)) return glq_error(GLQ_EFORMAT, "unknown ggml tensor type id %u", type);
  *block_elems = types[type].block;
  *block_bytes = types[type].bytes;
  return GLQ_OK;
}

static float f16(const uint8_t *p) {
  uint16_t h;
  memcpy(&h, p, 2);
  return glq_f16_to_f32(h);
}

/* Each function decodes one block of src into y. */
typedef void (*block_fn)(const uint8_t *b, float *y);

static void deq_f32(const uint8_t *b, float *y) { memcpy(y, b, 4); }
static void deq_f16(const uint8_t *b, float *y) { y[0] = f16(b); }
static void deq_bf16(const uint8_t *b, float *y) {
  uint16_t h;
  memcpy(&h, b, 2);
  y[0] = glq_bf16_to_f32(h);
}

/* q4_0: f16 d, 16 bytes of nibbles; low nibbles are elements 0..15, high 16..31, offset 8 */
static void deq_q4_0(const uint8_t *b, float *y) {
  float d = f16(b);
  const uint8_t *qs = b + 2;
  for (int j = 0; j < 16; j++) {
    y[j] = (float)((qs[j] & 0x0F) - 8) * d;
    y[j + 16] = (float)((qs[j] >> 4) - 8) * d;
  }
}

/* q4_1: f16 d, f16 m, nibbles; y = q*d + m */
static void deq_q4_1(const uint8_t *b, float *y) {
  float d = f16(b), m = f16(b + 2);
  const uint8_t *qs = b + 4;
  for (int j = 0; j < 16; j++) {
    y[j] = (float)(qs[j] & 0x0F) * d + m;
    y[j + 16] = (float)(qs[j] >> 4) * d + m;
  }
}

/* q5_0/q5_1: the fifth bit of element j is bit j of the little-endian u32 qh */
static void deq_q5_0(const uint8_t *b, float *y) {
  float d = f16(b);
  uint32_t qh;
  memcpy(&qh, b + 2, 4);
  const uint8_t *qs = b + 6;
  for (int j = 0; j < 16; j++) {
    int h0 = (int)((qh >> j) << 4) & 0x10, h1 = (int)(qh >> (j + 12)) & 0x10;
    y[j] = (float)(((qs[j] & 0x0F) | h0) - 16) * d;
    y[j + 16] = (float)(((qs[j] >> 4) | h1) - 16) * d;
  }
}

static void deq_q5_1(const uint8_t *b, float *y) {
  float d = f16(b), m = f16(b + 2);
  uint32_t qh;
  memcpy(&qh, b + 4, 4);
  const uint8_t *qs = b + 8;
  for (int j = 0; j < 16; j++) {
    int h0 = (int)((qh >> j) << 4) & 0x10, h1 = (int)(qh >> (j + 12)) & 0x10;
    y[j] = (float)((qs[j] & 0x0F) | h0) * d + m;
    y[j + 16] = (float)((qs[j] >> 4) | h1) * d + m;
  }
}

static void deq_q8_0(const uint8_t *b, float *y) {
  float d = f16(b);
  for (int j = 0; j < 32; j++) y[j] = (float)(int8_t)b[2 + j] * d;
}

/* K-quants pack 8 six-bit (scale, min) pairs into 12 bytes: pairs 0..3 in the low 6 bits of
 * bytes 0..7, pairs 4..7 in the nibbles of bytes 8..11 plus the top 2 bits of bytes 0..7. */
static void scale_min_k4(int j, const uint8_t *q, int *sc, int *mn) {
  if (j < 4) {
    *sc = q[j] & 63;
    *mn = q[j + 4] & 63;
  } else {
    *sc = (q[j + 4] & 0x0F) | ((q[j - 4] >> 6) << 4);
    *mn = (q[j + 4] >> 4) | ((q[j] >> 6) << 4);
  }
}

/* q4_k: f16 d, f16 dmin, 12 scale bytes, 128 nibble bytes; 8 sub-blocks of 32 */
static void deq_q4_k(const uint8_t *b, float *y) {
  float d = f16(b), dmin = f16(b + 2);
  const uint8_t *scales = b + 4, *q = b + 16;
  for (int j = 0; j < 8; j += 2, q += 32, y += 64) {
    int sc, mn;
    scale_min_k4(j, scales, &sc, &mn);
    float d1 = d * (float)sc, m1 = dmin * (float)mn;
    scale_min_k4(j + 1, scales, &sc, &mn);
    float d2 = d * (float)sc, m2 = dmin * (float)mn;
    for (int l = 0; l < 32; l++) y[l] = d1 * (float)(q[l] & 0x0F) - m1;
    for (int l = 0; l < 32; l++) y[l + 32] = d2 * (float)(q[l] >> 4) - m2;
  }
}

/* q5_k: as q4_k plus 32 bytes qh; sub-block pair p takes its fifth bits from bits 2p, 2p+1 */
static void deq_q5_k(const uint8_t *b, float *y) {
  float d = f16(b), dmin = f16(b + 2);
  const uint8_t *scales = b + 4, *qh = b + 16, *ql = b + 48;
  for (int j = 0; j < 8; j += 2, ql += 32, y += 64) {
    int sc, mn;
    scale_min_k4(j, scales, &sc, &mn);
    float d1 = d * (float)sc, m1 = dmin * (float)mn;
    scale_min_k4(j + 1, scales, &sc, &mn);
    float d2 = d * (float)sc, m2 = dmin * (float)mn;
    uint8_t u1 = (uint8_t)(1u << j), u2 = (uint8_t)(2u << j);
    for (int l = 0; l < 32; l++) y[l] = d1 * (float)((ql[l] & 0x0F) + (qh[l] & u1 ? 16 : 0)) - m1;
    for (int l = 0; l < 32; l++) y[l + 32] = d2 * (float)((ql[l] >> 4) + (qh[l] & u2 ? 16 : 0)) - m2;
  }
}

/* q6_k: 128 bytes low nibbles, 64 bytes of 2-bit highs, 16 int8 scales, f16 d; offset 32 */
static void deq_q6_k(const uint8_t *b, float *y) {
  const uint8_t *ql = b, *qh = b + 128;
  const int8_t *sc = (const int8_t *)(b + 192);
  float d = f16(b + 208);
  for (int n = 0; n < 2; n++, ql += 64, qh += 32, sc += 8, y += 128) {
    for (int l = 0; l < 32; l++) {
      int is = l / 16;
      int q1 = ((ql[l] & 0x0F) | ((qh[l] & 3) << 4)) - 32;
      int q2 = ((ql[l + 32] & 0x0F) | (((qh[l] >> 2) & 3) << 4)) - 32;
      int q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
      int q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
      y[l] = d * (float)sc[is] * (float)q1;
      y[l + 32] = d * (float)sc[is + 2] * (float)q2;
      y[l + 64] = d * (float)sc[is + 4] * (float)q3;
      y[l + 96] = d * (float)sc[is + 6] * (float)q4;
    }
  }
}

static block_fn block_decoder(uint32_t type) {
  switch (type) {
  case GLQ_GGML_F32: return deq_f32;
  case GLQ_GGML_F16: return deq_f16;
  case GLQ_GGML_BF16: return deq_bf16;
  case GLQ_GGML_Q4_0: return deq_q4_0;
  case GLQ_GGML_Q4_1: return deq_q4_1;
  case GLQ_GGML_Q5_0: return deq_q5_0;
  case GLQ_GGML_Q5_1: return deq_q5_1;
  case GLQ_GGML_Q8_0: return deq_q8_0;
  case GLQ_GGML_Q4_K: return deq_q4_k;
  case GLQ_GGML_Q5_K: return deq_q5_k;
  case GLQ_GGML_Q6_K: return deq_q6_k;
  default: return NULL;
  }
}

typedef struct {
  block_fn fn;
  const uint8_t *src;
  float *dst;
  int64_t block;
  size_t bytes;
} deq_job;

static void deq_range(void *ctx, int64_t begin, int64_t end) {
  const deq_job *j = ctx;
  for (int64_t i = begin; i < end; i++) j->fn(j->src + (size_t)i * j->bytes, j->dst + i * j->block);
}

int glq_ggml_dequantize(uint32_t type, const void *src, float *dst, int64_t n) {
  block_fn fn = block_decoder(type);
  if (!fn) {
    const char *name = glq_ggml_type_name(type);
    if (name) return glq_error(GLQ_EUNSUPPORTED, "dequantizing ggml type %s is not supported", name);
    return glq_error(GLQ_EUNSUPPORTED, "unknown ggml tensor type id %u", type);
  }
  deq_job j = {fn, src, dst, types[type].block, types[type].bytes};
  if (n < 0 || n % j.block != 0)
    return glq_error(GLQ_EINVAL, "dequantize %s: %lld elements is not a whole number of %lld-element blocks",
                     types[type].name, (long long)n, (long long)j.block);
  glq_parallel_for(n / j.block, 4096 / j.block + 1, deq_range, &j);
  return GLQ_OK;
}

typedef struct {
  const float *src;
  uint8_t *dst;
} q8_job;

static void q8_0_range(void *ctx, int64_t begin, int64_t end) {
  const float *src = ((const q8_job *)ctx)->src;
  uint8_t *dst = ((const q8_job *)ctx)->dst;
  for (int64_t i = begin; i < end; i++) {
    const float *x = src + i * 32;
    uint8_t *b = dst + (size_t)i * 34;
    float amax = 0.0f;
    for (int j = 0; j < 32; j++) amax = fmaxf(amax, fabsf(x[j]));
    const float d = amax / 127.0f, id = d != 0.0f ? 1.0f / d : 0.0f;
    uint16_t h = glq_f32_to_f16(d);
    memcpy(b, &h, 2);
    for (int j = 0; j < 32; j++) b[2 + j] = (uint8_t)(int8_t)roundf(x[j] * id);
  }
}

int glq_ggml_quantize_q8_0(const float *src, uint8_t *dst, int64_t n) {
  if (n < 0 || n % 32 != 0)
    return glq_error(GLQ_EINVAL, "quantize q8_0: %lld elements is not a multiple of 32", (long long)n);
  for (int64_t i = 0; i < n; i++) /* the int8 conversion of a NaN or inf would be undefined */
    if (!isfinite(src[i])) return glq_error(GLQ_EINVAL, "quantize q8_0: element %lld is not finite", (long long)i);
  q8_job j = {src, dst};
  glq_parallel_for(n / 32, 128, q8_0_range, &j);
  return GLQ_OK;
}
