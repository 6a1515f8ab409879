/* kvcache.c - f32 / f16 / KIVI-INT8 key-value cache; the layout is [layer][b][kv head][pos][dim]. */
#include "kvcache.h"
#include "../core/error.h"
#include "../core/tensor.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <stdint.h>
#if defined(__linux__)
#include <sys/mman.h>
#endif
#if defined(__x86_64__)
#include <immintrin.h>
#endif

struct glq_kvcache {
  glq_kvcache_config cfg;
  int len;
  int window;            /* INT8: f32 ring slots per stream (residual + group) */
  size_t bytes;
  void *k, *v;           /* f32 / f16 / u8 codes, [stream][max_seq][hd] */
  float *kscale, *kmin;  /* INT8 keys: [stream][max_seq / group][hd] */
  float *vscale, *vmin;  /* INT8 values: [stream][max_seq] */
  float *rk, *rv;        /* INT8 f32 window: [stream][window][hd], position p in slot p % window */
  struct { void *p; size_t n; int mapped; } part[8]; /* what alloc_part handed out, for glq_kvcache_free */
  int nparts;
};

static size_t stream(const glq_kvcache *c, int layer, int b, int kvh) {
  return ((size_t)layer * (size_t)c->cfg.batch + (size_t)b) * (size_t)c->cfg.n_kv_heads + (size_t)kvh;
}

/* INT8: positions below this are quantized once the cache holds n. */
static int n_quantized(const glq_kvcache *c, int n) {
  int r = c->cfg.residual, g = c->cfg.group;
  return n > r ? (n - r) / g * g : 0;
}

/* Zeroed memory for one part of the cache. Parts of 2 MB and more are anonymous mappings with huge pages advised:
 * still committed only as positions are written (a cache for a 128 K context costs what is used), but a stream's
 * pages fault in 2 MB at a time — with 4 KB pages a decode step faulted in a fresh page per stream every 16
 * positions (~5 µs of a SmolLM2 layer's step in a VM) and each stream's reads walked ~60 pages. */
#define HUGE_PART ((size_t)2 << 20)
static void *alloc_part(glq_kvcache *c, size_t n, size_t es, int *ok) {
  if (!*ok || n == 0) return NULL;
  if (c->nparts == (int)(sizeof c->part / sizeof c->part[0]) || n > SIZE_MAX / es) {
    *ok = 0;
    c->bytes = SIZE_MAX;
    return NULL;
  }
  size_t bytes = n * es;
  void *p = NULL;
  int mapped = 0;
#if defined(__linux__) && defined(MAP_ANONYMOUS)
  if (bytes >= HUGE_PART) {
    p = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) p = NULL;
#ifdef MADV_HUGEPAGE
    if (p) (void)madvise(p, bytes, MADV_HUGEPAGE); /* advice only: without it the cache works the same */
#endif
    mapped = p != NULL;
  }
#endif
  if (!mapped) p = calloc(n, es);
  if (!p) {
    *ok = 0;
  } else {
    c->part[c->nparts].p = p;
    c->part[c->nparts].n = bytes;
    c->part[c->nparts++].mapped = mapped;
  }
  c->bytes += bytes;
  return p;
}

int glq_kvcache_new(const glq_kvcache_config *cfg, glq_kvcache **out) {
  *out = NULL;
  glq_kvcache_config k = *cfg;
  if (k.n_layers < 1 || k.batch < 1 || k.n_kv_heads < 1 || k.head_dim < 1 || k.max_seq < 1)
    return glq_error(GLQ_EINVAL, "kvcache: layers %d, batch %d, kv heads %d, head_dim %d, max_seq %d must all be >= 1",
                     k.n_layers, k.batch, k.n_kv_heads, k.head_dim, k.max_seq);
  if (k.dtype != GLQ_KV_F32 && k.dtype != GLQ_KV_F16 && k.dtype != GLQ_KV_INT8)
    return glq_error(GLQ_EINVAL, "kvcache: unknown dtype %d", (int)k.dtype);
  if (k.residual < 0) k.residual = 128;
  if (k.group <= 0) k.group = 32;
  glq_kvcache *c = calloc(1, sizeof *c);
  if (!c) return glq_error(GLQ_ENOMEM, "kvcache: out of memory");
  c->cfg = k;
  size_t ns = (size_t)k.n_layers * (size_t)k.batch * (size_t)k.n_kv_heads;
  size_t rows = ns * (size_t)k.max_seq, hd = (size_t)k.head_dim;
  size_t es = k.dtype == GLQ_KV_F32 ? 4 : k.dtype == GLQ_KV_F16 ? 2 : 1;
  int ok = 1;
  c->bytes = sizeof *c;
  c->k = alloc_part(c, rows * hd, es, &ok);
  c->v = alloc_part(c, rows * hd, es, &ok);
  if (k.dtype == GLQ_KV_INT8) {
    size_t groups = ns * (size_t)((k.max_seq + k.group - 1) / k.group);
    c->window = k.residual + k.group;
    c->kscale = alloc_part(c, groups * hd, sizeof(float), &ok);
    c->kmin = alloc_part(c, groups * hd, sizeof(float), &ok);
    c->vscale = alloc_part(c, rows, sizeof(float), &ok);
    c->vmin = alloc_part(c, rows, sizeof(float), &ok);
    c->rk = alloc_part(c, ns * (size_t)c->window * hd, sizeof(float), &ok);
    c->rv = alloc_part(c, ns * (size_t)c->window * hd, sizeof(float), &ok);
  }
  if (!ok) {
    size_t want = c->bytes;
    glq_kvcache_free(c);
    return glq_error(GLQ_ENOMEM, "kvcache: cannot allocate %zu bytes", want);
  }
  *out = c;
  return GLQ_OK;
}

void glq_kvcache_free(glq_kvcache *c) {
  if (!c) return;
  for (int i = 0; i < c->nparts; i++) {
#if defined(__linux__) && defined(MAP_ANONYMOUS)
    if (c->part[i].mapped) {
      munmap(c->part[i].p, c->part[i].n);
      continue;
    }
#endif
    free(c->part[i].p);
  }
  free(c);
}

const glq_kvcache_config *glq_kvcache_config_of(const glq_kvcache *c) { return &c->cfg; }
int glq_kvcache_len(const glq_kvcache *c) { return c->len; }
void glq_kvcache_reset(glq_kvcache *c) { c->len = 0; }
size_t glq_kvcache_bytes(const glq_kvcache *c) { return c->bytes; }

/* f16 <-> f32 rows with F16C when present: IEEE round-to-nearest-even, the same bits as glq_convert. */
#if defined(__x86_64__)
__attribute__((target("avx,f16c"))) static size_t f16_load_f16c(const uint16_t *s, float *d, size_t n) {
  size_t i = 0;
  for (; i + 8 <= n; i += 8) _mm256_storeu_ps(d + i, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(s + i))));
  return i;
}
__attribute__((target("avx,f16c"))) static size_t f16_store_f16c(const float *s, uint16_t *d, size_t n) {
  size_t i = 0;
  for (; i + 8 <= n; i += 8)
    _mm_storeu_si128((__m128i *)(d + i), _mm256_cvtps_ph(_mm256_loadu_ps(s + i), _MM_FROUND_TO_NEAREST_INT));
  return i;
}
static int have_f16c(void) { return __builtin_cpu_supports("f16c") && __builtin_cpu_supports("avx"); }
#else
static size_t f16_load_f16c(const uint16_t *s, float *d, size_t n) { (void)s; (void)d; (void)n; return 0; }
static size_t f16_store_f16c(const float *s, uint16_t *d, size_t n) { (void)s; (void)d; (void)n; return 0; }
static int have_f16c(void) { return 0; }
#endif

static void f16_load(const uint16_t *s, float *d, size_t n) {
  size_t i = have_f16c() ? f16_load_f16c(s, d, n) : 0;
  glq_convert(s + i, GLQ_F16, d + i, GLQ_F32, (int64_t)(n - i));
}

static void f16_store(const float *s, uint16_t *d, size_t n) {
  size_t i = have_f16c() ? f16_store_f16c(s, d, n) : 0;
  glq_convert(s + i, GLQ_F32, d + i, GLQ_F16, (int64_t)(n - i));
}

/* Asymmetric 8-bit code of x with minimum lo and step s (s == 0: every value equals lo). */
static uint8_t quant8(float x, float lo, float s) {
  if (s <= 0.0f) return 0;
  float q = nearbyintf((x - lo) / s);
  return (uint8_t)(q < 0.0f ? 0.0f : q > 255.0f ? 255.0f : q);
}

/* INT8: move window positions [a, a + group) of stream s into codes (keys per channel, values per token). */
static void quantize_group(glq_kvcache *c, size_t s, int a) {
  int hd = c->cfg.head_dim, g = c->cfg.group, w = c->window;
  const float *rk = c->rk + s * (size_t)w * hd, *rv = c->rv + s * (size_t)w * hd;
  uint8_t *kq = (uint8_t *)c->k + (s * c->cfg.max_seq + a) * hd;
  uint8_t *vq = (uint8_t *)c->v + (s * c->cfg.max_seq + a) * hd;
  size_t gi = (s * (size_t)((c->cfg.max_seq + g - 1) / g) + (size_t)(a / g)) * hd;
  for (int ch = 0; ch < hd; ch++) {
    float lo = INFINITY, hi = -INFINITY;
    for (int t = 0; t < g; t++) {
      float x = rk[(size_t)((a + t) % w) * hd + ch];
      lo = x < lo ? x : lo;
      hi = x > hi ? x : hi;
    }
    float sc = (hi - lo) / 255.0f;
    c->kscale[gi + ch] = sc;
    c->kmin[gi + ch] = lo;
    for (int t = 0; t < g; t++) kq[(size_t)t * hd + ch] = quant8(rk[(size_t)((a + t) % w) * hd + ch], lo, sc);
  }
  for (int t = 0; t < g; t++) {
    const float *x = rv + (size_t)((a + t) % w) * hd;
    float lo = INFINITY, hi = -INFINITY;
    for (int ch = 0; ch < hd; ch++) {
      lo = x[ch] < lo ? x[ch] : lo;
      hi = x[ch] > hi ? x[ch] : hi;
    }
    float sc = (hi - lo) / 255.0f;
    size_t p = s * c->cfg.max_seq + (size_t)(a + t);
    c->vscale[p] = sc;
    c->vmin[p] = lo;
    for (int ch = 0; ch < hd; ch++) vq[(size_t)t * hd + ch] = quant8(x[ch], lo, sc);
  }
}

int glq_kvcache_write(glq_kvcache *c, int layer, int T, const float *k, const float *v) {
  const glq_kvcache_config *f = &c->cfg;
  if (layer < 0 || layer >= f->n_layers)
    return glq_error(GLQ_EINVAL, "kvcache: layer %d out of range [0, %d)", layer, f->n_layers);
  if (T < 0 || T > f->max_seq - c->len)
    return glq_error(GLQ_EINVAL, "kvcache: %d new positions after %d exceed max_seq %d", T, c->len, f->max_seq);
  size_t hd = (size_t)f->head_dim;
  for (int t = 0; t < T; t++) {
    int p = c->len + t;
    for (int b = 0; b < f->batch; b++)
      for (int h = 0; h < f->n_kv_heads; h++) {
        size_t s = stream(c, layer, b, h);
        size_t src = (((size_t)b * T + t) * f->n_kv_heads + h) * hd;
        size_t dst = (s * f->max_seq + p) * hd;
        switch (f->dtype) {
        case GLQ_KV_F32:
          memcpy((float *)c->k + dst, k + src, hd * sizeof(float));
          memcpy((float *)c->v + dst, v + src, hd * sizeof(float));
          break;
        case GLQ_KV_F16:
          f16_store(k + src, (uint16_t *)c->k + dst, hd);
          f16_store(v + src, (uint16_t *)c->v + dst, hd);
          break;
        case GLQ_KV_INT8: {
          size_t slot = (s * c->window + (size_t)(p % c->window)) * hd;
          memcpy(c->rk + slot, k + src, hd * sizeof(float));
          memcpy(c->rv + slot, v + src, hd * sizeof(float));
          int a = n_quantized(c, p);
          if (n_quantized(c, p + 1) > a) quantize_group(c, s, a);
          break;
        }
        }
      }
  }
  return GLQ_OK;
}

int glq_kvcache_advance(glq_kvcache *c, int T) {
  if (T < 0 || T > c->cfg.max_seq - c->len)
    return glq_error(GLQ_EINVAL, "kvcache: advancing %d positions after %d exceeds max_seq %d", T, c->len, c->cfg.max_seq);
  c->len += T;
  return GLQ_OK;
}

int glq_kvcache_rows_f32(const glq_kvcache *c, int layer, int b, int kvh, const float **k, const float **v) {
  const glq_kvcache_config *f = &c->cfg;
  if (f->dtype != GLQ_KV_F32) return 0;
  size_t base = stream(c, layer, b, kvh) * f->max_seq * (size_t)f->head_dim;
  *k = (const float *)c->k + base;
  *v = (const float *)c->v + base;
  return 1;
}

void glq_kvcache_read(const glq_kvcache *c, int layer, int b, int kvh, int n, float *k, float *v) {
  const glq_kvcache_config *f = &c->cfg;
  size_t s = stream(c, layer, b, kvh), hd = (size_t)f->head_dim, base = s * f->max_seq * hd;
  if (f->dtype == GLQ_KV_F32) {
    memcpy(k, (const float *)c->k + base, (size_t)n * hd * sizeof(float));
    memcpy(v, (const float *)c->v + base, (size_t)n * hd * sizeof(float));
    return;
  }
  if (f->dtype == GLQ_KV_F16) {
    f16_load((const uint16_t *)c->k + base, k, (size_t)n * hd);
    f16_load((const uint16_t *)c->v + base, v, (size_t)n * hd);
    return;
  }
  int nq = n_quantized(c, n), g = f->group;
  const uint8_t *kq = (const uint8_t *)c->k + base, *vq = (const uint8_t *)c->v + base;
  const float *ks = c->kscale + s * (size_t)((f->max_seq + g - 1) / g) * hd;
  const float *km = c->kmin + (ks - c->kscale);
  for (int p = 0; p < nq; p++) {
    const float *sc = ks + (size_t)(p / g) * hd, *mn = km + (size_t)(p / g) * hd;
    float vs = c->vscale[s * f->max_seq + p], vm = c->vmin[s * f->max_seq + p];
    for (size_t ch = 0; ch < hd; ch++) {
      k[p * hd + ch] = kq[p * hd + ch] * sc[ch] + mn[ch];
      v[p * hd + ch] = vq[p * hd + ch] * vs + vm;
    }
  }
  for (int p = nq; p < n; p++) {
    size_t slot = (s * c->window + (size_t)(p % c->window)) * hd;
    memcpy(k + p * hd, c->rk + slot, hd * sizeof(float));
    memcpy(v + p * hd, c->rv + slot, hd * sizeof(float));
  }
}
