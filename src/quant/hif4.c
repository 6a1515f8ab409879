/* hif4.c - HiF4 format core. The arithmetic follows the user's reference step by step; every
 * product below is exact in f32 (bf16 x bf16, or a power of two), so plain C reproduces it. */
#include "hif4.h"
#include "../core/pool.h"
#include <math.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>

#define BLK GLQ_HIF4_BLOCK
#define BF16_ONE_SEVENTH 0.142578125f /* bf16(1/7) */
#define MIN_CHUNK_UNITS 256           /* keep small tensors on one thread */

float glq_hif4_e6m2_value(uint8_t code) {
  if (code == GLQ_HIF4_NAN_CODE) return NAN;
  return ldexpf(1.0f + 0.25f * (float)(code & 3), (int)(code >> 2) - 48);
}

/* Round half away from zero of t >= 0 (exact: no t + 0.5 rounding). */
static inline int round_away(float t) {
  int i = (int)t;
  return i + (t - (float)i >= 0.5f);
}

/* E6M2 code of a bf16 scale sf >= 0, with the reference's clamping. */
static uint8_t e6m2_encode(float sf) {
  if (!(sf > 0.0f)) return 0;
  if (sf >= 65536.0f) return (63 << 2) | 2; /* e > 15, including inf */
  int ex;
  float fr = frexpf(sf, &ex); /* sf = fr 2^ex, fr in [0.5, 1) */
  int e = ex - 1, m = round_away((2.0f * fr - 1.0f) * 4.0f);
  if (m == 4) { e++; m = 0; }
  if (e < -48) { e = -48; m = 0; }
  if (e > 15) { e = 15; m = 2; }
  if (e == 15 && m == 3) m = 2; /* 0xFF is NaN */
  return (uint8_t)(((e + 48) << 2) | m);
}

void glq_hif4_unit_scales(const float *x, glq_hif4_scales *s) {
  float v16[16], v8[8], vmax = 0.0f;
  for (int j = 0; j < 16; j++)
    v16[j] = fmaxf(fmaxf(fabsf(x[4 * j]), fabsf(x[4 * j + 1])), fmaxf(fabsf(x[4 * j + 2]), fabsf(x[4 * j + 3])));
  for (int g = 0; g < 8; g++) {
    v8[g] = fmaxf(v16[2 * g], v16[2 * g + 1]);
    vmax = fmaxf(vmax, v8[g]);
  }
  s->e6m2 = e6m2_encode(glq_hif4_bf16(vmax * BF16_ONE_SEVENTH));
  s->rec = glq_hif4_bf16(1.0f / glq_hif4_e6m2_value(s->e6m2));
  s->e1_8 = 0;
  s->e1_16 = 0;
  for (int g = 0; g < 8; g++) s->e1_8 |= (uint8_t)((v8[g] * s->rec >= 4.0f) << g);
  for (int j = 0; j < 16; j++) {
    float h8 = (s->e1_8 >> (j / 2) & 1) ? 0.5f : 1.0f;
    s->e1_16 |= (uint16_t)((v16[j] * s->rec * h8 >= 2.0f) << j);
  }
}

/* S1P2 code of x given rec and the two halvings (the reference's order of products). */
static inline uint8_t round_code(float x, float rec, float h8, float h16) {
  float v = fminf(fmaxf(x * rec * h8 * h16, -1.75f), 1.75f);
  int mag = round_away(fabsf(v) * 4.0f);
  return (uint8_t)(mag | ((v < 0.0f && mag > 0) << 3));
}

uint8_t glq_hif4_round(float x, const glq_hif4_scales *s, int i) {
  return round_code(x, s->rec, (s->e1_8 >> (i / 8) & 1) ? 0.5f : 1.0f, (s->e1_16 >> (i / 4) & 1) ? 0.5f : 1.0f);
}

int glq_hif4_qvalue(uint8_t c, int i, uint8_t e1_8, uint16_t e1_16) {
  int q = (c & 7) << ((e1_8 >> (i / 8) & 1) + (e1_16 >> (i / 4) & 1));
  return (c & 8) ? -q : q;
}

/* Quantize one unit of 64 bf16-rounded values into its packed bytes. */
static void encode_unit(const float *x, uint8_t *e6m2, uint8_t *e1_8, uint8_t *e1_16, uint8_t *s1p2) {
  glq_hif4_scales s;
  glq_hif4_unit_scales(x, &s);
  float h[BLK];
  for (int i = 0; i < BLK; i++) h[i] = ((s.e1_8 >> (i / 8) & 1) ? 0.5f : 1.0f);
  uint8_t c[BLK];
  for (int i = 0; i < BLK; i++) c[i] = round_code(x[i], s.rec, h[i], (s.e1_16 >> (i / 4) & 1) ? 0.5f : 1.0f);
  for (int i = 0; i < BLK / 2; i++) s1p2[i] = (uint8_t)(c[2 * i] | c[2 * i + 1] << 4);
  *e6m2 = s.e6m2;
  *e1_8 = s.e1_8;
  e1_16[0] = (uint8_t)(s.e1_16 & 0xFF);
  e1_16[1] = (uint8_t)(s.e1_16 >> 8);
}

/* Load values [c0, c0+n) of a row as bf16-rounded f32 into x[0..64), zero-padded.
 * Returns the offset of the first non-finite value, or -1. */
static int load_unit(const void *row, glq_dtype dt, int64_t c0, int n, float *x) {
  int bad = -1;
  if (dt == GLQ_F32) {
    const float *r = (const float *)row + c0;
    for (int i = 0; i < n; i++) x[i] = glq_hif4_bf16(r[i]);
    for (int i = 0; i < n && bad < 0; i++)
      if (!isfinite(r[i])) bad = i;
  } else {
    const uint16_t *r = (const uint16_t *)row + c0;
    for (int i = 0; i < n; i++) x[i] = dt == GLQ_BF16 ? glq_bf16_to_f32(r[i]) : glq_hif4_bf16(glq_f16_to_f32(r[i]));
    for (int i = 0; i < n && bad < 0; i++) /* f16 values always fit bf16 */
      if (!isfinite(x[i])) bad = i;
  }
  for (int i = n; i < BLK; i++) x[i] = 0.0f;
  return bad;
}

typedef struct {
  const char *x;
  glq_dtype dt;
  int64_t k, nb, ld;
  size_t esz;
  unsigned flags;
  const glq_hif4_buf *out;
  atomic_int failed;
} encode_ctx;

static void encode_range(void *vctx, int64_t u0, int64_t u1) {
  encode_ctx *c = vctx;
  float x[BLK];
  for (int64_t u = u0; u < u1; u++) {
    int64_t r = u / c->nb, c0 = (u % c->nb) * BLK;
    int n = (int)(c->k - c0 < BLK ? c->k - c0 : BLK);
    uint8_t *e6m2 = c->out->e6m2 + u, *e1_8 = c->out->e1_8 + u, *e1_16 = c->out->e1_16 + 2 * u,
            *s1p2 = c->out->s1p2 + 32 * u;
    if (load_unit(c->x + (size_t)(r * c->ld) * c->esz, c->dt, c0, n, x) >= 0) {
      if (!(c->flags & GLQ_HIF4_NONFINITE_NAN)) {
        atomic_store(&c->failed, 1);
        return;
      }
      *e6m2 = GLQ_HIF4_NAN_CODE;
      *e1_8 = 0;
      memset(e1_16, 0, 2);
      memset(s1p2, 0, 32);
      continue;
    }
    encode_unit(x, e6m2, e1_8, e1_16, s1p2);
  }
}

int glq_hif4_encode(const void *x, glq_dtype dt, int64_t rows, int64_t k, int64_t ld, unsigned flags,
                    const glq_hif4_buf *out, int64_t *bad) {
  if (dt != GLQ_F32 && dt != GLQ_BF16 && dt != GLQ_F16)
    return glq_error(GLQ_EINVAL, "hif4 encode: dtype %s is not f32, bf16 or f16", glq_dtype_name(dt));
  encode_ctx c = {.x = x, .dt = dt, .k = k, .nb = glq_hif4_nblocks(k), .ld = ld, .esz = glq_dtype_size(dt),
                  .flags = flags, .out = out};
  atomic_init(&c.failed, 0);
  glq_parallel_for(rows * c.nb, MIN_CHUNK_UNITS, encode_range, &c);
  if (!atomic_load(&c.failed)) return GLQ_OK;
  /* Rare path: find the first offending value serially so the answer is deterministic. */
  float tmp[BLK];
  for (int64_t r = 0; r < rows; r++)
    for (int64_t c0 = 0; c0 < k; c0 += BLK) {
      int off = load_unit((const char *)x + (size_t)(r * ld) * c.esz, dt, c0, (int)(k - c0 < BLK ? k - c0 : BLK), tmp);
      if (off >= 0) {
        *bad = r * k + c0 + off;
        return GLQ_ENUMERIC;
      }
    }
  return GLQ_ENUMERIC; /* unreachable for a consistent input */
}

/* Decode one unit into y[0..n); 2^(a+b) = (1+a)(1+b) for bits a, b keeps the loop shift-free. */
static void decode_unit(uint8_t e6m2, uint8_t e1_8, const uint8_t *e1_16, const uint8_t *s1p2, int n, float *y) {
  float v[BLK], s = glq_hif4_e6m2_value(e6m2) * 0.25f;
  int c[BLK], m8[BLK], m16[BLK];
  uint32_t b16 = (uint32_t)(e1_16[0] | e1_16[1] << 8);
  for (int i = 0; i < BLK / 2; i++) {
    c[2 * i] = s1p2[i] & 15;
    c[2 * i + 1] = s1p2[i] >> 4;
  }
  for (int i = 0; i < BLK; i++) {
    m8[i] = 1 + (e1_8 >> (i / 8) & 1);
    m16[i] = 1 + (int)(b16 >> (i / 4) & 1);
  }
  for (int i = 0; i < BLK; i++) v[i] = s * (float)((c[i] & 7) * m8[i] * m16[i] * (1 - (c[i] >> 3) * 2));
  memcpy(y, v, (size_t)n * sizeof(float));
}

typedef struct {
  const glq_hif4_buf *in;
  int64_t k, nb, ld;
  float *y;
} decode_ctx;

static void decode_range(void *vctx, int64_t u0, int64_t u1) {
  decode_ctx *c = vctx;
  for (int64_t u = u0; u < u1; u++) {
    int64_t r = u / c->nb, c0 = (u % c->nb) * BLK;
    int n = (int)(c->k - c0 < BLK ? c->k - c0 : BLK);
    decode_unit(c->in->e6m2[u], c->in->e1_8[u], c->in->e1_16 + 2 * u, c->in->s1p2 + 32 * u, n, c->y + r * c->ld + c0);
  }
}

void glq_hif4_decode(const glq_hif4_buf *in, int64_t rows, int64_t k, float *y, int64_t ld) {
  decode_ctx c = {.in = in, .k = k, .nb = glq_hif4_nblocks(k), .ld = ld, .y = y};
  glq_parallel_for(rows * c.nb, MIN_CHUNK_UNITS, decode_range, &c);
}

/* "(2, 3, 96)" into buf. */
static const char *shape_str(int ndim, const int64_t *shape, char *buf, size_t n) {
  size_t len = (size_t)snprintf(buf, n, "(");
  for (int d = 0; d < ndim && len < n; d++)
    len += (size_t)snprintf(buf + len, n - len, "%s%lld", d ? ", " : "", (long long)shape[d]);
  if (len < n) snprintf(buf + len, n - len, ")");
  return buf;
}

static const int64_t field_last[2][3] = {{8, 16, 64}, {1, 2, 32}}; /* [packed][e1_8, e1_16, s1p2] */

int glq_hif4_fields_new(int ndim, const int64_t *shape, int packed, glq_hif4_fields *out) {
  memset(out, 0, sizeof *out);
  char sb[96];
  if (ndim < 1 || ndim > 3)
    return glq_error(ndim > 3 ? GLQ_EUNSUPPORTED : GLQ_EINVAL,
                     "hif4: a tensor of shape %s has %d dims; HiF4 handles 1 to 3 (reshape it first)",
                     shape_str(ndim, shape, sb, sizeof sb), ndim);
  int64_t sh[GLQ_MAX_DIMS];
  memcpy(sh, shape, (size_t)ndim * sizeof *sh);
  sh[ndim - 1] = glq_hif4_nblocks(shape[ndim - 1]);
  int st = glq_tensor_new(GLQ_U8, ndim, sh, &out->e6m2);
  glq_tensor *f[3] = {&out->e1_8, &out->e1_16, &out->s1p2};
  for (int i = 0; i < 3 && !st; i++) {
    sh[ndim] = field_last[packed != 0][i];
    st = glq_tensor_new(GLQ_U8, ndim + 1, sh, f[i]);
  }
  if (st) {
    glq_hif4_fields_release(out);
    return st;
  }
  out->ndim = ndim;
  memcpy(out->shape, shape, (size_t)ndim * sizeof *shape);
  return GLQ_OK;
}

int glq_hif4_fields_check(const glq_hif4_fields *p, int packed) {
  char sb[96], want[96];
  if (p->ndim < 1 || p->ndim > 3)
    return glq_error(GLQ_EINVAL, "hif4: original shape %s must have 1 to 3 dims", shape_str(p->ndim, p->shape, sb, sizeof sb));
  int64_t sh[GLQ_MAX_DIMS];
  memcpy(sh, p->shape, (size_t)p->ndim * sizeof *sh);
  sh[p->ndim - 1] = glq_hif4_nblocks(p->shape[p->ndim - 1]);
  const char *names[4] = {"e6m2", "e1_8", "e1_16", "s1p2"};
  const glq_tensor *f[4] = {&p->e6m2, &p->e1_8, &p->e1_16, &p->s1p2};
  for (int i = 0; i < 4; i++) {
    int nd = p->ndim + (i > 0);
    if (i > 0) sh[p->ndim] = field_last[packed != 0][i - 1];
    const glq_tensor *t = f[i];
    int ok = t->st && t->dtype == GLQ_U8 && t->ndim == nd && glq_tensor_is_contiguous(t);
    for (int d = 0; ok && d < nd; d++) ok = t->shape[d] == sh[d];
    if (!ok)
      return glq_error(GLQ_EINVAL, "hif4: field %s%s must be a contiguous u8 tensor of shape %s for original shape %s, got %s %s",
                       names[i], i > 0 && packed ? "_packed" : "", shape_str(nd, sh, want, sizeof want),
                       shape_str(p->ndim, p->shape, sb, sizeof sb), t->st ? glq_dtype_name(t->dtype) : "nothing",
                       t->st ? shape_str(t->ndim, t->shape, (char[96]){0}, 96) : "");
  }
  return GLQ_OK;
}

glq_hif4_buf glq_hif4_fields_buf(const glq_hif4_fields *p) {
  glq_hif4_buf b = {glq_tensor_data(&p->e6m2), glq_tensor_data(&p->e1_8), glq_tensor_data(&p->e1_16),
                    glq_tensor_data(&p->s1p2)};
  return b;
}

void glq_hif4_fields_release(glq_hif4_fields *p) {
  glq_tensor_release(&p->e6m2);
  glq_tensor_release(&p->e1_8);
  glq_tensor_release(&p->e1_16);
  glq_tensor_release(&p->s1p2);
  memset(p, 0, sizeof *p);
}

static int64_t rows_of(const glq_hif4_fields *p) {
  int64_t r = 1;
  for (int d = 0; d + 1 < p->ndim; d++) r *= p->shape[d];
  return r;
}

int glq_hif4_quantize(const glq_tensor *x, const char *name, unsigned flags, glq_hif4_fields *out) {
  memset(out, 0, sizeof *out);
  if (!name) name = "tensor";
  if (!x->st) return glq_error(GLQ_EINVAL, "hif4 quantize %s: empty tensor", name);
  if (x->dtype != GLQ_F32 && x->dtype != GLQ_BF16 && x->dtype != GLQ_F16)
    return glq_error(GLQ_EINVAL, "hif4 quantize %s: dtype %s is not f32, bf16 or f16", name, glq_dtype_name(x->dtype));
  int st = glq_hif4_fields_new(x->ndim, x->shape, 1, out);
  if (st) {
    glq_error_prefix("hif4 quantize %s", name);
    return st;
  }
  glq_tensor xc;
  if ((st = glq_tensor_contiguous(x, &xc))) {
    glq_hif4_fields_release(out);
    return st;
  }
  int64_t k = x->shape[x->ndim - 1], bad = 0;
  glq_hif4_buf b = glq_hif4_fields_buf(out);
  st = glq_hif4_encode(glq_tensor_data(&xc), xc.dtype, rows_of(out), k, k, flags, &b, &bad);
  if (st == GLQ_ENUMERIC) {
    int64_t idx[GLQ_MAX_DIMS], rem = bad;
    char cs[96], sb[96];
    for (int d = x->ndim - 1; d >= 0; d--) {
      idx[d] = rem % x->shape[d];
      rem /= x->shape[d];
    }
    double v = glq_tensor_get(&xc, idx);
    glq_error(GLQ_ENUMERIC, "hif4 quantize %s: non-finite value %g at flat index %lld, coordinates %s (0-based; shape %s)",
              name, v, (long long)bad, shape_str(x->ndim, idx, cs, sizeof cs), shape_str(x->ndim, x->shape, sb, sizeof sb));
  }
  glq_tensor_release(&xc);
  if (st) glq_hif4_fields_release(out);
  return st;
}

int glq_hif4_dequantize(const glq_hif4_fields *p, glq_tensor *out) {
  memset(out, 0, sizeof *out);
  int st = glq_hif4_fields_check(p, 1);
  if (st) return st;
  if ((st = glq_tensor_new(GLQ_F32, p->ndim, p->shape, out))) return st;
  glq_hif4_buf b = glq_hif4_fields_buf(p);
  int64_t k = p->shape[p->ndim - 1];
  glq_hif4_decode(&b, rows_of(p), k, glq_tensor_data(out), k);
  return GLQ_OK;
}

int glq_hif4_unpack(const glq_hif4_fields *p, glq_hif4_fields *out) {
  int st = glq_hif4_fields_check(p, 1);
  if (st || (st = glq_hif4_fields_new(p->ndim, p->shape, 0, out))) return st;
  glq_hif4_buf s = glq_hif4_fields_buf(p), d = glq_hif4_fields_buf(out);
  int64_t n = glq_tensor_numel(&p->e6m2);
  memcpy(d.e6m2, s.e6m2, (size_t)n);
  for (int64_t u = 0; u < n; u++) {
    for (int g = 0; g < 8; g++) d.e1_8[8 * u + g] = s.e1_8[u] >> g & 1;
    for (int j = 0; j < 16; j++) d.e1_16[16 * u + j] = s.e1_16[2 * u + j / 8] >> (j % 8) & 1;
    for (int i = 0; i < BLK; i++) d.s1p2[BLK * u + i] = s.s1p2[32 * u + i / 2] >> (4 * (i & 1)) & 15;
  }
  return GLQ_OK;
}

/* First out-of-range byte of a[0..n) (> max), or -1. */
static int64_t first_above(const uint8_t *a, int64_t n, int max) {
  for (int64_t i = 0; i < n; i++)
    if (a[i] > max) return i;
  return -1;
}

int glq_hif4_pack(const glq_hif4_fields *u, glq_hif4_fields *out) {
  int st = glq_hif4_fields_check(u, 0);
  if (st) return st;
  glq_hif4_buf s = glq_hif4_fields_buf(u);
  int64_t n = glq_tensor_numel(&u->e6m2), i8 = first_above(s.e1_8, 8 * n, 1), i16 = first_above(s.e1_16, 16 * n, 1),
          ic = first_above(s.s1p2, BLK * n, 15);
  if (i8 >= 0) return glq_error(GLQ_EINVAL, "hif4 pack: e1_8 flat index %lld holds %d, not a bit", (long long)i8, s.e1_8[i8]);
  if (i16 >= 0) return glq_error(GLQ_EINVAL, "hif4 pack: e1_16 flat index %lld holds %d, not a bit", (long long)i16, s.e1_16[i16]);
  if (ic >= 0) return glq_error(GLQ_EINVAL, "hif4 pack: s1p2 flat index %lld holds %d, not a 4-bit code", (long long)ic, s.s1p2[ic]);
  if ((st = glq_hif4_fields_new(u->ndim, u->shape, 1, out))) return st;
  glq_hif4_buf d = glq_hif4_fields_buf(out);
  memcpy(d.e6m2, s.e6m2, (size_t)n);
  for (int64_t v = 0; v < n; v++) {
    uint8_t b8 = 0, b16[2] = {0, 0};
    for (int g = 0; g < 8; g++) b8 |= (uint8_t)(s.e1_8[8 * v + g] << g);
    for (int j = 0; j < 16; j++) b16[j / 8] |= (uint8_t)(s.e1_16[16 * v + j] << (j % 8));
    d.e1_8[v] = b8;
    d.e1_16[2 * v] = b16[0];
    d.e1_16[2 * v + 1] = b16[1];
    for (int i = 0; i < 32; i++) d.s1p2[32 * v + i] = (uint8_t)(s.s1p2[BLK * v + 2 * i] | s.s1p2[BLK * v + 2 * i + 1] << 4);
  }
  return GLQ_OK;
}
