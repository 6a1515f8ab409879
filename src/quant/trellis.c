/* trellis.c - QTIP bitshift-trellis codes: decodes, Viterbi encoder, glq 0.8.16 bit/byte layout (trellis.h).
 * The Viterbi's arithmetic is plain f32 subtract/multiply/add/compare (no fused multiply-add: the AVX2 path
 * is compiled for "avx2" only, never "fma"), so the SSE4 and AVX2 paths produce the same bytes. */
#include "trellis.h"
#include <immintrin.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "../core/error.h"
#include "../core/pool.h"
#include "../core/tensor.h"

/* perm[i] = the natural index of sequence position i: arange(256).reshape(2,8,2,4,2).permute(1,3,2,0,4) */
const uint16_t glq_trellis_perm[GLQ_TRELLIS_TILE] = {
#define P5(a1, a3, a2, a0, a4) (uint16_t)((a0)*128 + (a1)*16 + (a2)*8 + (a3)*2 + (a4))
#define P_A4(a1, a3, a2, a0) P5(a1, a3, a2, a0, 0), P5(a1, a3, a2, a0, 1)
#define P_A0(a1, a3, a2) P_A4(a1, a3, a2, 0), P_A4(a1, a3, a2, 1)
#define P_A2(a1, a3) P_A0(a1, a3, 0), P_A0(a1, a3, 1)
#define P_A3(a1) P_A2(a1, 0), P_A2(a1, 1), P_A2(a1, 2), P_A2(a1, 3)
    P_A3(0), P_A3(1), P_A3(2), P_A3(3), P_A3(4), P_A3(5), P_A3(6), P_A3(7)
#undef P_A3
#undef P_A2
#undef P_A0
#undef P_A4
#undef P5
};

/* ---- decodes ---- */

float glq_trellis_3inst(uint32_t s) {
  uint32_t x = s * 89226354u + 64248484u; /* glq computes in int64 and keeps the low 32 bits */
  uint32_t r = (x & 0x8FFF8FFFu) ^ 996162400u;
  /* both halves are fp16 with |v| in [2^-3, 2); their f32 sum is exact, glq rounds it to fp16 */
  float sum = glq_f16_to_f32((uint16_t)(r >> 16)) + glq_f16_to_f32((uint16_t)(r & 0xFFFFu));
  return glq_f16_to_f32(glq_f32_to_f16(sum));
}

static int code_alloc(glq_trellis_code *c, glq_trellis_variant v, int L, int K, int V) {
  memset(c, 0, sizeof *c);
  if (L < 1 || L > 16 || K < 1 || V < 1 || V > 2 || K * V >= L)
    return glq_error(GLQ_EINVAL, "trellis: need 1 <= L <= 16, V in {1, 2} and K*V < L (got L %d, K %d, V %d)", L, K, V);
  c->lut = malloc(sizeof(float) * ((size_t)V << L));
  if (!c->lut) return glq_error(GLQ_ENOMEM, "trellis: out of memory");
  c->variant = v;
  c->L = L;
  c->K = K;
  c->V = V;
  return 0;
}

static void code_finish(glq_trellis_code *c) {
  double ss = 0;
  int64_t n = (int64_t)c->V << c->L;
  for (int64_t i = 0; i < n; i++) ss += (double)c->lut[i] * c->lut[i];
  double rms = sqrt(ss / (double)n);
  c->opt_scale = rms > 0 ? 1.0 / (rms * 0.9) : 1.0;
}

int glq_trellis_code_3inst(glq_trellis_code *c, int K) {
  if (K < 1 || K > 4) return glq_error(GLQ_EINVAL, "trellis 3inst: K must be 1..4, got %d", K);
  int rc = code_alloc(c, GLQ_TRELLIS_3INST, 16, K, 1);
  if (rc) return rc;
  for (uint32_t s = 0; s < 65536; s++) c->lut[s] = glq_trellis_3inst(s);
  code_finish(c);
  return 0;
}

int glq_trellis_code_hyb(glq_trellis_code *c, int K, const float *tlut) {
  if (K < 1 || K > 4) return glq_error(GLQ_EINVAL, "trellis hyb: K must be 1..4, got %d", K);
  int rc = code_alloc(c, GLQ_TRELLIS_HYB, 16, K, 2);
  if (rc) return rc;
  for (uint64_t s = 0; s < 65536; s++) {
    uint64_t h = (s + 1) * s; /* quantlut_sym: bit 15 flips the first value's sign, bits 6..14 pick the row */
    unsigned t = (unsigned)((h >> 6) & 511);
    float f = ((h >> 15) & 1) ? -1.0f : 1.0f;
    c->lut[2 * s] = tlut[2 * t] * f;
    c->lut[2 * s + 1] = tlut[2 * t + 1];
  }
  code_finish(c);
  return 0;
}

int glq_trellis_code_lut(glq_trellis_code *c, int L, int K, int V, const float *lut) {
  int rc = code_alloc(c, GLQ_TRELLIS_CUSTOM, L, K, V);
  if (rc) return rc;
  memcpy(c->lut, lut, sizeof(float) * ((size_t)V << L));
  code_finish(c);
  return 0;
}

void glq_trellis_code_free(glq_trellis_code *c) {
  if (!c) return;
  free(c->lut);
  c->lut = NULL;
}

/* ---- Viterbi ---- */

typedef struct {
  float *best, *nbest;       /* 2^(L-KV) group minima of the previous / current step (+ 8 floats of slack) */
  float *plane0, *plane1;    /* the lut split by component (V = 2), 2^L each; plane0 = lut for V = 1 */
  uint8_t *bp;               /* steps x 2^(L-KV): argmin predecessor k per group */
  int cap_steps, own_planes;
} vit_ws;

static void ws_free(vit_ws *w) {
  free(w->best);
  free(w->nbest);
  if (w->own_planes) free(w->plane0);
  free(w->plane1);
  free(w->bp);
  memset(w, 0, sizeof *w);
}

static int ws_init(vit_ws *w, const glq_trellis_code *c, int steps) {
  memset(w, 0, sizeof *w);
  size_t S = (size_t)1 << c->L, G = S >> (c->K * c->V);
  w->best = aligned_alloc(64, ((G + 8) * 4 + 63) / 64 * 64);
  w->nbest = aligned_alloc(64, ((G + 8) * 4 + 63) / 64 * 64);
  w->bp = malloc(G * (size_t)steps);
  if (c->V == 2) {
    w->own_planes = 1;
    w->plane0 = aligned_alloc(64, (S * 4 + 63) / 64 * 64);
    w->plane1 = aligned_alloc(64, (S * 4 + 63) / 64 * 64);
    if (w->plane0 && w->plane1)
      for (size_t s = 0; s < S; s++) {
        w->plane0[s] = c->lut[2 * s];
        w->plane1[s] = c->lut[2 * s + 1];
      }
  } else {
    w->plane0 = c->lut;
  }
  if (!w->best || !w->nbest || !w->bp || !w->plane0 || (c->V == 2 && !w->plane1)) {
    ws_free(w);
    return glq_error(GLQ_ENOMEM, "trellis viterbi: out of memory");
  }
  for (size_t j = G; j < G + 8; j++) w->best[j] = w->nbest[j] = 0.0f; /* read by the vector loads, never used */
  w->cap_steps = steps;
  return 0;
}

/* err(s) for x = (x0[, x1]), scalar */
static inline float err1(const vit_ws *w, int V, int64_t s, float x0, float x1) {
  float d0 = w->plane0[s] - x0;
  if (V == 1) return d0 * d0;
  float d1 = w->plane1[s] - x1;
  return d0 * d0 + d1 * d1;
}

/* The path cost of state s at step i is cost_i(s) = err_i(s) + best_i(s >> KV), best_i the group minima
 * (best_0 = 0, or +inf outside the start group), and best_{i+1}(j) = min_k cost_i(j + k·G), the lowest k
 * on ties (bp = k). Only the group minima are stored; costs are formed where they are compared. */

/* One add-compare-select step, scalar: nbest from best and x of the step being left */
static void step_scalar(const vit_ws *w, int V, int KV, int64_t G, float x0, float x1, uint8_t *bp) {
  for (int64_t j = 0; j < G; j++) {
    float b = err1(w, V, j, x0, x1) + w->best[j >> KV];
    int arg = 0;
    for (int k = 1; k < (1 << KV); k++) {
      const int64_t p = j + (int64_t)k * G;
      float v = err1(w, V, p, x0, x1) + w->best[p >> KV];
      if (v < b) {
        b = v;
        arg = k;
      }
    }
    w->nbest[j] = b;
    bp[j] = (uint8_t)arg;
  }
}

/* AVX2 (no FMA, so the products and sums round as the scalar code's): 8 groups at a time (G % 8 == 0,
 * KV >= 2); the 8 predecessors' group minima are 8 >> KV consecutive entries of best, spread by a lane
 * permutation */
__attribute__((target("avx2"))) static void step_avx2(const vit_ws *w, int V, int KV, int64_t G, float x0, float x1,
                                                      uint8_t *bp) {
  const __m256 vx0 = _mm256_set1_ps(x0), vx1 = _mm256_set1_ps(x1);
  const __m256i spread = _mm256_srli_epi32(_mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7), KV);
  const int per = 1 << KV;
  const int64_t GK = G >> KV;
  for (int64_t j = 0; j < G; j += 8) {
    __m256 b = _mm256_setzero_ps(), arg = _mm256_setzero_ps();
    for (int k = 0; k < per; k++) {
      const int64_t p = j + (int64_t)k * G;
      __m256 d0 = _mm256_sub_ps(_mm256_loadu_ps(w->plane0 + p), vx0);
      __m256 e = _mm256_mul_ps(d0, d0);
      if (V == 2) {
        __m256 d1 = _mm256_sub_ps(_mm256_loadu_ps(w->plane1 + p), vx1);
        e = _mm256_add_ps(e, _mm256_mul_ps(d1, d1));
      }
      __m256 v = _mm256_add_ps(e, _mm256_permutevar8x32_ps(_mm256_loadu_ps(w->best + (j >> KV) + k * GK), spread));
      if (k == 0) {
        b = v;
        continue;
      }
      __m256 lt = _mm256_cmp_ps(v, b, _CMP_LT_OQ);
      b = _mm256_blendv_ps(b, v, lt);
      arg = _mm256_blendv_ps(arg, _mm256_castsi256_ps(_mm256_set1_epi32(k)), lt);
    }
    _mm256_store_ps(w->nbest + j, b);
    __m256i a = _mm256_castps_si256(arg);
    __m128i p16 = _mm_packs_epi32(_mm256_castsi256_si128(a), _mm256_extracti128_si256(a, 1));
    _mm_storel_epi64((__m128i *)(bp + j), _mm_packus_epi16(p16, p16));
  }
}

/* the step in use: AVX2 where the CPU has it, unless GLQ_TRELLIS_VECTOR=0 (0 portable, 1 AVX2) */
static int vec_state = -1;
static int vec_supported(void) {
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx2") ? 1 : 0;
}

int glq_trellis_vector(void) {
  if (vec_state < 0) {
    const char *e = getenv("GLQ_TRELLIS_VECTOR");
    const int cap = e && *e ? atoi(e) : 1, have = vec_supported();
    vec_state = cap < have ? (cap < 0 ? 0 : cap) : have;
  }
  return vec_state;
}

int glq_trellis_set_vector(int level) {
  const int prev = glq_trellis_vector(), have = vec_supported();
  vec_state = level < have ? (level < 0 ? 0 : level) : have;
  return prev;
}

static int viterbi_ws(const glq_trellis_code *c, vit_ws *w, const float *x, int steps, int32_t start_ov,
                      int32_t end_ov, uint16_t *states, float *cost_out) {
  const int V = c->V, KV = c->K * c->V;
  const int64_t S = (int64_t)1 << c->L, G = S >> KV;
  if (steps < 1 || steps > w->cap_steps) return glq_error(GLQ_EINVAL, "trellis viterbi: bad length %d", steps);
  if (start_ov >= G || end_ov >= G) return glq_error(GLQ_EINVAL, "trellis viterbi: overlap out of range");
  for (int64_t i = 0; i < (int64_t)steps * V; i++)
    if (!isfinite(x[i])) return glq_error(GLQ_ENUMERIC, "trellis viterbi: non-finite target at %lld", (long long)i);
  const int vec = KV >= 2 && G >= 8 && glq_trellis_vector();
  for (int64_t j = 0; j < G; j++) w->best[j] = start_ov < 0 || j == start_ov ? 0.0f : INFINITY;
  for (int i = 1; i < steps; i++) { /* leave step i - 1 */
    float x0 = x[(int64_t)(i - 1) * V], x1 = V == 2 ? x[(int64_t)(i - 1) * V + 1] : 0.0f;
    uint8_t *bp = w->bp + (int64_t)i * G;
    if (vec) step_avx2(w, V, KV, G, x0, x1, bp);
    else step_scalar(w, V, KV, G, x0, x1, bp);
    float *t = w->best;
    w->best = w->nbest;
    w->nbest = t;
  }
  const float xl0 = x[(int64_t)(steps - 1) * V], xl1 = V == 2 ? x[(int64_t)(steps - 1) * V + 1] : 0.0f;
  int64_t best_s = -1;
  float bc = INFINITY;
  if (end_ov >= 0) {
    for (int64_t k = 0; k < ((int64_t)1 << KV); k++) {
      int64_t s = end_ov + k * G;
      float c = err1(w, V, s, xl0, xl1) + w->best[s >> KV];
      if (best_s < 0 || c < bc) bc = c, best_s = s;
    }
  } else {
    for (int64_t s = 0; s < S; s++) {
      float c = err1(w, V, s, xl0, xl1) + w->best[s >> KV];
      if (best_s < 0 || c < bc) bc = c, best_s = s;
    }
  }
  states[steps - 1] = (uint16_t)best_s;
  for (int i = steps - 1; i > 0; i--) {
    int64_t j = states[i] >> KV;
    states[i - 1] = (uint16_t)(j + (int64_t)w->bp[(int64_t)i * G + j] * G);
  }
  if (cost_out) *cost_out = bc;
  return 0;
}

int glq_trellis_viterbi(const glq_trellis_code *c, const float *x, int steps, int32_t start_ov, int32_t end_ov,
                        uint16_t *states, float *cost) {
  vit_ws w;
  int rc = ws_init(&w, c, steps);
  if (rc) return rc;
  rc = viterbi_ws(c, &w, x, steps, start_ov, end_ov, states, cost);
  ws_free(&w);
  return rc;
}

/* glq's two-pass tail-biting: pass 1 on x rotated right by h = steps/2 steps (rotated step h is step 0) */
static int quantize_seq_ws(const glq_trellis_code *c, vit_ws *w, const float *x, int steps, float *rot,
                           uint16_t *states) {
  const int V = c->V, KV = c->K * c->V, h = steps / 2;
  const int64_t T = (int64_t)steps * V;
  for (int64_t i = 0; i < T; i++) rot[i] = x[((i - (int64_t)h * V) % T + T) % T];
  int rc = viterbi_ws(c, w, rot, steps, -1, -1, states, NULL);
  if (rc) return rc;
  int32_t ov = states[h] >> KV;
  return viterbi_ws(c, w, x, steps, ov, ov, states, NULL);
}

int glq_trellis_quantize_seq(const glq_trellis_code *c, const float *x, int steps, uint16_t *states) {
  vit_ws w;
  float *rot = malloc(sizeof(float) * (size_t)steps * (size_t)c->V);
  if (!rot) return glq_error(GLQ_ENOMEM, "trellis: out of memory");
  int rc = ws_init(&w, c, steps);
  if (!rc) {
    rc = quantize_seq_ws(c, &w, x, steps, rot, states);
    ws_free(&w);
  }
  free(rot);
  return rc;
}

/* ---- bitstream ---- */

int64_t glq_trellis_packed_words(const glq_trellis_code *c, int steps) {
  return ((int64_t)steps * c->K * c->V + 15) / 16;
}

int glq_trellis_pack(const glq_trellis_code *c, const uint16_t *states, int steps, uint16_t *words) {
  const int L = c->L, KV = c->K * c->V;
  const uint32_t gmask = (1u << (L - KV)) - 1;
  const int64_t nbits = (int64_t)steps * KV, nw = glq_trellis_packed_words(c, steps);
  for (int i = 0; i < steps; i++) {
    uint32_t prev = states[i == 0 ? steps - 1 : i - 1];
    if (states[i] >> L || (prev & gmask) != (uint32_t)(states[i] >> KV))
      return glq_error(GLQ_EINVAL, "trellis pack: states %d -> %d are not a tail-biting trellis path",
                       i == 0 ? steps - 1 : i - 1, i);
  }
  memset(words, 0, sizeof(uint16_t) * (size_t)nw);
  int64_t pos = 0;
  for (int i = 0; i < steps && pos < nbits; i++) {
    int nb = i == 0 ? L : KV;
    for (int b = nb - 1; b >= 0 && pos < nbits; b--, pos++)
      if ((states[i] >> b) & 1) words[pos >> 4] |= (uint16_t)(0x8000u >> (pos & 15));
  }
  return 0;
}

void glq_trellis_unpack(const glq_trellis_code *c, const uint16_t *words, int steps, uint16_t *states) {
  const int L = c->L, KV = c->K * c->V;
  const int64_t nbits = (int64_t)steps * KV;
  const uint32_t mask = (1u << L) - 1;
  if (nbits > 4096) { /* long sequences (tests): bit by bit */
    int64_t pos = 0;
#define BIT(p) ((words[((p) % nbits) >> 4] >> (15 - ((p) % nbits & 15))) & 1u)
    uint32_t s = 0;
    for (int b = 0; b < L; b++, pos++) s = (s << 1) | BIT(pos);
    states[0] = (uint16_t)s;
    for (int i = 1; i < steps; i++) {
      for (int b = 0; b < KV; b++, pos++) s = (s << 1) | BIT(pos);
      states[i] = (uint16_t)(s & mask);
    }
#undef BIT
    return;
  }
  /* state i is the L-bit window at bit i·KV of the stream followed by its first L - KV bits again */
  uint8_t buf[4096 / 8 + 8] = {0};
  const int64_t nw = (nbits + 15) / 16;
  for (int64_t w = 0; w < nw; w++) buf[2 * w] = (uint8_t)(words[w] >> 8), buf[2 * w + 1] = (uint8_t)words[w];
  for (int64_t b = 0; b < L - KV; b++) { /* the wrapped bits overwrite any zero padding */
    int64_t d = nbits + b;
    unsigned v = (buf[b >> 3] >> (7 - (b & 7))) & 1u;
    buf[d >> 3] = (uint8_t)((buf[d >> 3] & ~(0x80u >> (d & 7))) | (v << (7 - (d & 7))));
  }
  for (int i = 0; i < steps; i++) {
    const int64_t p = (int64_t)i * KV;
    const uint8_t *q = buf + (p >> 3);
    uint32_t v = (uint32_t)q[0] << 24 | (uint32_t)q[1] << 16 | (uint32_t)q[2] << 8 | q[3];
    states[i] = (uint16_t)((v >> (32 - L - (p & 7))) & mask);
  }
}

int glq_trellis_kernel_flip(const uint8_t *in, uint8_t *out, int64_t m, int64_t n, int K, int forward) {
  if (m % 32 || n % 32 || m <= 0 || n <= 0)
    return glq_error(GLQ_EINVAL, "trellis kernel layout: %lld x %lld is not a multiple of 32 on both sides", (long long)m,
                     (long long)n);
  const int64_t A = m / 32, C = n / 32;
  int64_t ki = 0;
  for (int64_t a = 0; a < A; a++)
    for (int64_t cc = 0; cc < C; cc++)
      for (int e = 0; e < 32; e++)
        for (int d = 0; d < 2; d++)
          for (int b = 0; b < 2; b++)
            for (int f = 0; f < K; f++, ki++) {
              int64_t ni = (((((a * 2 + b) * C + cc) * 2 + d) * 32 + e) * K + (K - 1 - f)) ^ 1;
              if (forward) out[ki] = in[ni];
              else out[ni] = in[ki];
            }
  return 0;
}

/* ---- tiles and layers ---- */

void glq_trellis_decode_tile(const glq_trellis_code *c, const uint16_t *states, float *tile) {
  const int V = c->V, steps = GLQ_TRELLIS_TILE / V;
  for (int i = 0; i < steps; i++)
    for (int v = 0; v < V; v++) tile[glq_trellis_perm[i * V + v]] = c->lut[(int64_t)states[i] * V + v];
}

typedef struct {
  const glq_trellis_code *c;
  const float *target;
  int64_t ld, ldr;
  float *recon;
  uint16_t *states;
  int rc;
} block_job;

static void block_range(void *ctx, int64_t t0, int64_t t1) {
  block_job *j = ctx;
  const glq_trellis_code *c = j->c;
  const int steps = GLQ_TRELLIS_TILE / c->V;
  vit_ws w;
  float seq[GLQ_TRELLIS_TILE], rot[GLQ_TRELLIS_TILE], tile[GLQ_TRELLIS_TILE];
  int rc = ws_init(&w, c, steps), inited = !rc;
  for (int64_t t = t0; t < t1 && !rc; t++) {
    const float *src = j->target + t * 16 * j->ld;
    for (int i = 0; i < GLQ_TRELLIS_TILE; i++) {
      int e = glq_trellis_perm[i];
      seq[i] = src[(e >> 4) * j->ld + (e & 15)];
    }
    uint16_t *st = j->states + t * steps;
    rc = quantize_seq_ws(c, &w, seq, steps, rot, st);
    if (rc) break;
    glq_trellis_decode_tile(c, st, tile);
    float *dst = j->recon + t * 16 * j->ldr;
    for (int r = 0; r < 16; r++) memcpy(dst + r * j->ldr, tile + r * 16, 16 * sizeof(float));
  }
  if (inited) ws_free(&w);
  if (rc) __atomic_store_n(&j->rc, rc, __ATOMIC_RELAXED);
}

/* quantize_block through c->viterbi_batch: glq's two passes (quantize_seq_ws) for all tiles at once */
static int quantize_block_batch(const glq_trellis_code *c, const float *target, int64_t ntiles, int64_t ld,
                                float *recon, int64_t ldr, uint16_t *states) {
  const int T = GLQ_TRELLIS_TILE, steps = T / c->V, h = steps / 2, KV = c->K * c->V;
  if (ntiles < 1) return 0;
  float *seq = malloc(sizeof(float) * (size_t)(ntiles * T)), *rot = malloc(sizeof(float) * (size_t)(ntiles * T));
  int32_t *st = malloc(sizeof(int32_t) * (size_t)(ntiles * steps)), *ov = malloc(sizeof(int32_t) * (size_t)ntiles);
  if (!seq || !rot || !st || !ov) {
    free(seq), free(rot), free(st), free(ov);
    return glq_error(GLQ_ENOMEM, "trellis: out of memory for %lld tiles", (long long)ntiles);
  }
  for (int64_t t = 0; t < ntiles; t++) {
    const float *src = target + t * 16 * ld;
    float *q = seq + t * T, *r = rot + t * T;
    for (int i = 0; i < T; i++) {
      int e = glq_trellis_perm[i];
      q[i] = src[(e >> 4) * ld + (e & 15)];
    }
    for (int i = 0; i < T; i++) r[i] = q[((i - h * c->V) % T + T) % T];
  }
  int rc = c->viterbi_batch(c->viterbi_ctx, c, rot, ntiles, T, NULL, st);
  for (int64_t t = 0; !rc && t < ntiles; t++) ov[t] = st[t * steps + h] >> KV;
  if (!rc) rc = c->viterbi_batch(c->viterbi_ctx, c, seq, ntiles, T, ov, st);
  for (int64_t t = 0; !rc && t < ntiles; t++) {
    float tile[GLQ_TRELLIS_TILE];
    uint16_t *s16 = states + t * steps;
    for (int i = 0; i < steps; i++) s16[i] = (uint16_t)st[t * steps + i];
    glq_trellis_decode_tile(c, s16, tile);
    float *dst = recon + t * 16 * ldr;
    for (int r = 0; r < 16; r++) memcpy(dst + r * ldr, tile + r * 16, 16 * sizeof(float));
  }
  free(seq), free(rot), free(st), free(ov);
  return rc;
}

int glq_trellis_quantize_block(const glq_trellis_code *c, const float *target, int64_t rows, int64_t ld,
                               float *recon, int64_t ldr, uint16_t *states) {
  if (rows % 16) return glq_error(GLQ_EINVAL, "trellis: %lld rows is not a multiple of 16", (long long)rows);
  for (int64_t r = 0; r < rows; r++)
    for (int e = 0; e < 16; e++)
      if (!isfinite(target[r * ld + e]))
        return glq_error(GLQ_ENUMERIC, "trellis: non-finite target at row %lld, column %d", (long long)r, e);
  if (c->viterbi_batch) return quantize_block_batch(c, target, rows / 16, ld, recon, ldr, states);
  block_job j = {c, target, ld, ldr, recon, states, 0};
  glq_parallel_for(rows / 16, 1, block_range, &j);
  if (j.rc && !*glq_errmsg()) glq_error(j.rc, "trellis: tile quantization failed");
  return j.rc;
}

int glq_trellis_pack_layer(const glq_trellis_code *c, const uint16_t *states, int64_t m, int64_t n,
                           int kernel_layout, int16_t *packed) {
  if (m % 16 || n % 16) return glq_error(GLQ_EINVAL, "trellis: %lld x %lld is not a multiple of 16", (long long)m, (long long)n);
  const int steps = GLQ_TRELLIS_TILE / c->V;
  const int64_t nt = (m / 16) * (n / 16), wpt = glq_trellis_packed_words(c, steps);
  uint16_t *nat = kernel_layout ? malloc(sizeof(uint16_t) * (size_t)(nt * wpt)) : (uint16_t *)packed;
  if (!nat) return glq_error(GLQ_ENOMEM, "trellis: out of memory");
  int rc = 0;
  for (int64_t t = 0; t < nt && !rc; t++) rc = glq_trellis_pack(c, states + t * steps, steps, nat + t * wpt);
  if (!rc && kernel_layout) rc = glq_trellis_kernel_flip((const uint8_t *)nat, (uint8_t *)packed, m, n, c->K, 1);
  if (kernel_layout) free(nat);
  return rc;
}

typedef struct {
  const glq_trellis_code *c;
  const uint16_t *nat;
  int64_t n, wpt;
  float *w;
} dec_job;

static void dec_range(void *ctx, int64_t t0, int64_t t1) {
  dec_job *j = ctx;
  const int steps = GLQ_TRELLIS_TILE / j->c->V;
  uint16_t st[GLQ_TRELLIS_TILE];
  float tile[GLQ_TRELLIS_TILE];
  const int64_t tn = j->n / 16;
  for (int64_t t = t0; t < t1; t++) {
    glq_trellis_unpack(j->c, j->nat + t * j->wpt, steps, st);
    glq_trellis_decode_tile(j->c, st, tile);
    float *dst = j->w + (t / tn) * 16 * j->n + (t % tn) * 16;
    for (int r = 0; r < 16; r++) memcpy(dst + r * j->n, tile + r * 16, 16 * sizeof(float));
  }
}

int glq_trellis_decode_layer(const glq_trellis_code *c, const int16_t *packed, int64_t m, int64_t n,
                             int kernel_layout, float *w) {
  if (m % 16 || n % 16 || m <= 0 || n <= 0)
    return glq_error(GLQ_EINVAL, "trellis: %lld x %lld is not a multiple of 16", (long long)m, (long long)n);
  const int steps = GLQ_TRELLIS_TILE / c->V;
  const int64_t nt = (m / 16) * (n / 16), wpt = glq_trellis_packed_words(c, steps);
  uint16_t *nat = (uint16_t *)packed;
  if (kernel_layout) {
    nat = malloc(sizeof(uint16_t) * (size_t)(nt * wpt));
    if (!nat) return glq_error(GLQ_ENOMEM, "trellis: out of memory");
    int rc = glq_trellis_kernel_flip((const uint8_t *)packed, (uint8_t *)nat, m, n, c->K, 0);
    if (rc) {
      free(nat);
      return rc;
    }
  }
  dec_job j = {c, nat, n, wpt, w};
  glq_parallel_for(nt, 16, dec_range, &j);
  if (kernel_layout) free(nat);
  return 0;
}
