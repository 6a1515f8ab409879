/* trellis_linear.c - RHT + LDLQ with a trellis code, glq 0.8.16's trellis artifacts, and the CPU layer
 * (trellis_linear.h). */
#include "trellis_linear.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "../core/error.h"
#include "../core/pool.h"
#include "../linalg/linalg.h"
#include "rht.h"

/* Wscale is glq's rule (fscale 1): on a correlated test Hessian 0.9..1.1 x it change the 2..4-bit proxy loss by
 * under 6 % with no consistent winner, 1.2 x and more are worse (docs/trellis.md) */

int64_t glq_trellis_pad(int64_t d) { return (d + 31) / 32 * 32; }

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

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
  int rc = glq_rht_weight_inverse_kind(wt, mp, np, su, sv, kind, full);
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

/* ---- quantization ---- */

typedef struct {
  float *wpad, *su, *sv, *wt, *ht1, *l, *d, *wr, *r, *tgt, *q, *dw, *what, *h1, *g;
  double *hpad, *a;
  uint16_t *states, *bst;
} work;

static void work_free(work *x) {
  free(x->wpad), free(x->su), free(x->sv), free(x->wt), free(x->ht1), free(x->l), free(x->d), free(x->wr), free(x->r);
  free(x->tgt), free(x->q), free(x->dw), free(x->what), free(x->h1), free(x->g), free(x->hpad), free(x->a);
  free(x->states), free(x->bst);
}

#define ALLOC(p, count) (((p) = malloc((size_t)(count) * sizeof *(p))) == NULL)

/* tr(dw·H·dwᵀ) for dw (rows x n) and h (n x n): one SYRK, then <G, H> summed in f64 by rows */
static int proxy(const float *dw, int64_t rows, int64_t n, const float *h, float *g, double *out) {
  memset(g, 0, (size_t)(n * n) * sizeof *g);
  glq_ssyrk_tn(n, rows, dw, g);
  double s = 0;
  for (int64_t i = 0; i < n; i++) {
    double r = 0;
    for (int64_t j = i + 1; j < n; j++) r += (double)g[i * n + j] * h[i * n + j];
    s += 2 * r + (double)g[i * n + i] * h[i * n + i];
  }
  *out = s;
  return 0;
}

static int quantize(const float *w, int64_t m, int64_t n, const double *h, const glq_quant_opts *o, work *x,
                    glq_trellis_artifacts *out, glq_quant_stats *st) {
  const double t0 = now();
  if (m < 1 || n < 1) return glq_error(GLQ_EINVAL, "weight shape %lld x %lld is empty", (long long)m, (long long)n);
  if (o->bits < 2 || o->bits > 4) return glq_error(GLQ_EINVAL, "trellis: bits must be 2, 3 or 4, got %d", o->bits);
  if (!(o->damp >= 0) || !isfinite(o->damp)) return glq_error(GLQ_EINVAL, "damp must be finite and >= 0, got %g", o->damp);
  for (int64_t i = 0; i < m * n; i++)
    if (!isfinite(w[i])) return glq_error(GLQ_EINVAL, "weight has a non-finite value at (%lld, %lld)", (long long)(i / n), (long long)(i % n));
  for (int64_t i = 0; h && i < n * n; i++)
    if (!isfinite(h[i])) return glq_error(GLQ_EINVAL, "Hessian has a non-finite value at (%lld, %lld)", (long long)(i / n), (long long)(i % n));
  const int K = o->bits;
  const int64_t mp = glq_trellis_pad(m), np = glq_trellis_pad(n), tn = np / 16, nt = (mp / 16) * tn;
  glq_trellis_code c;
  int rc = glq_trellis_code_3inst(&c, K);
  if (rc) return rc;
  const int steps = GLQ_TRELLIS_TILE / c.V;
  if (ALLOC(x->wpad, mp * np) || ALLOC(x->su, mp) || ALLOC(x->sv, np) || ALLOC(x->wt, mp * np) ||
      ALLOC(x->ht1, np * np) || ALLOC(x->hpad, np * np) || ALLOC(x->a, np * np) || ALLOC(x->l, np * np) ||
      ALLOC(x->d, np * 16) || ALLOC(x->wr, mp * np) || ALLOC(x->r, mp * np) || ALLOC(x->tgt, mp * 16) ||
      ALLOC(x->q, mp * 16) || ALLOC(x->states, nt * steps) || ALLOC(x->bst, (mp / 16) * steps)) {
    glq_trellis_code_free(&c);
    return glq_error(GLQ_ENOMEM, "out of memory for a %lld x %lld trellis layer", (long long)m, (long long)n);
  }
  memset(x->wpad, 0, (size_t)(mp * np) * sizeof(float));
  for (int64_t i = 0; i < m; i++) memcpy(x->wpad + i * np, w + i * n, (size_t)n * sizeof(float));
  memset(x->hpad, 0, (size_t)(np * np) * sizeof(double));
  double mu = 1;
  if (h) {
    mu = 0;
    for (int64_t i = 0; i < n; i++) mu += h[i * n + i];
    mu /= (double)n;
    for (int64_t i = 0; i < n; i++) memcpy(x->hpad + i * np, h + i * n, (size_t)n * sizeof(double));
  } else {
    for (int64_t i = 0; i < n; i++) x->hpad[i * np + i] = 1;
  }
  const double damp1 = o->damp * mu;
  glq_rht_signs(o->seed, o->name, "SU", mp, x->su);
  glq_rht_signs(o->seed, o->input_name ? o->input_name : o->name, "SV", np, x->sv);
  if ((rc = glq_rht_weight_kind(x->wpad, mp, np, x->su, x->sv, o->transform, x->wt)) ||
      (rc = glq_rht_hessian_kind(x->hpad, np, damp1, x->sv, o->transform, x->ht1))) {
    glq_trellis_code_free(&c);
    return rc;
  }
  /* damp #2 with glq's ladder (as ldlq.c), block LDL with 16x16 blocks; identity if all fail */
  double mu2 = 0;
  for (int64_t i = 0; i < np; i++) mu2 += x->ht1[i * np + i];
  mu2 /= (double)np;
  int level, frc = 1;
  double rel = 0;
  for (level = 0; level < 3 && frc; level++) {
    rel = level == 0 ? o->damp : level == 1 ? fmax(10 * o->damp, 0.1) : fmax(100 * o->damp, 1.0);
    if (!(mu2 > 0) || !isfinite(mu2)) continue;
    for (int64_t i = 0; i < np * np; i++) x->a[i] = x->ht1[i];
    for (int64_t i = 0; i < np; i++) x->a[i * np + i] += rel * mu2;
    frc = glq_cholesky(x->a, np);
    if (!frc) frc = glq_block_ldl(x->a, np, 16, x->l, x->d);
  }
  if (frc) {
    level = 3, rel = 0;
    memset(x->l, 0, (size_t)(np * np) * sizeof(float));
    for (int64_t i = 0; i < np; i++) x->l[i * np + i] = 1;
  } else {
    level--;
  }
  const double t_prep = now();

  double ss = 0;
  for (int64_t i = 0; i < mp * np; i++) ss += (double)x->wt[i] * x->wt[i];
  const double rms = sqrt(ss / (double)(mp * np)), fscale = 1.0;
  const float wscale = rms > 1e-10 ? (float)(rms * c.opt_scale * fscale) : 1.0f;
  for (int64_t i = 0; i < mp * np; i++) x->wr[i] = x->wt[i] / wscale;
  /* reverse sweep: target of block k = Wr_k + R_{>k}·L_{>k,k} (R = Wr - Q of the finished blocks) */
  for (int64_t k = tn - 1; k >= 0 && !rc; k--) {
    const int64_t kb = 16 * k, ke = kb + 16;
    for (int64_t i = 0; i < mp; i++) memcpy(x->tgt + i * 16, x->wr + i * np + kb, 16 * sizeof(float));
    if (o->feedback && ke < np)
      glq_sgemm(0, 0, mp, 16, np - ke, 1.0f, x->r + ke, np, x->l + ke * np + kb, np, 1.0f, x->tgt, 16);
    rc = glq_trellis_quantize_block(&c, x->tgt, mp, 16, x->q, 16, x->bst);
    for (int64_t i = 0; !rc && i < mp; i++)
      for (int j = 0; j < 16; j++) x->r[i * np + kb + j] = x->wr[i * np + kb + j] - x->q[i * 16 + j];
    for (int64_t rt = 0; !rc && rt < mp / 16; rt++)
      memcpy(x->states + (rt * tn + k) * steps, x->bst + rt * steps, (size_t)steps * sizeof(uint16_t));
  }
  const double t_sweep = now();
  memset(out, 0, sizeof *out);
  out->variant = GLQ_TRELLIS_3INST, out->K = K, out->m = m, out->n = n, out->transform = o->transform;
  int64_t shp[2] = {nt, 16 * K};
  if (!rc) rc = glq_tensor_new(GLQ_I16, 2, shp, &out->packed);
  if (!rc) rc = glq_trellis_pack_layer(&c, x->states, mp, np, 1, glq_tensor_data(&out->packed));
  if (!rc) rc = glq_tensor_new(GLQ_F16, 1, &mp, &out->su);
  if (!rc) rc = glq_tensor_new(GLQ_F16, 1, &np, &out->sv);
  if (!rc) rc = glq_tensor_new(GLQ_F32, 0, shp, &out->wscale);
  glq_trellis_code_free(&c);
  if (rc) return rc;
  uint16_t *s = glq_tensor_data(&out->su);
  for (int64_t i = 0; i < mp; i++) s[i] = glq_f32_to_f16(x->su[i]);
  s = glq_tensor_data(&out->sv);
  for (int64_t i = 0; i < np; i++) s[i] = glq_f32_to_f16(x->sv[i]);
  *(float *)glq_tensor_data(&out->wscale) = wscale;
  if (!st) return 0;

  /* statistics from the artifacts themselves */
  memset(st, 0, sizeof *st);
  if (ALLOC(x->dw, mp * np) || ALLOC(x->what, m * n) || ALLOC(x->g, np * np))
    return glq_error(GLQ_ENOMEM, "out of memory for statistics");
  if ((rc = glq_trellis_decode_rotated(out, x->dw)) ||
      (rc = inverse_crop(x->dw, mp, np, m, n, x->su, x->sv, o->transform, x->what)))
    return rc;
  for (int64_t i = 0; i < mp * np; i++) x->dw[i] = x->wt[i] - x->dw[i];
  double px, e2 = 0, w2 = 0;
  proxy(x->dw, mp, np, x->ht1, x->g, &px);
  st->proxy_loss = px / (double)mp;
  for (int64_t i = 0; i < m * n; i++) {
    double dd = (double)w[i] - x->what[i];
    e2 += dd * dd, w2 += (double)w[i] * w[i];
    x->what[i] = (float)dd;
  }
  st->sqnr_db = e2 > 0 ? 10 * log10(w2 / e2) : INFINITY;
  if (m == mp && n == np) {
    st->proxy_loss_orig = st->proxy_loss;
  } else {
    if (ALLOC(x->h1, n * n)) return glq_error(GLQ_ENOMEM, "out of memory for statistics");
    for (int64_t i = 0; i < n * n; i++) x->h1[i] = (float)((h ? h[i] : (double)(i % (n + 1) == 0)) + (i % (n + 1) == 0 ? damp1 : 0));
    proxy(x->what, m, n, x->h1, x->g, &px);
    st->proxy_loss_orig = px / (double)m;
  }
  st->bpw = (16.0 * (double)(nt * 16 * K) + 32.0) / (double)(m * n);
  st->damp_used = rel;
  st->fallback = level;
  st->wscale_rel = fscale;
  st->seconds = now() - t0;
  st->seconds_prepare = t_prep - t0;
  st->seconds_sweep = t_sweep - t_prep;
  st->seconds_stats = t0 + st->seconds - t_sweep;
  return 0;
}

int glq_trellis_quantize_linear(const float *w, int64_t m, int64_t n, const double *h, const glq_quant_opts *o,
                                glq_trellis_artifacts *out, glq_quant_stats *stats) {
  work x;
  memset(&x, 0, sizeof x);
  memset(out, 0, sizeof *out);
  int rc = quantize(w, m, n, h, o, &x, out, stats);
  work_free(&x);
  if (rc) {
    glq_trellis_artifacts_free(out);
    glq_error_prefix("quantize_linear %s (trellis)", o->name && *o->name ? o->name : "(unnamed)");
  }
  return rc;
}

/* ---- the CPU layer ---- */

typedef struct {
  glq_linear base;
  int64_t mp, np, wpt;
  glq_trellis_code code;
  uint16_t *words;         /* natural layout: tile t's 16K words at t·wpt */
  float wscale;
  float *su, *sv, *bias;
  const glq_hadamard *hm, *hn;
  glq_hadamard_kind transform;
  float *xt, *yt;          /* scratch: rows x np, rows x mp */
  int64_t rows_cap;
  size_t stored;
} trlin;

typedef struct {
  const trlin *l;
  int64_t B;
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
    if (!xt || !yt) return glq_error(GLQ_ENOMEM, "trellis linear: no memory for %lld input rows", (long long)B);
    l->rows_cap = B;
  }
  for (int64_t b = 0; b < B; b++) {
    float *xt = l->xt + b * l->np;
    for (int64_t k = 0; k < n; k++) xt[k] = x[b * n + k] * l->sv[k];
    for (int64_t k = n; k < l->np; k++) xt[k] = 0;
  }
  glq_hadamard_apply(l->hn, l->xt, B, 0);
  fw_job j = {l, B};
  glq_parallel_for(l->mp / 16, 1, fw_range, &j);
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
  free(l->words), free(l->su), free(l->sv), free(l->bias), free(l->xt), free(l->yt);
  free(l);
}

static const glq_linear_vt trellis_vt = {"trellis", tr_forward, tr_dequantize, tr_stored_bytes, tr_destroy};

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
  l->words = malloc((size_t)nw * sizeof(uint16_t));
  l->su = malloc((size_t)l->mp * sizeof(float));
  l->sv = malloc((size_t)l->np * sizeof(float));
  if (bias) l->bias = malloc((size_t)a->m * sizeof(float));
  if (!l->words || !l->su || !l->sv || (bias && !l->bias)) rc = glq_error(GLQ_ENOMEM, "trellis linear: out of memory");
  if (!rc) rc = glq_trellis_kernel_flip(glq_tensor_data(&a->packed), (uint8_t *)l->words, l->mp, l->np, a->K, 0);
  if (!rc) rc = glq_hadamard_plan_kind(l->mp, l->transform, &l->hm);
  if (!rc) rc = glq_hadamard_plan_kind(l->np, l->transform, &l->hn);
  if (rc) {
    tr_destroy(&l->base);
    return rc;
  }
  signs_f32(&a->su, l->su);
  signs_f32(&a->sv, l->sv);
  if (bias) {
    memcpy(l->bias, bias, (size_t)a->m * sizeof(float));
    l->base.bias = l->bias;
  }
  l->stored = (size_t)nw * 2 + (size_t)(l->mp + l->np) * 2 + 4 + (a->variant == GLQ_TRELLIS_HYB ? 2048 : 0) +
              (bias ? (size_t)a->m * 2 : 0);
  *out = &l->base;
  return GLQ_OK;
}
