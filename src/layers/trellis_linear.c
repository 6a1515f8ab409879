/* trellis_linear.c - RHT + LDLQ with a trellis code, glq 0.8.16's trellis artifacts, and the CPU layer
 * (trellis_linear.h). */
#include "trellis_linear.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "../core/error.h"
#include "../core/pool.h"
#include "dense_linear.h"
#include "../quant/rht.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#include "../quant/trellis_avx2.h"
#define TRL_X86 1
#endif


int64_t glq_trellis_pad(int64_t d) { return (d + 31) / 32 * 32; }


void glq_trellis_artifacts_free(glq_trellis_artifacts *a) {
  glq_tensor *ts[] = {&a->packed, &a->su, &a->sv, &a->wscale, &a->tlut};
  for (int i = 0; i < 5; i++)
    if (ts[i]->st) glq_tensor_release(ts[i]);
}

/* the code the artifacts name (3inst, or hyb from their tlut) */
static int code_of(const glq_trellis_artifacts *a, glq_trellis_code *c) {
  if (a->variant == GLQ_TRELLIS_3INST) return glq_trellis_code_3inst(c, a->K);
  if (a->variant != GLQ_TRELLIS_HYB) return glq_error(GLQ_EINVAL, "trellis artifacts: unknown variant %d", (int)a->variant);
  if (!a->tlut.st || a->tlut.dtype != GLQ_F16 || glq_tensor_numel(&a->tlut) != 2 * GLQ_TRELLIS_HYB_TLUT ||
      !glq_tensor_is_contiguous(&a->tlut))
    return glq_error(GLQ_EINVAL, "trellis artifacts: tlut must be contiguous f16 (512, 2) for the hyb variant");
  float t[2 * GLQ_TRELLIS_HYB_TLUT];
  const uint16_t *h = glq_tensor_data(&a->tlut);
  for (int i = 0; i < 2 * GLQ_TRELLIS_HYB_TLUT; i++) t[i] = glq_f16_to_f32(h[i]);
  return glq_trellis_code_hyb(c, a->K, t);
}

static int check_artifacts(const glq_trellis_artifacts *a) {
  if (a->m < 1 || a->n < 1) return glq_error(GLQ_EINVAL, "trellis artifacts: bad shape %lld x %lld", (long long)a->m, (long long)a->n);
  if (a->K < 1 || a->K > 4) return glq_error(GLQ_EINVAL, "trellis artifacts: K must be 1..4, got %d", a->K);
  const int64_t mp = glq_trellis_pad(a->m), np = glq_trellis_pad(a->n);
  const glq_tensor *p = &a->packed;
  if (!p->st || p->dtype != GLQ_I16 || p->ndim != 2 || p->shape[0] != (mp / 16) * (np / 16) || p->shape[1] != 16 * a->K ||
      !glq_tensor_is_contiguous(p))
    return glq_error(GLQ_EINVAL, "trellis artifacts: trellis_packed must be contiguous i16 (%lld, %d)",
                     (long long)((mp / 16) * (np / 16)), 16 * a->K);
  if (!a->su.st || a->su.dtype != GLQ_F16 || glq_tensor_numel(&a->su) != mp || !glq_tensor_is_contiguous(&a->su))
    return glq_error(GLQ_EINVAL, "trellis artifacts: SU must be contiguous f16 (%lld)", (long long)mp);
  if (!a->sv.st || a->sv.dtype != GLQ_F16 || glq_tensor_numel(&a->sv) != np || !glq_tensor_is_contiguous(&a->sv))
    return glq_error(GLQ_EINVAL, "trellis artifacts: SV must be contiguous f16 (%lld)", (long long)np);
  if (!a->wscale.st || a->wscale.dtype != GLQ_F32 || glq_tensor_numel(&a->wscale) != 1)
    return glq_error(GLQ_EINVAL, "trellis artifacts: Wscale must be an f32 scalar");
  return 0;
}

int glq_trellis_decode_rotated(const glq_trellis_artifacts *a, float *wt) {
  int rc = check_artifacts(a);
  if (rc) return rc;
  glq_trellis_code c;
  if ((rc = code_of(a, &c))) return rc;
  const int64_t mp = glq_trellis_pad(a->m), np = glq_trellis_pad(a->n);
  rc = glq_trellis_decode_layer(&c, glq_tensor_data(&a->packed), mp, np, 1, wt);
  glq_trellis_code_free(&c);
  const float ws = *(const float *)glq_tensor_data(&a->wscale);
  for (int64_t i = 0; !rc && i < mp * np; i++) wt[i] *= ws;
  return rc;
}

static void signs_f32(const glq_tensor *t, float *out) {
  const uint16_t *s = glq_tensor_data(t);
  for (int64_t i = 0; i < glq_tensor_numel(t); i++) out[i] = glq_f16_to_f32(s[i]);
}

/* w (m x n) = crop of the inverse RHT of wt (mp x np) */
static int inverse_crop(const float *wt, int64_t mp, int64_t np, int64_t m, int64_t n, const float *su, const float *sv,
                        glq_hadamard_kind kind, float *w) {
  float *full = (m == mp && n == np) ? w : malloc((size_t)(mp * np) * sizeof *full);
  if (!full) return glq_error(GLQ_ENOMEM, "trellis: out of memory (%lld x %lld)", (long long)mp, (long long)np);
  int rc = glq_rht_weight_inverse(wt, mp, np, su, sv, kind, full);
  if (full != w) {
    for (int64_t i = 0; !rc && i < m; i++) memcpy(w + i * n, full + i * np, (size_t)n * sizeof *w);
    free(full);
  }
  return rc;
}

int glq_trellis_dequantize_linear(const glq_trellis_artifacts *a, float *w) {
  int rc = check_artifacts(a);
  if (rc) return rc;
  const int64_t mp = glq_trellis_pad(a->m), np = glq_trellis_pad(a->n);
  float *wt = malloc((size_t)(mp * np) * sizeof *wt), *su = malloc((size_t)mp * sizeof *su), *sv = malloc((size_t)np * sizeof *sv);
  rc = (wt && su && sv) ? 0 : glq_error(GLQ_ENOMEM, "trellis dequantize: out of memory (%lld x %lld)", (long long)mp, (long long)np);
  if (!rc) rc = glq_trellis_decode_rotated(a, wt);
  if (!rc) {
    signs_f32(&a->su, su);
    signs_f32(&a->sv, sv);
    rc = inverse_crop(wt, mp, np, a->m, a->n, su, sv, a->transform, w);
  }
  free(wt), free(su), free(sv);
  return rc;
}

/* ---- quantization: the LDLQ codec seam (codec.h) with one tail-biting Viterbi per 16x16 tile ---- */

static int codec_quantize(const glq_codec *cd, int64_t ntiles, const float *t, float *q, int32_t *codes) {
  const glq_trellis_code *c = cd->ctx;
  uint16_t *st = malloc(sizeof(uint16_t) * (size_t)(ntiles * cd->ncodes));
  if (!st) return glq_error(GLQ_ENOMEM, "trellis: out of memory for %lld tiles", (long long)ntiles);
  int rc = glq_trellis_quantize_block(c, t, ntiles * 16, 16, q, 16, st);
  for (int64_t i = 0; !rc && i < ntiles * cd->ncodes; i++) codes[i] = st[i];
  free(st);
  return rc;
}

static int codec_decode(const glq_codec *cd, int64_t ntiles, const int32_t *codes, float *q) {
  const glq_trellis_code *c = cd->ctx;
  uint16_t st[GLQ_TRELLIS_TILE];
  for (int64_t t = 0; t < ntiles; t++) {
    for (int i = 0; i < cd->ncodes; i++) {
      int32_t v = codes[t * cd->ncodes + i];
      if (v < 0 || v >= (1 << c->L)) return glq_error(GLQ_EINVAL, "trellis: code %d of tile %lld is not a state", (int)v, (long long)t);
      st[i] = (uint16_t)v;
    }
    glq_trellis_decode_tile(c, st, q + t * GLQ_TRELLIS_TILE);
  }
  return 0;
}

void glq_trellis_codec(const glq_trellis_code *c, glq_codec *out) {
  memset(out, 0, sizeof *out);
  out->name = "trellis";
  out->codebook = GLQ_CODEBOOK_CUSTOM;
  out->cols = GLQ_TRELLIS_TD;
  out->rows = GLQ_TRELLIS_TD;
  out->ncodes = GLQ_TRELLIS_TILE / c->V;
  out->bits = c->K;
  out->wscale_default = c->opt_scale; /* glq's Wscale rule: rms(W̃) / (0.9 · rms of the code's values) */
  out->ctx = c;
  out->quantize = codec_quantize;
  out->decode = codec_decode;
}

#define ALLOC(p, count) (((p) = malloc((size_t)(count) * sizeof *(p))) == NULL)

/* tr(dw·H·dwᵀ) for dw (rows x n) and h (n x n) in f64 (statistics of padded layers only) */
static double proxy(const float *dw, int64_t rows, int64_t n, const double *h) {
  double s = 0;
  for (int64_t i = 0; i < rows; i++) {
    const float *d = dw + i * n;
    for (int64_t a = 0; a < n; a++) {
      double u = 0;
      for (int64_t b = 0; b < n; b++) u += h[a * n + b] * d[b];
      s += d[a] * u;
    }
  }
  return s;
}

typedef struct {
  float *wpad, *what;
  double *hpad;
  uint16_t *states;
  glq_quant_artifacts qa;
} work;

static int quantize(const float *w, int64_t m, int64_t n, const double *h, const glq_quant_opts *o, work *x,
                    const glq_trellis_code *c, glq_trellis_artifacts *out, glq_quant_stats *st) {
  const int64_t mp = glq_trellis_pad(m), np = glq_trellis_pad(n), tn = np / 16, nt = (mp / 16) * tn;
  const int steps = GLQ_TRELLIS_TILE / c->V, padded = mp != m || np != n;
  int rc = 0;
  if (padded) { /* zero rows and columns (no input there: zero Hessian), damping as for the m x n layer */
    if (ALLOC(x->wpad, mp * np) || (h && ALLOC(x->hpad, np * np)))
      return glq_error(GLQ_ENOMEM, "out of memory for a %lld x %lld trellis layer", (long long)m, (long long)n);
    memset(x->wpad, 0, (size_t)(mp * np) * sizeof(float));
    for (int64_t i = 0; i < m; i++) memcpy(x->wpad + i * np, w + i * n, (size_t)n * sizeof(float));
    if (h) {
      memset(x->hpad, 0, (size_t)(np * np) * sizeof(double));
      for (int64_t i = 0; i < n; i++) memcpy(x->hpad + i * np, h + i * n, (size_t)n * sizeof(double));
    }
  }
  glq_codec cd;
  glq_trellis_codec(c, &cd);
  glq_quant_opts o2 = *o;
  o2.codec = &cd;
  o2.bits = c->K;
  o2.tune_iters = 0;
  o2.backend = NULL;
  if (padded && h) o2.damp = o->damp * (double)np / (double)n; /* the same absolute damping as the unpadded H */
  if ((rc = glq_quantize_linear(padded ? x->wpad : w, mp, np, padded ? x->hpad : h, &o2, &x->qa, st))) return rc;
  /* the i32 codes ((mp/16) x (np/16) x 256/V, tile order) -> glq's packed kernel layout */
  if (ALLOC(x->states, nt * steps)) return glq_error(GLQ_ENOMEM, "out of memory for the trellis states");
  const int32_t *codes = glq_tensor_data(&x->qa.codes);
  for (int64_t i = 0; i < nt * steps; i++) x->states[i] = (uint16_t)codes[i];
  memset(out, 0, sizeof *out);
  out->variant = c->variant, out->K = c->K, out->m = m, out->n = n, out->transform = o->transform;
  int64_t shp[2] = {nt, 16 * c->K};
  if ((rc = glq_tensor_new(GLQ_I16, 2, shp, &out->packed)) ||
      (rc = glq_trellis_pack_layer(c, x->states, mp, np, 1, glq_tensor_data(&out->packed))))
    return rc;
  out->su = x->qa.su, out->sv = x->qa.sv, out->wscale = x->qa.wscale; /* moved */
  memset(&x->qa.su, 0, sizeof x->qa.su), memset(&x->qa.sv, 0, sizeof x->qa.sv), memset(&x->qa.wscale, 0, sizeof x->qa.wscale);
  if (!st) return 0;
  st->bpw = (16.0 * (double)(nt * 16 * c->K) + 32.0) / (double)(m * n);
  if (padded) { /* SQNR and the original-domain proxy loss of the m x n layer itself */
    if (ALLOC(x->what, m * n)) return glq_error(GLQ_ENOMEM, "out of memory for statistics");
    if ((rc = glq_trellis_dequantize_linear(out, x->what))) return rc;
    double e2 = 0, w2 = 0;
    for (int64_t i = 0; i < m * n; i++) {
      double d = (double)w[i] - x->what[i];
      e2 += d * d, w2 += (double)w[i] * w[i];
      x->what[i] = (float)d;
    }
    st->sqnr_db = e2 > 0 ? 10 * log10(w2 / e2) : INFINITY;
    if (h) {
      double mu = 0;
      for (int64_t i = 0; i < n; i++) mu += h[i * n + i];
      mu = o->damp * mu / (double)n;
      double px = proxy(x->what, m, n, h), e = 0;
      for (int64_t i = 0; i < m * n; i++) e += (double)x->what[i] * x->what[i];
      st->proxy_loss_orig = (px + mu * e) / (double)m; /* with damp #1, as ldlq.h defines it */
    } else {
      double e = 0;
      for (int64_t i = 0; i < m * n; i++) e += (double)x->what[i] * x->what[i];
      st->proxy_loss_orig = e * (1 + o->damp) / (double)m;
    }
  }
  return 0;
}

int glq_trellis_quantize_linear(const float *w, int64_t m, int64_t n, const double *h, const glq_quant_opts *o,
                                glq_trellis_artifacts *out, glq_quant_stats *stats) {
  work x;
  memset(&x, 0, sizeof x);
  memset(out, 0, sizeof *out);
  glq_trellis_code c;
  int rc = m < 1 || n < 1 ? glq_error(GLQ_EINVAL, "weight shape %lld x %lld is empty", (long long)m, (long long)n)
           : o->bits < 2 || o->bits > 4 ? glq_error(GLQ_EINVAL, "trellis: bits must be 2, 3 or 4, got %d", o->bits)
                                        : glq_trellis_code_3inst(&c, o->bits);
  if (!rc && o->backend && o->backend->trellis_viterbi) /* the tiles' searches elsewhere (the GPU) */
    c.viterbi_batch = o->backend->trellis_viterbi, c.viterbi_ctx = o->backend->ctx;
  if (!rc) {
    rc = quantize(w, m, n, h, o, &x, &c, out, stats);
    glq_trellis_code_free(&c);
  }
  free(x.wpad), free(x.what), free(x.hpad), free(x.states);
  glq_quant_artifacts_free(&x.qa);
  if (rc) {
    glq_trellis_artifacts_free(out);
    if (!strstr(glq_errmsg(), "quantize_linear")) glq_error_prefix("quantize_linear %s (trellis)", o->name && *o->name ? o->name : "(unnamed)");
  }
  return rc;
}

/* ---- the CPU layer ----
 * forward, by batch (every output a fixed-order sum computed by one thread: identical for any thread count):
 *  - B <= SMALL_B, 3inst code, AVX2 + F16C (GLQ_NO_AVX2=1 turns it off): fused decode and dot. A tile's sequence
 *    position 8L + j (lane L = 4g + t of glq's MMA order) is tile element (g + 8·(j>>1 & 1), 2t + (j & 1) + 8·(j>>2)),
 *    so the 8 states of a lane come from one 64-bit window of the tile's bitstream, decode to 8 floats with
 *    vector integer ops (glq_trellis_3inst_avx2: the 3inst fp16 sum, rounded as glq_trellis_3inst does), and multiply x
 *    permuted once per forward into that order (xp); accumulators per lane, summed per row at the end.
 *  - B > SMALL_B: each row tile decoded to f32 (wscale applied) and multiplied by glq_gemm_nt.
 *  - otherwise (hyb codes, no AVX2): the decoded tile times x, scalar. */

#define SMALL_B 8
#define STRIP_TILES 16 /* row tiles decoded at once for B > SMALL_B */

typedef struct {
  glq_linear base;
  int64_t mp, np, wpt;
  glq_trellis_code code;
  uint16_t *words;         /* natural layout: tile t's 16K words at t·wpt (+16 bytes of padding: see tile_window) */
  float wscale;
  float *su, *sv, *bias;
  const glq_hadamard *hm, *hn;
  glq_hadamard_kind transform;
  float *xt, *yt, *xp;     /* scratch: rows x np, rows x mp, rows x 2np (x in lane order) */
  float *strip;            /* STRIP_TILES·16 x np (B > SMALL_B) */
  int64_t rows_cap;
  int avx2;
  size_t stored;
} trlin;

typedef struct {
  const trlin *l;
  int64_t B, rt0;
} fw_job;

/* row tiles [r0, r1): yt[b][rows of the tile] = sum over column tiles (ascending) of tile · xt[b] */
static void fw_range(void *ctx, int64_t r0, int64_t r1) {
  const fw_job *j = ctx;
  const trlin *l = j->l;
  const int steps = GLQ_TRELLIS_TILE / l->code.V;
  const int64_t tn = l->np / 16;
  uint16_t st[GLQ_TRELLIS_TILE];
  float tile[GLQ_TRELLIS_TILE];
  for (int64_t rt = r0; rt < r1; rt++) {
    for (int64_t b = 0; b < j->B; b++) memset(l->yt + b * l->mp + rt * 16, 0, 16 * sizeof(float));
    for (int64_t ct = 0; ct < tn; ct++) {
      glq_trellis_unpack(&l->code, l->words + (rt * tn + ct) * l->wpt, steps, st);
      glq_trellis_decode_tile(&l->code, st, tile);
      for (int64_t b = 0; b < j->B; b++) {
        const float *xb = l->xt + b * l->np + ct * 16;
        float *yb = l->yt + b * l->mp + rt * 16;
        for (int r = 0; r < 16; r++) {
          float acc = 0;
          for (int cc = 0; cc < 16; cc++) acc += tile[r * 16 + cc] * xb[cc];
          yb[r] += acc;
        }
      }
    }
    for (int64_t b = 0; b < j->B; b++)
      for (int r = 0; r < 16; r++) l->yt[b * l->mp + rt * 16 + r] *= l->wscale;
  }
}

/* row tiles rt0 + [r0, r1) decoded into the strip (wscale applied), then yt[b][their rows] = strip · xt[b] */
static void strip_range(void *ctx, int64_t r0, int64_t r1) {
  const fw_job *j = ctx;
  const trlin *l = j->l;
  const int steps = GLQ_TRELLIS_TILE / l->code.V;
  const int64_t tn = l->np / 16;
  uint16_t st[GLQ_TRELLIS_TILE];
  float tile[GLQ_TRELLIS_TILE];
  for (int64_t r = r0; r < r1; r++) {
    const int64_t rt = j->rt0 + r;
    float *dst = l->strip + r * 16 * l->np;
    for (int64_t ct = 0; ct < tn; ct++) {
      glq_trellis_unpack(&l->code, l->words + (rt * tn + ct) * l->wpt, steps, st);
      glq_trellis_decode_tile(&l->code, st, tile);
      for (int rr = 0; rr < 16; rr++)
        for (int cc = 0; cc < 16; cc++) dst[rr * l->np + ct * 16 + cc] = tile[rr * 16 + cc] * l->wscale;
    }
    glq_gemm_nt(l->xt, l->np, j->B, dst, GLQ_F32, l->np, 16, l->np, NULL, l->yt + rt * 16, l->mp);
  }
}

#ifdef TRL_X86
#define TRL_AVX2 __attribute__((target("avx2,fma,f16c")))

/* Bits 8·K·lane .. +63 of tile `tile`'s bitstream (MSB first) as a 64-bit value; the stream wraps for lane 31. The
 * stream is the tile's uint16 words, so stream byte b is memory byte b ^ 1: lanes 0..30 load 16 bytes from the
 * even byte below and reorder them with one shuffle (this reads up to 15 bytes past the tile: the words array
 * is padded). */
TRL_AVX2 static inline uint64_t tile_window(const uint8_t *tile, int K, int lane) {
  const int b = K * lane;
  if (lane == 31) {
    uint64_t v = 0;
    for (int i = 0; i < 8; i++) v = v << 8 | tile[((b + i) % (32 * K)) ^ 1];
    return v;
  }
  /* out byte 7 - i = in byte ((b & 1) + i) ^ 1 */
  static const int8_t shuf[2][16] = {{6, 7, 4, 5, 2, 3, 0, 1, -1, -1, -1, -1, -1, -1, -1, -1},
                                     {9, 6, 7, 4, 5, 2, 3, 0, -1, -1, -1, -1, -1, -1, -1, -1}};
  const __m128i v = _mm_loadu_si128((const __m128i *)(tile + (b & ~1)));
  return (uint64_t)_mm_cvtsi128_si64(_mm_shuffle_epi8(v, _mm_loadu_si128((const __m128i *)shuf[b & 1])));
}

/* the 8 states (X >> (48 - jK)) & 0xFFFF, j = 0..7 */
TRL_AVX2 static inline __m256i lane_states(uint64_t X, __m256i sh_lo, __m256i sh_hi) {
  const __m256i xv = _mm256_set1_epi64x((long long)X), idx = _mm256_setr_epi32(0, 2, 4, 6, 0, 2, 4, 6);
  const __m256i lo = _mm256_permutevar8x32_epi32(_mm256_srlv_epi64(xv, sh_lo), idx);
  const __m256i hi = _mm256_permutevar8x32_epi32(_mm256_srlv_epi64(xv, sh_hi), idx);
  return _mm256_and_si256(_mm256_blend_epi32(lo, hi, 0xF0), _mm256_set1_epi32(0xFFFF));
}

/* K = 2: a lane's 8 states lie in the 30 bits from its word w[lane] on, so they come from one 32-bit window:
 * (W >> (16 - 2j)) & 0xFFFF with W = w[lane] << 16 | w[lane + 1] (the stream wraps for lane 31) */
TRL_AVX2 static inline __m256i lane_states_k2(const uint16_t *w, int lane) {
  const uint32_t W = (uint32_t)w[lane] << 16 | w[(lane + 1) & 31];
  return _mm256_and_si256(_mm256_srlv_epi32(_mm256_set1_epi32((int)W), _mm256_setr_epi32(16, 14, 12, 10, 8, 6, 4, 2)),
                          _mm256_set1_epi32(0xFFFF));
}

/* xp[b][ct·32 + 8t + j] = x[b][16ct + 2t + (j & 1) + 8·(j >> 2)] (the lane order of a tile's columns) */
static void permute_x(const trlin *l, int64_t B) {
  for (int64_t b = 0; b < B; b++)
    for (int64_t ct = 0; ct < l->np / 16; ct++) {
      const float *x = l->xt + b * l->np + ct * 16;
      float *d = l->xp + b * 2 * l->np + ct * 32;
      for (int t = 0; t < 4; t++)
        for (int jj = 0; jj < 8; jj++) d[8 * t + jj] = x[2 * t + (jj & 1) + 8 * (jj >> 2)];
    }
}

/* Lane blocks: a row tile's 32 lanes run in blocks of `lanes` over all its column tiles, so a block's accumulators
 * stay in registers at batch 1 (blocks of 8; of 4 when K != 2, where the 64-bit window's constants would push 8
 * accumulators out); each lane is still one FMA chain over the column tiles in ascending order. */
#define TR_LANES 8

/* row tiles [r0, r1) at batch B; k2: the code has K = 2; lanes: 4 or 8 (constants after inlining) */
__attribute__((target("avx2,fma,f16c"), always_inline)) static inline void fw_rows_avx2(const fw_job *j, int64_t r0, int64_t r1,
                                                                                          const int B, const int k2,
                                                                                          const int lanes) {
  const trlin *l = j->l;
  const int K = l->code.K;
  const int64_t tn = l->np / 16;
  const __m256i sh_lo = _mm256_setr_epi64x(48, 48 - K, 48 - 2 * K, 48 - 3 * K);
  const __m256i sh_hi = _mm256_setr_epi64x(48 - 4 * K, 48 - 5 * K, 48 - 6 * K, 48 - 7 * K);
  __m256 acc[SMALL_B][TR_LANES];
  for (int64_t rt = r0; rt < r1; rt++)
    for (int l0 = 0; l0 < 32; l0 += lanes) {
      for (int b = 0; b < B; b++)
#pragma GCC unroll 8
        for (int i = 0; i < lanes; i++) acc[b][i] = _mm256_setzero_ps();
      for (int64_t ct = 0; ct < tn; ct++) {
        const uint8_t *tile = (const uint8_t *)(l->words + (rt * tn + ct) * l->wpt);
        const float *xp = l->xp + ct * 32;
#pragma GCC unroll 8
        for (int i = 0; i < lanes; i++) {
          const int ln = l0 + i;
          const __m256 v = glq_trellis_3inst_avx2(k2 ? lane_states_k2((const uint16_t *)tile, ln)
                                                     : lane_states(tile_window(tile, K, ln), sh_lo, sh_hi));
          for (int b = 0; b < B; b++) acc[b][i] = _mm256_fmadd_ps(v, _mm256_loadu_ps(xp + b * 2 * l->np + 8 * (ln & 3)), acc[b][i]);
        }
      }
      for (int b = 0; b < B; b++) {
        float *y = l->yt + b * l->mp + rt * 16;
        for (int g = l0 / 4; g < (l0 + lanes) / 4; g++) {
          float s0 = 0, s1 = 0; /* rows g and g + 8: lanes 4g .. 4g+3, elements {0,1,4,5} and {2,3,6,7} */
          for (int t = 0; t < 4; t++) {
            float a[8];
            _mm256_storeu_ps(a, acc[b][4 * g + t - l0]);
            s0 += (a[0] + a[1]) + (a[4] + a[5]);
            s1 += (a[2] + a[3]) + (a[6] + a[7]);
          }
          y[g] = s0 * l->wscale;
          y[g + 8] = s1 * l->wscale;
        }
      }
    }
}

TRL_AVX2 static void fw_range_avx2(void *ctx, int64_t r0, int64_t r1) {
  const fw_job *j = ctx;
  const int k2 = j->l->code.K == 2;
  if (j->B == 1 && k2) fw_rows_avx2(j, r0, r1, 1, 1, TR_LANES);
  else if (j->B == 1) fw_rows_avx2(j, r0, r1, 1, 0, 4);
  else fw_rows_avx2(j, r0, r1, (int)j->B, k2, TR_LANES);
}
#endif

static int tr_forward(glq_linear *base, const float *x, int64_t B, float *y) {
  trlin *l = (trlin *)base;
  const int64_t m = base->out, n = base->in;
  if (B < 0) return glq_error(GLQ_EINVAL, "trellis linear forward: batch %lld is negative", (long long)B);
  if (B == 0) return GLQ_OK;
  if (B > l->rows_cap) {
    float *xt = realloc(l->xt, (size_t)(B * l->np) * sizeof(float));
    if (xt) l->xt = xt;
    float *yt = xt ? realloc(l->yt, (size_t)(B * l->mp) * sizeof(float)) : NULL;
    if (yt) l->yt = yt;
    float *xp = yt ? realloc(l->xp, (size_t)(B * 2 * l->np) * sizeof(float)) : NULL;
    if (xp) l->xp = xp;
    if (!xt || !yt || !xp) return glq_error(GLQ_ENOMEM, "trellis linear: no memory for %lld input rows", (long long)B);
    l->rows_cap = B;
  }
  for (int64_t b = 0; b < B; b++) {
    float *xt = l->xt + b * l->np;
    for (int64_t k = 0; k < n; k++) xt[k] = x[b * n + k] * l->sv[k];
    for (int64_t k = n; k < l->np; k++) xt[k] = 0;
  }
  glq_hadamard_apply(l->hn, l->xt, B, 0);
  fw_job j = {l, B, 0};
  if (B > SMALL_B) {
    if (!l->strip && !(l->strip = malloc((size_t)(STRIP_TILES * 16 * l->np) * sizeof(float))))
      return glq_error(GLQ_ENOMEM, "trellis linear: no memory for a %d x %lld strip", STRIP_TILES * 16, (long long)l->np);
    for (j.rt0 = 0; j.rt0 < l->mp / 16; j.rt0 += STRIP_TILES) {
      const int64_t n = l->mp / 16 - j.rt0 < STRIP_TILES ? l->mp / 16 - j.rt0 : STRIP_TILES;
      glq_parallel_for(n, 1, strip_range, &j);
    }
  }
#ifdef TRL_X86
  else if (l->avx2) {
    permute_x(l, B);
    glq_parallel_for(l->mp / 16, 1, fw_range_avx2, &j);
  }
#endif
  else {
    glq_parallel_for(l->mp / 16, 1, fw_range, &j);
  }
  glq_hadamard_apply(l->hm, l->yt, B, 1);
  for (int64_t b = 0; b < B; b++)
    for (int64_t i = 0; i < m; i++) y[b * m + i] = l->yt[b * l->mp + i] * l->su[i] + (l->bias ? l->bias[i] : 0.0f);
  return GLQ_OK;
}

typedef struct {
  const trlin *l;
  float *wt;
} dq_job;

static void dq_range(void *ctx, int64_t t0, int64_t t1) {
  const dq_job *j = ctx;
  const trlin *l = j->l;
  const int steps = GLQ_TRELLIS_TILE / l->code.V;
  const int64_t tn = l->np / 16;
  uint16_t st[GLQ_TRELLIS_TILE];
  float tile[GLQ_TRELLIS_TILE];
  for (int64_t t = t0; t < t1; t++) {
    glq_trellis_unpack(&l->code, l->words + t * l->wpt, steps, st);
    glq_trellis_decode_tile(&l->code, st, tile);
    float *dst = j->wt + (t / tn) * 16 * l->np + (t % tn) * 16;
    for (int r = 0; r < 16; r++)
      for (int cc = 0; cc < 16; cc++) dst[r * l->np + cc] = tile[r * 16 + cc] * l->wscale;
  }
}

static int tr_dequantize(const glq_linear *base, float *w) {
  const trlin *l = (const trlin *)base;
  float *wt = malloc((size_t)(l->mp * l->np) * sizeof *wt);
  if (!wt) return glq_error(GLQ_ENOMEM, "trellis linear dequantize: no memory for %lld x %lld", (long long)l->mp, (long long)l->np);
  dq_job j = {l, wt};
  glq_parallel_for((l->mp / 16) * (l->np / 16), 16, dq_range, &j);
  int rc = inverse_crop(wt, l->mp, l->np, base->out, base->in, l->su, l->sv, l->transform, w);
  free(wt);
  return rc;
}

static size_t tr_stored_bytes(const glq_linear *base) { return ((const trlin *)base)->stored; }

static void tr_destroy(glq_linear *base) {
  trlin *l = (trlin *)base;
  if (!l) return;
  glq_trellis_code_free(&l->code);
  free(l->words), free(l->su), free(l->sv), free(l->bias), free(l->xt), free(l->yt), free(l->xp), free(l->strip);
  free(l);
}

static const glq_linear_vt trellis_vt = {"trellis", tr_forward, tr_dequantize, tr_stored_bytes, tr_destroy};

int glq_trellis_linear_desc_of(const glq_linear *base, glq_trellis_linear_desc *d) {
  if (!base || base->vt != &trellis_vt) return glq_error(GLQ_EINVAL, "trellis linear: not a trellis layer");
  const trlin *l = (const trlin *)base;
  memset(d, 0, sizeof *d);
  d->variant = l->code.variant, d->K = l->code.K;
  d->m = base->out, d->n = base->in, d->mp = l->mp, d->np = l->np;
  d->words = l->words, d->wscale = l->wscale;
  d->su = l->su, d->sv = l->sv, d->bias = l->bias;
  d->transform = l->transform;
  return GLQ_OK;
}

int glq_trellis_linear_new(const glq_trellis_artifacts *a, const float *bias, glq_linear **out) {
  *out = NULL;
  int rc = check_artifacts(a);
  if (rc) return rc;
  trlin *l = calloc(1, sizeof *l);
  if (!l) return glq_error(GLQ_ENOMEM, "trellis linear: out of memory");
  l->base.vt = &trellis_vt;
  l->base.out = a->m, l->base.in = a->n;
  l->mp = glq_trellis_pad(a->m), l->np = glq_trellis_pad(a->n);
  l->transform = a->transform;
  l->wscale = *(const float *)glq_tensor_data(&a->wscale);
  if ((rc = code_of(a, &l->code))) {
    free(l);
    return rc;
  }
  l->wpt = glq_trellis_packed_words(&l->code, GLQ_TRELLIS_TILE / l->code.V);
  const int64_t nw = (l->mp / 16) * (l->np / 16) * l->wpt;
  l->words = malloc((size_t)nw * sizeof(uint16_t) + 16); /* + the over-read of tile_window */
  l->su = malloc((size_t)l->mp * sizeof(float));
  l->sv = malloc((size_t)l->np * sizeof(float));
  if (bias) l->bias = malloc((size_t)a->m * sizeof(float));
  if (!l->words || !l->su || !l->sv || (bias && !l->bias)) rc = glq_error(GLQ_ENOMEM, "trellis linear: out of memory");
  if (!rc) rc = glq_trellis_kernel_flip(glq_tensor_data(&a->packed), (uint8_t *)l->words, l->mp, l->np, a->K, 0);
  if (!rc) rc = glq_hadamard_plan(l->mp, l->transform, &l->hm);
  if (!rc) rc = glq_hadamard_plan(l->np, l->transform, &l->hn);
  if (rc) {
    tr_destroy(&l->base);
    return rc;
  }
  signs_f32(&a->su, l->su);
  signs_f32(&a->sv, l->sv);
#ifdef TRL_X86
  const char *no = getenv("GLQ_NO_AVX2");
  l->avx2 = a->variant == GLQ_TRELLIS_3INST && __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
            __builtin_cpu_supports("f16c") && !(no && *no && *no != '0');
#endif
  if (bias) {
    memcpy(l->bias, bias, (size_t)a->m * sizeof(float));
    l->base.bias = l->bias;
  }
  l->stored = (size_t)nw * 2 + (size_t)(l->mp + l->np) * 2 + 4 + (a->variant == GLQ_TRELLIS_HYB ? 2048 : 0) +
              (bias ? (size_t)a->m * 2 : 0);
  *out = &l->base;
  return GLQ_OK;
}
