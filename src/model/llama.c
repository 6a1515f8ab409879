/* llama.c - Llama-family decoder forward: RMSNorm, RoPE (two layouts, llama3 scaling), GQA
 * causal attention over an optional KV cache, SwiGLU MLP; f32 activations. */
#include "llama.h"
#include "../layers/dense_linear.h"
#include "../core/pool.h"
#include "../linalg/linalg.h"
#include "../io/ggml_quants.h"
#include <math.h>
#if defined(__x86_64__)
#include <immintrin.h>
#endif
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define QBLOCK 16       /* queries per attention score block */
#define FEW_QUERIES 4   /* up to this many new positions, P·V runs on V rows (no transpose) */
#define CAP_CHUNK 256   /* rows converted to f64 per DSYRK call */

typedef struct {
  float *attn_norm, *ffn_norm, *q_norm, *k_norm;
  glq_linear *q, *k, *v, *o, *gate, *up, *down;
} layer_t;

struct glq_llama {
  glq_llama_config cfg;
  int owns;
  layer_t *layers;
  glq_tensor emb;              /* one reference, f32 or bf16; st == NULL until set */
  float *final_norm;
  glq_linear *head;            /* set by the caller (owned iff owns) */
  glq_linear *tied_head;       /* dense over emb, always owned */
  glq_tensor head_q8;          /* Q8_0 blocks of emb for decode-sized head calls; st == NULL if none */
  float *rope_cos, *rope_sin;  /* max_seq × head_dim/2 */
  void *ws, *hid, *capbuf;     /* scratch: layer activations, forward hidden, f64 rows */
  size_t ws_n, hid_n, capbuf_n;
};

static int grow(void **p, size_t *cap, size_t bytes) {
  if (bytes <= *cap) return GLQ_OK;
  void *q = realloc(*p, bytes);
  if (!q) return glq_error(GLQ_ENOMEM, "llama: cannot allocate %zu bytes of scratch", bytes);
  *p = q;
  *cap = bytes;
  return GLQ_OK;
}

/* RoPE angles pos·inv_freq[j] for j < head_dim/2, in double; llama3 rescales low frequencies. */
static void rope_tables(glq_llama *m) {
  const glq_llama_config *c = &m->cfg;
  int half = c->head_dim / 2;
  for (int j = 0; j < half; j++) {
    double inv = pow((double)c->rope_theta, -2.0 * j / c->head_dim);
    if (c->rope_scaling == GLQ_ROPE_SCALE_LLAMA3) {
      double wavelen = 2.0 * M_PI / inv, old = c->rope_original_max_pos;
      double lo_wl = old / c->rope_low_freq_factor, hi_wl = old / c->rope_high_freq_factor;
      if (wavelen > lo_wl) inv /= c->rope_factor;
      else if (wavelen >= hi_wl) {
        double s = (old / wavelen - c->rope_low_freq_factor) / (c->rope_high_freq_factor - c->rope_low_freq_factor);
        inv = (1.0 - s) * inv / c->rope_factor + s * inv;
      }
    }
    for (int p = 0; p < c->max_seq; p++) {
      m->rope_cos[(size_t)p * half + j] = (float)cos(p * inv);
      m->rope_sin[(size_t)p * half + j] = (float)sin(p * inv);
    }
  }
}

int glq_llama_new(const glq_llama_config *cfg, int owns_linears, glq_llama **out) {
  *out = NULL;
  const glq_llama_config *c = cfg;
  if (c->dim < 1 || c->n_layers < 1 || c->n_heads < 1 || c->n_kv_heads < 1 || c->head_dim < 2 ||
      c->ffn_dim < 1 || c->vocab < 1 || c->max_seq < 1)
    return glq_error(GLQ_EINVAL, "llama config: dim %d, layers %d, heads %d, kv heads %d, head_dim %d, ffn %d, vocab %d, max_seq %d must be positive",
                     c->dim, c->n_layers, c->n_heads, c->n_kv_heads, c->head_dim, c->ffn_dim, c->vocab, c->max_seq);
  if (c->n_heads % c->n_kv_heads || c->head_dim % 2)
    return glq_error(GLQ_EINVAL, "llama config: n_heads %d must be a multiple of n_kv_heads %d and head_dim %d even",
                     c->n_heads, c->n_kv_heads, c->head_dim);
  if (!(c->norm_eps >= 0.0f) || !(c->rope_theta > 0.0f))
    return glq_error(GLQ_EINVAL, "llama config: norm_eps %g must be >= 0 and rope_theta %g > 0", c->norm_eps, c->rope_theta);
  if (c->rope_layout != GLQ_ROPE_INTERLEAVED && c->rope_layout != GLQ_ROPE_HALF)
    return glq_error(GLQ_EINVAL, "llama config: unknown rope layout %d", (int)c->rope_layout);
  if (c->rope_scaling == GLQ_ROPE_SCALE_LLAMA3 &&
      !(c->rope_factor > 0.0f && c->rope_low_freq_factor > 0.0f && c->rope_high_freq_factor > c->rope_low_freq_factor &&
        c->rope_original_max_pos > 0))
    return glq_error(GLQ_EINVAL, "llama config: llama3 rope scaling needs factor > 0, 0 < low_freq_factor < high_freq_factor, original_max_position_embeddings > 0");
  if (c->rope_scaling != GLQ_ROPE_SCALE_NONE && c->rope_scaling != GLQ_ROPE_SCALE_LLAMA3)
    return glq_error(GLQ_EINVAL, "llama config: unknown rope scaling %d", (int)c->rope_scaling);
  glq_llama *m = calloc(1, sizeof *m);
  if (!m) return glq_error(GLQ_ENOMEM, "llama: out of memory");
  m->cfg = *c;
  m->owns = owns_linears;
  size_t nrope = (size_t)c->max_seq * (size_t)(c->head_dim / 2);
  m->layers = calloc((size_t)c->n_layers, sizeof *m->layers);
  m->rope_cos = malloc(nrope * sizeof(float));
  m->rope_sin = malloc(nrope * sizeof(float));
  if (!m->layers || !m->rope_cos || !m->rope_sin) {
    glq_llama_free(m);
    return glq_error(GLQ_ENOMEM, "llama: out of memory");
  }
  rope_tables(m);
  *out = m;
  return GLQ_OK;
}

static void drop_linear(glq_llama *m, glq_linear *old, glq_linear *repl) {
  if (m->owns && old && old != repl) glq_linear_free(old);
}

static void free_layer(glq_llama *m, layer_t *L) {
  free(L->attn_norm); free(L->ffn_norm); free(L->q_norm); free(L->k_norm);
  glq_linear *lin[7] = {L->q, L->k, L->v, L->o, L->gate, L->up, L->down};
  for (int i = 0; i < 7; i++) drop_linear(m, lin[i], NULL);
}

void glq_llama_free(glq_llama *m) {
  if (!m) return;
  if (m->layers)
    for (int l = 0; l < m->cfg.n_layers; l++) free_layer(m, &m->layers[l]);
  free(m->layers);
  if (m->emb.st) glq_tensor_release(&m->emb);
  if (m->head_q8.st) glq_tensor_release(&m->head_q8);
  free(m->final_norm);
  drop_linear(m, m->head, NULL);
  glq_linear_free(m->tied_head);
  free(m->rope_cos); free(m->rope_sin);
  free(m->ws); free(m->hid); free(m->capbuf);
  free(m);
}

const glq_llama_config *glq_llama_config_of(const glq_llama *m) { return &m->cfg; }

glq_linear *glq_llama_head_linear(const glq_llama *m) { return m->head ? m->head : m->tied_head; }

/* Owned f32 copy of a float vector of n elements. */
static int copy_vec(const glq_tensor *t, int64_t n, const char *what, float **out) {
  *out = NULL;
  if (!t || !t->st || !glq_dtype_is_float(t->dtype) || glq_tensor_numel(t) != n)
    return glq_error(GLQ_EINVAL, "%s: expected a float tensor of %lld elements", what, (long long)n);
  glq_tensor f;
  int rc = glq_tensor_to(t, GLQ_F32, &f);
  if (rc) return rc;
  *out = malloc((size_t)n * sizeof(float));
  if (*out) memcpy(*out, glq_tensor_data(&f), (size_t)n * sizeof(float));
  glq_tensor_release(&f);
  return *out ? GLQ_OK : glq_error(GLQ_ENOMEM, "%s: out of memory", what);
}

int glq_llama_set_embedding(glq_llama *m, const glq_tensor *emb) {
  const glq_llama_config *c = &m->cfg;
  if (!emb || !emb->st || emb->ndim != 2 || emb->shape[0] != c->vocab || emb->shape[1] != c->dim ||
      !glq_dtype_is_float(emb->dtype))
    return glq_error(GLQ_EINVAL, "token embedding: expected a float tensor of %d x %d", c->vocab, c->dim);
  glq_tensor e;
  int rc;
  if ((emb->dtype == GLQ_F32 || emb->dtype == GLQ_BF16) && glq_tensor_is_contiguous(emb)) {
    e = *emb;
    glq_tensor_retain(&e);
  } else if ((rc = glq_tensor_to(emb, GLQ_F32, &e))) {
    return rc;
  }
  glq_linear *tied = NULL;
  if (c->tied && (rc = glq_dense_linear_new(&e, NULL, &tied))) {
    glq_tensor_release(&e);
    return rc;
  }
  if (m->emb.st) glq_tensor_release(&m->emb);
  if (m->head_q8.st) glq_tensor_release(&m->head_q8);
  glq_linear_free(m->tied_head);
  m->emb = e;
  m->tied_head = tied;
  return GLQ_OK;
}

typedef struct {
  const uint8_t *blocks;
  const float *emb;
  int64_t dim;
  atomic_int bad;   /* 1 + the first mismatching row seen, or 0 */
} q8_check_ctx;

static void q8_check_range(void *vctx, int64_t j0, int64_t j1) {
  q8_check_ctx *c = vctx;
  float row[4096];
  for (int64_t j = j0; j < j1 && !atomic_load(&c->bad); j++) {
    glq_ggml_dequantize(GLQ_GGML_Q8_0, c->blocks + (size_t)j * (size_t)(c->dim / 32) * 34, row, c->dim);
    if (memcmp(row, c->emb + (size_t)j * (size_t)c->dim, (size_t)c->dim * sizeof(float))) atomic_store(&c->bad, (int)j + 1);
  }
}

int glq_llama_set_head_q8_0(glq_llama *m, const glq_tensor *blocks) {
  const glq_llama_config *c = &m->cfg;
  if (!c->tied || m->head) return glq_error(GLQ_EINVAL, "Q8_0 head: the model's head is not tied to its embedding");
  if (!m->emb.st || m->emb.dtype != GLQ_F32) return glq_error(GLQ_EINVAL, "Q8_0 head: set an f32 embedding first");
  if (c->dim % 32 || c->dim > 4096)
    return glq_error(GLQ_EINVAL, "Q8_0 head: dim %d is not a multiple of 32 up to 4096", c->dim);
  size_t want = (size_t)c->vocab * (size_t)(c->dim / 32) * 34;
  if (!blocks || !blocks->st || blocks->dtype != GLQ_U8 || !glq_tensor_is_contiguous(blocks) ||
      (size_t)glq_tensor_numel(blocks) != want)
    return glq_error(GLQ_EINVAL, "Q8_0 head: expected %zu bytes of u8 blocks for %d x %d", want, c->vocab, c->dim);
  q8_check_ctx ck = {glq_tensor_data(blocks), glq_tensor_data(&m->emb), c->dim, 0};
  glq_parallel_for(c->vocab, 1024, q8_check_range, &ck);
  int bad = atomic_load(&ck.bad);
  if (bad) return glq_error(GLQ_EINVAL, "Q8_0 head: row %d of the blocks is not the embedding's", bad - 1);
  glq_tensor t = *blocks;
  glq_tensor_retain(&t);
  if (m->head_q8.st) glq_tensor_release(&m->head_q8);
  m->head_q8 = t;
  return GLQ_OK;
}

int glq_llama_set_final_norm(glq_llama *m, const glq_tensor *w) {
  float *f;
  int rc = copy_vec(w, m->cfg.dim, "final norm", &f);
  if (rc) return rc;
  free(m->final_norm);
  m->final_norm = f;
  return GLQ_OK;
}

static int check_linear(const glq_linear *l, int64_t in, int64_t out, const char *what, int layer) {
  if (!l) return glq_error(GLQ_EINVAL, "layer %d %s: linear missing", layer, what);
  if (l->in != in || l->out != out)
    return glq_error(GLQ_EINVAL, "layer %d %s: linear is %lld -> %lld, expected %lld -> %lld", layer, what,
                     (long long)l->in, (long long)l->out, (long long)in, (long long)out);
  return GLQ_OK;
}

int glq_llama_set_head(glq_llama *m, glq_linear *head) {
  if (head && (head->in != m->cfg.dim || head->out != m->cfg.vocab))
    return glq_error(GLQ_EINVAL, "output head: linear is %lld -> %lld, expected %d -> %d", (long long)head->in,
                     (long long)head->out, m->cfg.dim, m->cfg.vocab);
  if (head && m->head_q8.st) glq_tensor_release(&m->head_q8);
  drop_linear(m, m->head, head);
  m->head = head;
  return GLQ_OK;
}

int glq_llama_set_layer(glq_llama *m, int l, const glq_llama_layer_weights *w) {
  const glq_llama_config *c = &m->cfg;
  if (l < 0 || l >= c->n_layers) return glq_error(GLQ_EINVAL, "layer %d out of range [0, %d)", l, c->n_layers);
  int64_t qd = (int64_t)c->n_heads * c->head_dim, kd = (int64_t)c->n_kv_heads * c->head_dim;
  int rc;
  if ((rc = check_linear(w->q, c->dim, qd, "q", l)) || (rc = check_linear(w->k, c->dim, kd, "k", l)) ||
      (rc = check_linear(w->v, c->dim, kd, "v", l)) || (rc = check_linear(w->o, qd, c->dim, "o", l)) ||
      (rc = check_linear(w->gate, c->dim, c->ffn_dim, "gate", l)) ||
      (rc = check_linear(w->up, c->dim, c->ffn_dim, "up", l)) ||
      (rc = check_linear(w->down, c->ffn_dim, c->dim, "down", l)))
    return rc;
  layer_t n = {0};
  char what[64];
  snprintf(what, sizeof what, "layer %d attn_norm", l);
  if ((rc = copy_vec(w->attn_norm, c->dim, what, &n.attn_norm))) goto fail;
  snprintf(what, sizeof what, "layer %d ffn_norm", l);
  if ((rc = copy_vec(w->ffn_norm, c->dim, what, &n.ffn_norm))) goto fail;
  if (c->qk_norm) {
    snprintf(what, sizeof what, "layer %d q_norm", l);
    if ((rc = copy_vec(w->q_norm, c->head_dim, what, &n.q_norm))) goto fail;
    snprintf(what, sizeof what, "layer %d k_norm", l);
    if ((rc = copy_vec(w->k_norm, c->head_dim, what, &n.k_norm))) goto fail;
  }
  layer_t *L = &m->layers[l];
  free(L->attn_norm); free(L->ffn_norm); free(L->q_norm); free(L->k_norm);
  drop_linear(m, L->q, w->q); drop_linear(m, L->k, w->k); drop_linear(m, L->v, w->v);
  drop_linear(m, L->o, w->o); drop_linear(m, L->gate, w->gate); drop_linear(m, L->up, w->up);
  drop_linear(m, L->down, w->down);
  n.q = w->q; n.k = w->k; n.v = w->v; n.o = w->o; n.gate = w->gate; n.up = w->up; n.down = w->down;
  *L = n;
  return GLQ_OK;
fail:
  free(n.attn_norm); free(n.ffn_norm); free(n.q_norm); free(n.k_norm);
  return rc;
}

int64_t glq_llama_capture_dim(const glq_llama *m, int which) {
  switch (which) {
  case GLQ_CAP_QKV: case GLQ_CAP_GATE_UP: return m->cfg.dim;
  case GLQ_CAP_O: return (int64_t)m->cfg.n_heads * m->cfg.head_dim;
  case GLQ_CAP_DOWN: return m->cfg.ffn_dim;
  default: return -1;
  }
}

/* ---- row-parallel elementwise pieces ---- */

typedef struct {
  float *out;
  const float *in, *w;
  int64_t d;
  float eps;
} rms_ctx;

static void rms_range(void *ctx, int64_t r0, int64_t r1) {
  const rms_ctx *c = ctx;
  for (int64_t r = r0; r < r1; r++) {
    const float *x = c->in + r * c->d;
    float *y = c->out + r * c->d;
    double ss = 0.0;
    for (int64_t i = 0; i < c->d; i++) ss += (double)x[i] * x[i];
    float s = (float)(1.0 / sqrt(ss / (double)c->d + c->eps));
    for (int64_t i = 0; i < c->d; i++) y[i] = x[i] * s * c->w[i];
  }
}

/* out = RMSNorm(in) ⊙ w over rows of length d (in place allowed). */
static void rmsnorm(float *out, const float *in, const float *w, int64_t rows, int64_t d, float eps) {
  rms_ctx c = {out, in, w, d, eps};
  glq_parallel_for(rows, 1 + 16384 / d, rms_range, &c);
}

typedef struct {
  float *g;
  const float *u;
} swiglu_ctx;

static void swiglu_range(void *ctx, int64_t i0, int64_t i1) {
  const swiglu_ctx *c = ctx;
  for (int64_t i = i0; i < i1; i++) c->g[i] = c->g[i] / (1.0f + expf(-c->g[i])) * c->u[i];
}

/* Rotate each head of rows (n × heads × head_dim); row r sits at position pos0 + r % T. */
static void rope(const glq_llama *m, float *x, int64_t n, int heads, int T, int pos0) {
  int hd = m->cfg.head_dim, half = hd / 2;
  int il = m->cfg.rope_layout == GLQ_ROPE_INTERLEAVED;
  for (int64_t r = 0; r < n; r++) {
    int p = pos0 + (int)(r % T);
    const float *cs = m->rope_cos + (size_t)p * half, *sn = m->rope_sin + (size_t)p * half;
    for (int h = 0; h < heads; h++) {
      float *v = x + (r * heads + h) * hd;
      for (int j = 0; j < half; j++) {
        float *a = il ? v + 2 * j : v + j, *b = il ? v + 2 * j + 1 : v + j + half;
        float a0 = *a, b0 = *b;
        *a = a0 * cs[j] - b0 * sn[j];
        *b = a0 * sn[j] + b0 * cs[j];
      }
    }
  }
}

/* ---- attention ---- */

typedef struct {
  const glq_llama *m;
  const glq_kvcache *cache;
  int l, B, T, pos0;
  const float *q, *k, *v;
  float *att;
  int in_place;        /* f32 cache already holding the new positions: keys/values read where they lie */
  atomic_int failed;   /* a worker could not allocate its scratch */
} attn_ctx;

/* Scale, causally mask (keys >= valid get weight 0) and softmax one score row of length n. */
static void softmax_row(float *s, int valid, int n, float scale) {
  float mx = -INFINITY;
  for (int j = 0; j < valid; j++) {
    s[j] *= scale;
    mx = s[j] > mx ? s[j] : mx;
  }
  double sum = 0.0;
  for (int j = 0; j < valid; j++) {
    s[j] = expf(s[j] - mx);
    sum += s[j];
  }
  float inv = (float)(1.0 / sum);
  for (int j = 0; j < valid; j++) s[j] *= inv;
  for (int j = valid; j < n; j++) s[j] = 0.0f;
}

/* out (hd) = Σ_j p[j]·V[j] over n rows: for a few queries, cheaper than transposing V. */
#if defined(__x86_64__)
__attribute__((target("avx2,fma"))) static int pv_rows_avx2(const float *p, int n, const float *V, int hd, float *out) {
  int d = 0;
  for (; d + 64 <= hd; d += 64) { /* eight chains: the FMA latency is hidden */
    __m256 a[8];
#pragma GCC unroll 8
    for (int i = 0; i < 8; i++) a[i] = _mm256_setzero_ps();
    for (int j = 0; j < n; j++) {
      __m256 pj = _mm256_set1_ps(p[j]);
      const float *v = V + (size_t)j * hd + d;
#pragma GCC unroll 8
      for (int i = 0; i < 8; i++) a[i] = _mm256_fmadd_ps(pj, _mm256_loadu_ps(v + 8 * i), a[i]);
    }
#pragma GCC unroll 8
    for (int i = 0; i < 8; i++) _mm256_storeu_ps(out + d + 8 * i, a[i]);
  }
  for (; d + 32 <= hd; d += 32) {
    __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
    for (int j = 0; j < n; j++) {
      __m256 pj = _mm256_set1_ps(p[j]);
      const float *v = V + (size_t)j * hd + d;
      a0 = _mm256_fmadd_ps(pj, _mm256_loadu_ps(v), a0);
      a1 = _mm256_fmadd_ps(pj, _mm256_loadu_ps(v + 8), a1);
      a2 = _mm256_fmadd_ps(pj, _mm256_loadu_ps(v + 16), a2);
      a3 = _mm256_fmadd_ps(pj, _mm256_loadu_ps(v + 24), a3);
    }
    _mm256_storeu_ps(out + d, a0);
    _mm256_storeu_ps(out + d + 8, a1);
    _mm256_storeu_ps(out + d + 16, a2);
    _mm256_storeu_ps(out + d + 24, a3);
  }
  return d;
}
#endif

static void pv_rows(const float *p, int n, const float *V, int hd, float *out) {
  int d = 0;
#if defined(__x86_64__)
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) d = pv_rows_avx2(p, n, V, hd, out);
#endif
  for (; d < hd; d++) {
    float s = 0.0f;
    for (int j = 0; j < n; j++) s += p[j] * V[(size_t)j * hd + d];
    out[d] = s;
  }
}

/* Work items are (sequence, query head), kv-head major: a range gathers the keys/values of a kv head
 * once for its heads that share them, and the heads of one kv head can still go to two threads
 * (SmolLM2's 3 kv heads on 2 threads: 5 and 4 heads instead of 6 and 3). */
static void attn_range(void *vctx, int64_t i0, int64_t i1) {
  attn_ctx *c = vctx;
  const glq_llama_config *f = &c->m->cfg;
  int hd = f->head_dim, nh = f->n_heads, nkv = f->n_kv_heads, rep = nh / nkv;
  int T = c->T, pos0 = c->pos0, L = pos0 + T, transpose = T > FEW_QUERIES;
  size_t gather = c->in_place ? 0 : (size_t)2 * L * hd;
  float *buf = malloc((gather + (transpose ? (size_t)L * hd : 0) + (size_t)QBLOCK * L) * sizeof(float));
  if (!buf) {
    atomic_store(&c->failed, 1);
    return;
  }
  float *Kbuf = buf, *Vbuf = buf + gather / 2, *Vt = buf + gather, *S = Vt + (transpose ? (size_t)L * hd : 0);
  const float *K = Kbuf, *V = Vbuf;
  float scale = 1.0f / sqrtf((float)hd);
  int64_t gathered = -1; /* the (sequence, kv head) whose keys/values are in K, V */
  for (int64_t it = i0, g; it < i1; it += g) {
    int b = (int)(it / nh), h = (int)(it % nh), kvh = h / rep;
    /* one new position: the heads of this kv head in the range are taken together (their keys gathered once),
     * each scored by its own one-row gemm, whose 8-key register tile beats the multi-row tile on 64-long rows
     * (the later heads read the keys from L2; a row's scores do not depend on how many heads are grouped) */
    g = 1;
    if (T == 1)
      while (g < QBLOCK && it + g < i1 && (h + g) / rep == kvh) g++;
    if (gathered != (int64_t)b * nkv + kvh) {
      gathered = (int64_t)b * nkv + kvh;
      if (c->in_place) {
        glq_kvcache_rows_f32(c->cache, c->l, b, kvh, &K, &V);
      } else {
        if (c->cache && pos0 > 0) glq_kvcache_read(c->cache, c->l, b, kvh, pos0, Kbuf, Vbuf);
        for (int t = 0; t < T; t++) {
          size_t src = (((size_t)b * T + t) * nkv + kvh) * hd;
          memcpy(Kbuf + (size_t)(pos0 + t) * hd, c->k + src, (size_t)hd * sizeof(float));
          memcpy(Vbuf + (size_t)(pos0 + t) * hd, c->v + src, (size_t)hd * sizeof(float));
        }
      }
      if (transpose)
        for (int j = 0; j < L; j++)
          for (int d = 0; d < hd; d++) Vt[(size_t)d * L + j] = V[(size_t)j * hd + d];
    }
    if (g > 1) {
      const size_t row0 = ((size_t)b * nh + h) * hd;
      for (int i = 0; i < g; i++) glq_gemm_nt(c->q + row0 + (size_t)i * hd, hd, 1, K, GLQ_F32, hd, L, hd, NULL, S + (size_t)i * L, L);
      for (int i = 0; i < g; i++) {
        softmax_row(S + (size_t)i * L, L, L, scale);
        pv_rows(S + (size_t)i * L, L, V, hd, c->att + row0 + (size_t)i * hd);
      }
      continue;
    }
    for (int t0 = 0; t0 < T; t0 += QBLOCK) {
      int nb = T - t0 < QBLOCK ? T - t0 : QBLOCK, Lt = pos0 + t0 + nb;
      size_t row0 = (((size_t)b * T + t0) * nh + h) * hd;
      glq_gemm_nt(c->q + row0, (int64_t)nh * hd, nb, K, GLQ_F32, hd, Lt, hd, NULL, S, Lt);
      for (int i = 0; i < nb; i++) softmax_row(S + (size_t)i * Lt, pos0 + t0 + i + 1, Lt, scale);
      if (transpose)
        glq_gemm_nt(S, Lt, nb, Vt, GLQ_F32, L, hd, Lt, NULL, c->att + row0, (int64_t)nh * hd);
      else
        for (int i = 0; i < nb; i++)
          pv_rows(S + (size_t)i * Lt, pos0 + t0 + i + 1, V, hd, c->att + row0 + (size_t)i * nh * hd);
    }
  }
  free(buf);
}

/* ---- Hessian capture ---- */

static int capture(glq_llama *m, glq_llama_capture *cap, int which, const float *x, int64_t n) {
  if (!cap || !cap->H[which]) return GLQ_OK;
  int64_t d = glq_llama_capture_dim(m, which);
  int rc = grow(&m->capbuf, &m->capbuf_n, (size_t)CAP_CHUNK * (size_t)d * sizeof(double));
  if (rc) return rc;
  double *buf = m->capbuf, *H = cap->H[which];
  for (int64_t r0 = 0; r0 < n; r0 += CAP_CHUNK) {
    int64_t nr = n - r0 < CAP_CHUNK ? n - r0 : CAP_CHUNK;
    glq_convert(x + r0 * d, GLQ_F32, buf, GLQ_F64, nr * d);
    glq_dsyrk_tn_acc(d, nr, buf, H);
  }
  for (int64_t i = 1; i < d; i++)
    for (int64_t j = 0; j < i; j++) H[i * d + j] = H[j * d + i];
  cap->rows[which] += n;
  return GLQ_OK;
}

/* ---- the pieces ---- */

int glq_llama_embed(glq_llama *m, const int32_t *tokens, int64_t n, float *hidden) {
  if (!m->emb.st) return glq_error(GLQ_EINVAL, "llama embed: no token embedding set");
  int64_t d = m->cfg.dim;
  size_t es = glq_dtype_size(m->emb.dtype);
  const char *e = glq_tensor_data(&m->emb);
  for (int64_t i = 0; i < n; i++) {
    if (tokens[i] < 0 || tokens[i] >= m->cfg.vocab)
      return glq_error(GLQ_EINVAL, "llama embed: token %d at index %lld outside [0, %d)", (int)tokens[i],
                       (long long)i, m->cfg.vocab);
    glq_convert(e + (size_t)tokens[i] * d * es, m->emb.dtype, hidden + i * d, GLQ_F32, d);
  }
  return GLQ_OK;
}

static int run_linear(glq_linear *lin, const float *x, int64_t n, float *y, int l, const char *what) {
  int rc = glq_linear_forward(lin, x, n, y);
  if (rc) glq_error_prefix("layer %d %s", l, what);
  return rc;
}

/* Up to this many rows, the linears that share an input (q, k, v; gate, up) run side by side, one per
 * thread, when there are no more threads than linears: one dispatch instead of one per linear, and each
 * layer's serial input/output transforms overlap the others' (a decode step's linears are short, so their
 * dispatches and transforms weigh). Each linear's result does not depend on where it runs. */
#define SIDE_BY_SIDE_ROWS 8
#define SIDE_BY_SIDE_MAX 3

/* Work that follows linear i on its output alone (e.g. q's norm and rotation), run where the linear ran. */
typedef struct {
  void (*fn)(void *ctx, int i);
  void *ctx;
} after_fn;

typedef struct {
  glq_linear *const *lin;
  const float *x;
  int64_t n;
  float *const *y;
  const after_fn *after;
  int count;
  atomic_int next;                  /* the next linear to claim, in the order given (largest first) */
  int rc[SIDE_BY_SIDE_MAX];
  char msg[SIDE_BY_SIDE_MAX][512];  /* glq_errmsg is per thread */
} side_ctx;

static void side_range(void *vctx, int64_t p0, int64_t p1) {
  side_ctx *c = vctx;
  for (int64_t p = p0; p < p1; p++)
    for (int i; (i = atomic_fetch_add(&c->next, 1)) < c->count;)
      if ((c->rc[i] = glq_linear_forward(c->lin[i], c->x, c->n, c->y[i]))) snprintf(c->msg[i], sizeof c->msg[i], "%s", glq_errmsg());
      else if (c->after) c->after->fn(c->after->ctx, i);
}

/* y[i] = lin[i](x) for count <= SIDE_BY_SIDE_MAX linears of one input of n rows, each followed by
 * after(i) when after is not NULL */
static int run_linears(glq_linear *const *lin, const char *const *what, int count, const float *x, int64_t n,
                       float *const *y, const after_fn *after, int l) {
  const int threads = n <= SIDE_BY_SIDE_ROWS ? glq_num_threads() : 0;
  int distinct = 1; /* a layer's scratch serves one call at a time */
  for (int i = 0; i < count; i++)
    for (int j = 0; j < i; j++) distinct &= lin[i] != lin[j];
  if (threads > 1 && threads <= count && distinct) {
    side_ctx c = {.lin = lin, .x = x, .n = n, .y = y, .after = after, .count = count};
    atomic_init(&c.next, 0);
    glq_parallel_for(threads, 1, side_range, &c);
    for (int i = 0; i < count; i++)
      if (c.rc[i]) return glq_error(c.rc[i], "layer %d %s: %s", l, what[i], c.msg[i]);
    return GLQ_OK;
  }
  int rc = GLQ_OK;
  for (int i = 0; i < count && !rc; i++)
    if (!(rc = run_linear(lin[i], x, n, y[i], l, what[i])) && after) after->fn(after->ctx, i);
  return rc;
}

typedef struct {
  const glq_llama *m;
  const layer_t *L;
  float *q, *k;
  int64_t N;
  int T, pos0;
} qk_ctx;

/* after q (i = 0) or k (i = 1): the optional per-head norm, then the rotation */
static void qk_after(void *vctx, int i) {
  const qk_ctx *c = vctx;
  const glq_llama_config *f = &c->m->cfg;
  if (i > 1) return;
  float *x = i == 0 ? c->q : c->k;
  int heads = i == 0 ? f->n_heads : f->n_kv_heads;
  if (f->qk_norm) rmsnorm(x, x, i == 0 ? c->L->q_norm : c->L->k_norm, c->N * heads, f->head_dim, f->norm_eps);
  rope(c->m, x, c->N, heads, c->T, c->pos0);
}

int glq_llama_layer(glq_llama *m, int l, float *hidden, int B, int T, int pos0, glq_kvcache *cache,
                    glq_llama_capture *cap) {
  const glq_llama_config *f = &m->cfg;
  if (l < 0 || l >= f->n_layers) return glq_error(GLQ_EINVAL, "llama layer: index %d out of range [0, %d)", l, f->n_layers);
  layer_t *L = &m->layers[l];
  if (!L->q) return glq_error(GLQ_EINVAL, "llama layer %d: weights not set", l);
  if (B < 1 || T < 1 || pos0 < 0 || T > f->max_seq - pos0)
    return glq_error(GLQ_EINVAL, "llama layer %d: B=%d, T=%d at position %d does not fit max_seq %d", l, B, T, pos0, f->max_seq);
  if (cache) {
    const glq_kvcache_config *kc = glq_kvcache_config_of(cache);
    if (kc->n_layers != f->n_layers || kc->n_kv_heads != f->n_kv_heads || kc->head_dim != f->head_dim || kc->batch != B)
      return glq_error(GLQ_EINVAL, "llama layer %d: cache (layers %d, kv heads %d, head_dim %d, batch %d) does not match the model/batch %d",
                       l, kc->n_layers, kc->n_kv_heads, kc->head_dim, kc->batch, B);
    if (pos0 != glq_kvcache_len(cache))
      return glq_error(GLQ_EINVAL, "llama layer %d: position %d but the cache holds %d", l, pos0, glq_kvcache_len(cache));
    if (T > kc->max_seq - pos0)
      return glq_error(GLQ_EINVAL, "llama layer %d: %d new positions after %d exceed the cache's max_seq %d", l, T, pos0, kc->max_seq);
  }
  int64_t N = (int64_t)B * T, dim = f->dim, ffn = f->ffn_dim;
  int64_t qd = (int64_t)f->n_heads * f->head_dim, kd = (int64_t)f->n_kv_heads * f->head_dim;
  int rc = grow(&m->ws, &m->ws_n, (size_t)N * (size_t)(2 * dim + 2 * qd + 2 * kd + 2 * ffn) * sizeof(float));
  if (rc) return rc;
  float *xn = m->ws, *q = xn + N * dim, *k = q + N * qd, *v = k + N * kd, *att = v + N * kd;
  float *g = att + N * qd, *u = g + N * ffn, *tmp = u + N * ffn;

  rmsnorm(xn, hidden, L->attn_norm, N, dim, f->norm_eps);
  if ((rc = capture(m, cap, GLQ_CAP_QKV, xn, N))) return rc;
  qk_ctx qc = {m, L, q, k, N, T, pos0};
  if ((rc = run_linears((glq_linear *[]){L->q, L->k, L->v}, (const char *[]){"q", "k", "v"}, 3, xn, N,
                        (float *[]){q, k, v}, &(after_fn){qk_after, &qc}, l)))
    return rc;
  /* An f32 cache takes the new positions first and attention reads every key/value in place; the
   * other dtypes are read back dequantized, with the new positions taken from k, v as computed. */
  int in_place = cache && glq_kvcache_config_of(cache)->dtype == GLQ_KV_F32;
  if (in_place && (rc = glq_kvcache_write(cache, l, T, k, v))) return rc;
  attn_ctx ac = {m, cache, l, B, T, pos0, q, k, v, att, in_place, 0};
  glq_parallel_for((int64_t)B * f->n_heads, 1, attn_range, &ac);
  if (atomic_load(&ac.failed)) return glq_error(GLQ_ENOMEM, "llama layer %d: cannot allocate attention scratch", l);
  if (cache && !in_place && (rc = glq_kvcache_write(cache, l, T, k, v))) return rc;
  if ((rc = capture(m, cap, GLQ_CAP_O, att, N))) return rc;
  if ((rc = run_linear(L->o, att, N, tmp, l, "o"))) return rc;
  for (int64_t i = 0; i < N * dim; i++) hidden[i] += tmp[i];

  rmsnorm(xn, hidden, L->ffn_norm, N, dim, f->norm_eps);
  if ((rc = capture(m, cap, GLQ_CAP_GATE_UP, xn, N))) return rc;
  if ((rc = run_linears((glq_linear *[]){L->gate, L->up}, (const char *[]){"gate", "up"}, 2, xn, N, (float *[]){g, u}, NULL, l)))
    return rc;
  swiglu_ctx sc = {g, u};
  glq_parallel_for(N * ffn, 512, swiglu_range, &sc);
  if ((rc = capture(m, cap, GLQ_CAP_DOWN, g, N))) return rc;
  if ((rc = run_linear(L->down, g, N, tmp, l, "down"))) return rc;
  for (int64_t i = 0; i < N * dim; i++) hidden[i] += tmp[i];
  return GLQ_OK;
}

typedef struct {
  const glq_llama *m;
  const float *x;
  float *y;
} q8_head_ctx;

static void q8_head_range(void *vctx, int64_t j0, int64_t j1) {
  const q8_head_ctx *c = vctx;
  glq_gemv_q8_0(c->x, glq_tensor_data(&c->m->head_q8), j0, j1, c->m->cfg.dim, c->y);
}

int glq_llama_head(glq_llama *m, const float *hidden, int64_t n, float *logits) {
  glq_linear *head = glq_llama_head_linear(m);
  if (!head || !m->final_norm) return glq_error(GLQ_EINVAL, "llama head: final norm or output head not set");
  int rc = grow(&m->ws, &m->ws_n, (size_t)n * (size_t)m->cfg.dim * sizeof(float));
  if (rc) return rc;
  rmsnorm(m->ws, hidden, m->final_norm, n, m->cfg.dim, m->cfg.norm_eps);
  if (m->head_q8.st && !m->head && n <= 4) {
    for (int64_t i = 0; i < n; i++) {
      q8_head_ctx hc = {m, (const float *)m->ws + i * m->cfg.dim, logits + i * m->cfg.vocab};
      glq_parallel_for(m->cfg.vocab, 256, q8_head_range, &hc);
    }
    return GLQ_OK;
  }
  if ((rc = glq_linear_forward(head, m->ws, n, logits))) glq_error_prefix("output head");
  return rc;
}

int glq_llama_forward(glq_llama *m, glq_kvcache *cache, const int32_t *tokens, int B, int T,
                      float *logits, int all_logits) {
  if (B < 1 || T < 1) return glq_error(GLQ_EINVAL, "llama forward: B=%d and T=%d must be >= 1", B, T);
  int64_t N = (int64_t)B * T, dim = m->cfg.dim;
  int pos0 = cache ? glq_kvcache_len(cache) : 0;
  int rc = grow(&m->hid, &m->hid_n, (size_t)(N + B) * (size_t)dim * sizeof(float));
  if (rc) return rc;
  float *h = m->hid, *last = h + N * dim;
  if ((rc = glq_llama_embed(m, tokens, N, h))) return rc;
  for (int l = 0; l < m->cfg.n_layers; l++)
    if ((rc = glq_llama_layer(m, l, h, B, T, pos0, cache, NULL))) return rc;
  if (cache && (rc = glq_kvcache_advance(cache, T))) return rc;
  if (all_logits) return glq_llama_head(m, h, N, logits);
  for (int b = 0; b < B; b++) memcpy(last + (size_t)b * dim, h + ((int64_t)b * T + T - 1) * dim, (size_t)dim * sizeof(float));
  return glq_llama_head(m, last, B, logits);
}

int glq_llama_layer_view(const glq_llama *m, int l, glq_llama_view *out) {
  memset(out, 0, sizeof *out);
  if (l < 0 || l >= m->cfg.n_layers) return glq_error(GLQ_EINVAL, "llama layer %d out of range [0, %d)", l, m->cfg.n_layers);
  const layer_t *L = &m->layers[l];
  if (!L->q) return glq_error(GLQ_EINVAL, "llama layer %d: weights not set", l);
  *out = (glq_llama_view){L->attn_norm, L->ffn_norm, L->q_norm, L->k_norm, L->q, L->k, L->v, L->o, L->gate, L->up, L->down};
  return GLQ_OK;
}

const glq_tensor *glq_llama_embedding(const glq_llama *m) { return m->emb.st ? &m->emb : NULL; }

const float *glq_llama_final_norm(const glq_llama *m) { return m->final_norm; }

void glq_llama_rope_tables(const glq_llama *m, const float **cos_out, const float **sin_out) {
  *cos_out = m->rope_cos;
  *sin_out = m->rope_sin;
}
