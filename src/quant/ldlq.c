/* ldlq.c - one linear layer: RHT, damped block LDL, LDLQ sweep with BLAS-3 lazy updates,
 * scale search, refinement passes, artifacts and statistics. Conventions in ldlq.h and rht.h.
 *
 * Units: the sweep works on Wr = W̃ / Wscale (codebook units). R = Wr - Q is the running error.
 * With H_reg = L·blkdiag(D)·Lᵀ, the target of block k is T_k = Wr_k + R_{>k}·L_{>k,k}; then
 * F_k = T_k - Q_k equals (R·L)_k, so tr(R·H_reg·Rᵀ) = sum_k F_k·D_k·F_kᵀ comes for free during the
 * sweep; the scale search uses it (minus the extra damping) instead of a separate n² product. */
#include "ldlq.h"
#include "codec.h"
#include "e8.h"
#include "e8p.h"
#include "rht.h"
#include "../core/error.h"
#include "../core/pool.h"
#include "../linalg/linalg.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define GROUP 128        /* columns per lazy-update group (multiple of 8) */
#define SAMPLE_ROWS 256  /* rows used to evaluate scale candidates */

/* The codec's default Wscale / rms(W̃) and residual scale (codec.c) start the search, which tries the
 * default and a step either side: first Wscale, then the residual scale. */
static const double search_steps[3] = {1.0, 0.95, 1.05};

void glq_quant_opts_default(glq_quant_opts *o) {
  memset(o, 0, sizeof *o);
  o->bits = 2;
  o->seed = 42;
  o->damp = 0.01;
  o->scale_search = 1;
  o->feedback = 1;
}

/* f·M·fᵀ for a B-vector f and a B x B matrix M, summed in f64 */
static double quadb(const float *f, const float *m, int B) {
  double s = 0;
  for (int a = 0; a < B; a++) {
    double u = 0;
    for (int b = 0; b < B; b++) u += (double)m[a * B + b] * f[b];
    s += f[a] * u;
  }
  return s;
}

/* ---- the reverse sweep and the refinement pass share this per-row bookkeeping ---- */

typedef struct {
  int64_t n;
  int B, R, nc;            /* the codec's columns, rows per tile, codes per tile */
  const float *wr, *t, *q; /* t, q: rows x B */
  const float *m;          /* B x B metric of the block (D_k, or H_kk for refinement) */
  float *r, *delta;        /* delta (refinement): q_new - q_old for accepted rows, else 0 */
  int32_t *codes;          /* out (may be NULL): (rows/R) x nb x nc */
  const int32_t *bcodes;   /* the block's codes: (rows/R) x nc */
  double *rowloss;         /* sweep: accumulates F·D·Fᵀ */
  int64_t c;
} post_ctx;

static void post_range(void *vc, int64_t r0, int64_t r1) {
  post_ctx *p = vc;
  const int B = p->B;
  const int64_t n = p->n, nb = n / B, k = p->c / B;
  for (int64_t i = r0; i < r1; i++) {
    float *ri = p->r + i * n + p->c;
    const float *wi = p->wr + i * n + p->c, *qi = p->q + i * B, *ti = p->t + i * B;
    float fn[16], fo[16];
    for (int j = 0; j < B; j++) fn[j] = ti[j] - qi[j];
    if (p->delta) { /* accept only if the block's exact loss term decreases (single-row codecs only) */
      for (int j = 0; j < B; j++) fo[j] = ti[j] - (wi[j] - ri[j]);
      int accept = quadb(fn, p->m, B) < quadb(fo, p->m, B);
      for (int j = 0; j < B; j++) p->delta[i * B + j] = accept ? qi[j] - (wi[j] - ri[j]) : 0.0f;
      if (!accept) continue;
    } else if (p->rowloss) {
      p->rowloss[i] += quadb(fn, p->m, B);
    }
    for (int j = 0; j < B; j++) ri[j] = wi[j] - qi[j];
    if (p->codes && i % p->R == 0)
      memcpy(p->codes + ((i / p->R) * nb + k) * p->nc, p->bcodes + (i / p->R) * p->nc, (size_t)p->nc * sizeof(int32_t));
  }
}

typedef struct {
  const float *r, *l;
  float *t;
  int64_t n, c, k;
  int B;
} fb_ctx;

/* t[i][0..B) += R[i, c+B : c+B+k] · L[c+B : c+B+k, c : c+B]: the pending feedback inside a group.
 * Row-parallel with a fixed summation order; cheaper than waking BLAS threads for m x B x k. */
static void feedback_range(void *vc, int64_t r0, int64_t r1) {
  const fb_ctx *f = vc;
  const int B = f->B;
  for (int64_t i = r0; i < r1; i++) {
    float acc[16] = {0};
    const float *ri = f->r + i * f->n + f->c + B;
    for (int64_t t = 0; t < f->k; t++) {
      const float *lt = f->l + (f->c + B + t) * f->n + f->c;
      for (int j = 0; j < B; j++) acc[j] += ri[t] * lt[j];
    }
    for (int j = 0; j < B; j++) f->t[i * B + j] += acc[j];
  }
}

typedef struct {
  int64_t rows, n;
  const float *l, *d; /* block LDL of H_reg (blocks of cd->cols) */
  const glq_codec *cd;
  int feedback;
  const glq_ldlq_backend *be; /* NULL: this file's sweep (the GPU's serves the E8 shell codec only) */
} sweep_in;

typedef struct {
  float *t, *q, *delta;
  int32_t *codes;
} block_buf;

static int buf_alloc(block_buf *b, int64_t rows, const glq_codec *cd) {
  b->t = malloc((size_t)rows * cd->cols * sizeof(float));
  b->q = malloc((size_t)rows * cd->cols * sizeof(float));
  b->delta = malloc((size_t)rows * cd->cols * sizeof(float));
  b->codes = calloc((size_t)(rows / cd->rows * cd->ncodes), sizeof(int32_t));
  if (b->t && b->q && b->delta && b->codes) return 0;
  return glq_error(GLQ_ENOMEM, "ldlq: out of memory for block buffers (%lld rows)", (long long)rows);
}

static void buf_free(block_buf *b) {
  free(b->t), free(b->q), free(b->delta), free(b->codes);
}

/* the GPU sweep: idx1/idx2 come back separately and are interleaved into codes (rows x nb x ncodes) */
static int sweep_backend(const sweep_in *s, const float *wr, float *r, int32_t *codes, double *loss) {
  const glq_codec *c = s->cd;
  const int64_t rows = s->rows, nv = rows * (s->n / 8);
  int32_t *i1 = codes ? malloc((size_t)nv * sizeof *i1) : NULL, *i2 = codes && c->ncodes > 1 ? malloc((size_t)nv * sizeof *i2) : NULL;
  if (codes && (!i1 || (c->ncodes > 1 && !i2))) {
    free(i1);
    return glq_error(GLQ_ENOMEM, "ldlq: out of memory for the indices (%lld rows)", (long long)rows);
  }
  glq_sweep_args a = {rows, s->n, wr, c->bits == 2 ? 0 : c->bits == 3 ? 256 : 65536, c->rs, c->inv_rs, s->feedback, r, i1, i2, loss};
  int rc = s->be->sweep(s->be->ctx, &a);
  for (int64_t v = 0; !rc && codes && v < nv; v++) {
    codes[v * c->ncodes] = i1[v];
    if (i2) codes[v * 2 + 1] = i2[v];
  }
  free(i1), free(i2);
  return rc;
}

/* wr (rows x n) -> r = wr - Q; codes ((rows/R) x n/B x ncodes, may be NULL); *loss = sum_k F_k D_k F_kᵀ
 * unless loss is NULL; with row_loss (rows; this file's sweep only), each row's share of it as well */
static int sweep(const sweep_in *s, const float *wr, float *r, int32_t *codes, double *loss, double *row_loss) {
  const int64_t rows = s->rows, n = s->n;
  const int B = s->cd->cols;
  if (row_loss && !loss) return glq_error(GLQ_EINVAL, "ldlq: row_loss without loss (internal)");
  if (s->be) return row_loss ? glq_error(GLQ_EINVAL, "ldlq: per-row losses from a backend sweep (internal)")
                             : sweep_backend(s, wr, r, codes, loss);
  block_buf b;
  float *tm = s->feedback ? malloc((size_t)(rows * n) * sizeof *tm) : NULL;
  double *rowloss = row_loss ? memset(row_loss, 0, (size_t)rows * sizeof *row_loss)
                    : loss   ? calloc((size_t)rows, sizeof *rowloss) : NULL;
  int rc = buf_alloc(&b, rows, s->cd);
  if (!rc && ((loss && !rowloss) || (s->feedback && !tm)))
    rc = glq_error(GLQ_ENOMEM, "ldlq: out of memory for the sweep (%lld x %lld)", (long long)rows, (long long)n);
  if (!rc && tm) memcpy(tm, wr, (size_t)(rows * n) * sizeof *tm);
  const float *src = tm ? tm : wr;
  for (int64_t g1 = n, g0; g1 > 0 && !rc; g1 = g0) {
    g0 = g1 > GROUP ? g1 - GROUP : 0;
    for (int64_t c = g1 - B; c >= g0 && !rc; c -= B) {
      for (int64_t i = 0; i < rows; i++) memcpy(b.t + i * B, src + i * n + c, (size_t)B * sizeof(float));
      if (s->feedback && c + B < g1) { /* pending feedback from the blocks of this group */
        fb_ctx f = {r, s->l, b.t, n, c, g1 - c - B, B};
        glq_parallel_for(rows, 64, feedback_range, &f);
      }
      rc = s->cd->quantize(s->cd, rows / s->cd->rows, b.t, b.q, b.codes);
      if (rc) break;
      post_ctx p = {n, B, s->cd->rows, s->cd->ncodes, wr, b.t, b.q, s->d + (c / B) * B * B, r, NULL, codes, b.codes, rowloss, c};
      glq_parallel_for(rows, 64, post_range, &p);
    }
    if (!rc && s->feedback && g0 > 0) /* the finished group feeds every column to its left */
      glq_sgemm(0, 0, rows, g0, g1 - g0, 1.0f, r + g0, n, s->l + g0 * n, n, 1.0f, tm, n);
  }
  double sum = 0;
  for (int64_t i = 0; !rc && loss && i < rows; i++) sum += rowloss[i];
  if (loss) *loss = sum;
  buf_free(&b);
  free(tm);
  if (rowloss != row_loss) free(rowloss);
  return rc;
}

typedef struct {
  const float *wr, *h, *hi, *delta;
  float *r, *pm, *t;
  int64_t n, c, g0, gw;
} tune_ctx;

/* rows [r0, r1): target t = Q_k + P_k·H_kk⁻¹ with P = R·H over the group's columns */
static void tune_target_range(void *vc, int64_t r0, int64_t r1) {
  const tune_ctx *x = vc;
  for (int64_t i = r0; i < r1; i++)
    for (int j = 0; j < 8; j++) {
      float acc = x->wr[i * x->n + x->c + j] - x->r[i * x->n + x->c + j];
      for (int e = 0; e < 8; e++) acc += x->pm[i * x->gw + x->c - x->g0 + e] * x->hi[e * 8 + j];
      x->t[i * 8 + j] = acc;
    }
}

/* rows [r0, r1): P -= delta·H[c : c+8, group] (R lost delta in block k); rows without a change skip */
static void tune_update_range(void *vc, int64_t r0, int64_t r1) {
  const tune_ctx *x = vc;
  for (int64_t i = r0; i < r1; i++)
    for (int e = 0; e < 8; e++) {
      const float d = x->delta[i * 8 + e];
      if (d == 0.0f) continue;
      const float *he = x->h + (x->c + e) * x->n + x->g0;
      float *pi = x->pm + i * x->gw;
      for (int64_t j = 0; j < x->gw; j++) pi[j] -= d * he[j];
    }
}

/* One block-coordinate pass (reverse order): target_k = Q_k + (R·H)_k·H_kk⁻¹, kept per row only
 * where it lowers the loss. (R·H) for a group is one GEMM, then corrected per accepted change. */
static int refine(const sweep_in *s, const float *h, const float *hinv, const float *wr, float *r, int32_t *codes) {
  const int64_t rows = s->rows, n = s->n;
  block_buf b;
  float *pm = malloc((size_t)(rows * GROUP) * sizeof *pm);
  int rc = buf_alloc(&b, rows, s->cd);
  if (!rc && !pm) rc = glq_error(GLQ_ENOMEM, "ldlq: out of memory for refinement (%lld rows)", (long long)rows);
  for (int64_t g1 = n, g0; g1 > 0 && !rc; g1 = g0) {
    g0 = g1 > GROUP ? g1 - GROUP : 0;
    const int64_t gw = g1 - g0;
    glq_sgemm(0, 0, rows, gw, n, 1.0f, r, n, h + g0, n, 0.0f, pm, gw);
    for (int64_t c = g1 - 8; c >= g0 && !rc; c -= 8) {
      float hkk[64];
      for (int a = 0; a < 8; a++)
        for (int e = 0; e < 8; e++) hkk[a * 8 + e] = h[(c + a) * n + c + e];
      tune_ctx x = {wr, h, hinv + (c / 8) * 64, b.delta, r, pm, b.t, n, c, g0, gw};
      glq_parallel_for(rows, 64, tune_target_range, &x);
      rc = s->cd->quantize(s->cd, rows, b.t, b.q, b.codes);
      if (rc) break;
      post_ctx p = {n, 8, 1, s->cd->ncodes, wr, b.t, b.q, hkk, r, b.delta, codes, b.codes, NULL, c};
      glq_parallel_for(rows, 64, post_range, &p);
      glq_parallel_for(rows, 64, tune_update_range, &x);
    }
  }
  buf_free(&b);
  free(pm);
  return rc;
}

/* inverse of an SPD 8x8 block (Gauss-Jordan in f64); 0 if singular */
static int inv8(const float *a, float *out) {
  double m[8][16];
  for (int i = 0; i < 8; i++)
    for (int j = 0; j < 16; j++) m[i][j] = j < 8 ? a[i * 8 + j] : (double)(j - 8 == i);
  for (int c = 0; c < 8; c++) {
    int p = c;
    for (int i = c + 1; i < 8; i++)
      if (fabs(m[i][c]) > fabs(m[p][c])) p = i;
    if (!(fabs(m[p][c]) > 0)) return 0;
    for (int j = 0; j < 16; j++) {
      double t = m[c][j];
      m[c][j] = m[p][j], m[p][j] = t;
    }
    double iv = 1.0 / m[c][c];
    for (int j = 0; j < 16; j++) m[c][j] *= iv;
    for (int i = 0; i < 8; i++)
      if (i != c) {
        double f = m[i][c];
        for (int j = 0; j < 16; j++) m[i][j] -= f * m[c][j];
      }
  }
  for (int i = 0; i < 8; i++)
    for (int j = 0; j < 8; j++) out[i * 8 + j] = (float)m[i][j + 8];
  return 1;
}

/* ---- Hessian: damping ladder and factorisation ---- */

typedef struct {
  float *l, *d;      /* block LDL of H_reg */
  double extra;      /* H_reg = H̃₁ + extra·I (levels 0-2) */
  int identity;      /* level 3: H_reg = I */
  int level;
  double rel;        /* relative damping used */
} factor;

static int factorize(const float *ht1, int64_t n, double damp, int B, factor *f) {
  double mu = 0;
  for (int64_t i = 0; i < n; i++) mu += ht1[i * n + i];
  mu /= (double)n;
  double *a = malloc((size_t)(n * n) * sizeof *a);
  f->l = malloc((size_t)(n * n) * sizeof *f->l);
  f->d = malloc((size_t)(n / B * B * B) * sizeof *f->d);
  if (!a || !f->l || !f->d) {
    free(a);
    return glq_error(GLQ_ENOMEM, "ldlq: out of memory factorising the %lld x %lld Hessian", (long long)n, (long long)n);
  }
  int rc = 1;
  for (f->level = 0; f->level < 3 && rc; f->level++) {
    f->rel = f->level == 0 ? damp : f->level == 1 ? fmax(10 * damp, 0.1) : fmax(100 * damp, 1.0);
    f->extra = f->rel * mu;
    if (!(mu > 0) || !isfinite(mu)) continue;
    for (int64_t i = 0; i < n * n; i++) a[i] = ht1[i];
    for (int64_t i = 0; i < n; i++) a[i * n + i] += f->extra;
    rc = glq_cholesky(a, n);
    if (!rc) rc = glq_block_ldl(a, n, B, f->l, f->d);
  }
  if (rc) { /* identity: L = I, D = I */
    f->level = 3, f->identity = 1, f->rel = 0, f->extra = 0;
    memset(f->l, 0, (size_t)(n * n) * sizeof *f->l);
    for (int64_t i = 0; i < n; i++) f->l[i * n + i] = 1;
    for (int64_t k = 0; k < n / B; k++)
      for (int i = 0; i < B * B; i++) f->d[k * B * B + i] = (float)(i % (B + 1) == 0);
  } else {
    f->level--;
  }
  free(a);
  return 0;
}

/* ---- proxy loss: tr(dw·H·dwᵀ) = <dwᵀ·dw, H> (one SYRK, half the work of dw·H) ---- */

static int proxy_sum(const glq_ldlq_backend *be, const float *dw, int64_t rows, int64_t n, const float *h, double *out) {
  if (be && be->proxy_sum && n >= GLQ_BACKEND_PROXY_MIN_N) return be->proxy_sum(be->ctx, dw, rows, n, h, out);
  float *g = calloc((size_t)(n * n), sizeof *g);
  if (!g) return glq_error(GLQ_ENOMEM, "ldlq: out of memory for the proxy loss (%lld x %lld)", (long long)n, (long long)n);
  glq_ssyrk_tn(n, rows, dw, g);
  double s = 0;
  for (int64_t i = 0; i < n; i++) {
    double r = 0;
    for (int64_t j = i + 1; j < n; j++) r += (double)g[i * n + j] * h[i * n + j];
    s += 2 * r + (double)g[i * n + i] * h[i * n + i];
  }
  free(g);
  *out = s;
  return 0;
}

/* ---- scale search on a row sample ---- */

typedef struct {
  const float *ws; /* sample of W̃, rows x n */
  sweep_in s;
  const factor *f;
} search_ctx;

/* proxy loss per row of the sample at each Wscale sc[0..k) with coder cd, into out[0..k). This file's sweep
 * takes the k candidates as one stack of k x rows rows (one block loop, k times the tiles per call of the
 * codec: what keeps a GPU Viterbi busy); the codec's row blocks are independent (one row for E8/E8P, a 16-row tile
 * for the trellis, and a candidate's sample is a whole number of tiles), so each candidate's loss is the one a
 * sweep of its rows alone gives, summed in the same order. Not so for the sample's rows inside a sweep of the whole
 * layer: there the trellis groups other rows into its tiles. The GPU's E8 sweep returns totals only: one call each. */
static int evaluate(search_ctx *x, const double *sc, int k, const glq_codec *cd, double *out) {
  const int64_t rows = x->s.rows, n = x->s.n;
  const int stack = x->s.be ? 1 : k;
  float *wr = malloc((size_t)(stack * rows * n) * sizeof *wr), *r = malloc((size_t)(stack * rows * n) * sizeof *r);
  double *rl = x->s.be ? NULL : malloc((size_t)(stack * rows) * sizeof *rl);
  int rc = (wr && r && (rl || x->s.be)) ? 0 : glq_error(GLQ_ENOMEM, "ldlq: out of memory for the scale search");
  for (int g0 = 0; g0 < k && !rc; g0 += stack) {
    for (int g = 0; g < stack; g++)
      for (int64_t i = 0; i < rows * n; i++) wr[g * rows * n + i] = x->ws[i] / (float)sc[g0 + g];
    sweep_in s = x->s;
    s.cd = cd;
    s.rows = stack * rows;
    double total = 0;
    rc = sweep(&s, wr, r, NULL, &total, rl);
    for (int g = 0; g < stack && !rc; g++) {
      double loss = 0, e2 = 0;
      if (rl)
        for (int64_t i = 0; i < rows; i++) loss += rl[g * rows + i];
      else
        loss = total;
      const float *rg = r + g * rows * n;
      for (int64_t i = 0; i < rows * n; i++) e2 += (double)rg[i] * rg[i];
      const double c = sc[g0 + g];
      out[g0 + g] = c * c * (loss - x->f->extra * e2) / (double)rows;
    }
  }
  free(wr);
  free(r);
  free(rl);
  return rc;
}

/* ---- artifacts ---- */

static int new_tensor(glq_tensor *t, glq_dtype dt, int ndim, int64_t d0, int64_t d1) {
  int64_t shape[2] = {d0, d1};
  return glq_tensor_new(dt, ndim, shape, t);
}

void glq_quant_artifacts_free(glq_quant_artifacts *a) {
  glq_tensor *ts[] = {&a->qidxs, &a->qidxs2, &a->su, &a->sv, &a->wscale, &a->inv_resid_scale, &a->codes};
  for (int i = 0; i < 7; i++)
    if (ts[i]->st) glq_tensor_release(ts[i]);
}

/* codes: the sweep's ((m_pad/R) x nb x ncodes); builtin codecs store them as Qidxs (, Qidxs2) */
static int make_artifacts(const glq_codec *cd, const glq_codec *user, int64_t m, int64_t n, const int32_t *codes, const float *su,
                          const float *sv, float wscale, glq_hadamard_kind kind, glq_quant_artifacts *a) {
  const int64_t mp = glq_rht_pad(m), np = glq_rht_pad(n), nb = np / 8;
  const int bits = cd->bits, custom = cd->codebook == GLQ_CODEBOOK_CUSTOM;
  const float inv_rs = cd->inv_rs;
  memset(a, 0, sizeof *a);
  a->bits = bits, a->m = m, a->n = n, a->transform = kind, a->codebook = cd->codebook;
  if (custom) {
    int64_t shape[3] = {mp / cd->rows, np / cd->cols, cd->ncodes};
    a->codec = user; /* the caller's codec: it outlives the artifacts, our copy does not */
    int rc = glq_tensor_new(GLQ_I32, 3, shape, &a->codes);
    if (!rc) rc = new_tensor(&a->su, GLQ_F16, 1, mp, 0);
    if (!rc) rc = new_tensor(&a->sv, GLQ_F16, 1, np, 0);
    if (!rc) rc = new_tensor(&a->wscale, GLQ_F32, 0, 0, 0);
    if (rc) {
      glq_quant_artifacts_free(a);
      return rc;
    }
    memcpy(glq_tensor_data(&a->codes), codes, (size_t)glq_tensor_numel(&a->codes) * sizeof(int32_t));
  }
  int rc = custom ? 0 : new_tensor(&a->qidxs, GLQ_I16, 2, mp, nb);
  if (!rc && !custom && bits > 2) rc = new_tensor(&a->qidxs2, GLQ_I16, 2, mp, nb);
  if (!rc && !custom) rc = new_tensor(&a->su, GLQ_F16, 1, mp, 0);
  if (!rc && !custom) rc = new_tensor(&a->sv, GLQ_F16, 1, np, 0);
  if (!rc && !custom) rc = new_tensor(&a->wscale, GLQ_F32, 0, 0, 0);
  if (!rc && !custom && bits > 2) rc = new_tensor(&a->inv_resid_scale, GLQ_F32, 0, 0, 0);
  if (rc) {
    glq_quant_artifacts_free(a);
    return rc;
  }
  if (!custom) {
    int16_t *q1 = glq_tensor_data(&a->qidxs), *q2 = bits > 2 ? glq_tensor_data(&a->qidxs2) : NULL;
    for (int64_t i = 0; i < mp * nb; i++) {
      q1[i] = (int16_t)(uint16_t)codes[i * cd->ncodes];
      if (q2) q2[i] = (int16_t)(uint16_t)codes[i * 2 + 1];
    }
  }
  uint16_t *s = glq_tensor_data(&a->su);
  for (int64_t i = 0; i < mp; i++) s[i] = glq_f32_to_f16(su[i]);
  s = glq_tensor_data(&a->sv);
  for (int64_t i = 0; i < np; i++) s[i] = glq_f32_to_f16(sv[i]);
  *(float *)glq_tensor_data(&a->wscale) = wscale;
  if (!custom && bits > 2) *(float *)glq_tensor_data(&a->inv_resid_scale) = inv_rs;
  return 0;
}

static int check_artifacts(const glq_quant_artifacts *a) {
  const int64_t mp = glq_rht_pad(a->m), np = glq_rht_pad(a->n);
  if (a->m < 1 || a->n < 1) return glq_error(GLQ_EINVAL, "artifacts: bad shape %lld x %lld", (long long)a->m, (long long)a->n);
  if (a->codebook != GLQ_CODEBOOK_E8 && a->codebook != GLQ_CODEBOOK_E8P && a->codebook != GLQ_CODEBOOK_CUSTOM)
    return glq_error(GLQ_EINVAL, "artifacts: unknown codebook id %d", a->codebook);
  if (a->codebook == GLQ_CODEBOOK_CUSTOM) {
    const glq_codec *c = a->codec;
    if (!c || !a->codes.st || a->codes.dtype != GLQ_I32 || a->codes.ndim != 3 || a->codes.shape[0] * c->rows != mp ||
        a->codes.shape[1] * c->cols != np || a->codes.shape[2] != c->ncodes || !glq_tensor_is_contiguous(&a->codes))
      return glq_error(GLQ_EINVAL, "artifacts: a custom codec needs its codec and contiguous i32 codes (%lld/rows, %lld/cols, ncodes)",
                       (long long)mp, (long long)np);
  }
  const glq_tensor *q[2] = {&a->qidxs, &a->qidxs2};
  for (int i = 0; a->codebook != GLQ_CODEBOOK_CUSTOM && i < (a->qidxs2.st ? 2 : 1); i++)
    if (!q[i]->st || q[i]->dtype != GLQ_I16 || q[i]->ndim != 2 || q[i]->shape[0] != mp || q[i]->shape[1] != np / 8 ||
        !glq_tensor_is_contiguous(q[i]))
      return glq_error(GLQ_EINVAL, "artifacts: %s must be contiguous i16 (%lld, %lld)", i ? "Qidxs2" : "Qidxs",
                       (long long)mp, (long long)(np / 8));
  if (!a->su.st || a->su.dtype != GLQ_F16 || glq_tensor_numel(&a->su) != mp || !glq_tensor_is_contiguous(&a->su))
    return glq_error(GLQ_EINVAL, "artifacts: SU must be contiguous f16 (%lld)", (long long)mp);
  if (!a->sv.st || a->sv.dtype != GLQ_F16 || glq_tensor_numel(&a->sv) != np || !glq_tensor_is_contiguous(&a->sv))
    return glq_error(GLQ_EINVAL, "artifacts: SV must be contiguous f16 (%lld)", (long long)np);
  if (!a->wscale.st || a->wscale.dtype != GLQ_F32 || glq_tensor_numel(&a->wscale) != 1)
    return glq_error(GLQ_EINVAL, "artifacts: Wscale must be an f32 scalar");
  if (a->qidxs2.st && (!a->inv_resid_scale.st || a->inv_resid_scale.dtype != GLQ_F32 ||
                       glq_tensor_numel(&a->inv_resid_scale) != 1))
    return glq_error(GLQ_EINVAL, "artifacts: inv_resid_scale must be an f32 scalar when Qidxs2 is present");
  return 0;
}

/* the custom codec's codes ((mp/R) x nb x nc) -> wt (mp x np), block column by block column */
static int decode_custom(const glq_quant_artifacts *a, float *wt) {
  const glq_codec *c = a->codec;
  const int64_t mp = glq_rht_pad(a->m), np = glq_rht_pad(a->n), nt = mp / c->rows, nb = np / c->cols;
  const int B = c->cols;
  int32_t *bc = malloc((size_t)(nt * c->ncodes) * sizeof *bc);
  float *q = malloc((size_t)(mp * B) * sizeof *q);
  int rc = bc && q ? 0 : glq_error(GLQ_ENOMEM, "artifacts: out of memory decoding");
  const int32_t *codes = glq_tensor_data(&a->codes);
  const float ws = *(const float *)glq_tensor_data(&a->wscale);
  for (int64_t k = 0; !rc && k < nb; k++) {
    for (int64_t t = 0; t < nt; t++) memcpy(bc + t * c->ncodes, codes + (t * nb + k) * c->ncodes, (size_t)c->ncodes * sizeof *bc);
    rc = c->decode(c, nt, bc, q);
    for (int64_t i = 0; !rc && i < mp; i++)
      for (int j = 0; j < B; j++) wt[i * np + k * B + j] = ws * q[i * B + j];
  }
  free(bc), free(q);
  return rc;
}

int glq_quant_decode_rotated(const glq_quant_artifacts *a, float *wt) {
  int rc = check_artifacts(a);
  if (rc) return rc;
  if (a->codebook == GLQ_CODEBOOK_CUSTOM) return decode_custom(a, wt);
  const int64_t nv = glq_tensor_numel(&a->qidxs);
  if (a->codebook == GLQ_CODEBOOK_E8P) { /* stage 2: E81B at 3 bits, E8P at 4 */
    float *t2 = a->qidxs2.st ? malloc((size_t)nv * 8 * sizeof *t2) : NULL;
    int32_t *idx = malloc((size_t)nv * sizeof *idx);
    if ((rc = glq_e8p_init()) || !idx || (a->qidxs2.st && !t2)) {
      free(idx), free(t2);
      return rc ? rc : glq_error(GLQ_ENOMEM, "artifacts: out of memory decoding");
    }
    const int16_t *q = glq_tensor_data(&a->qidxs);
    for (int64_t i = 0; i < nv; i++) idx[i] = (uint16_t)q[i];
    glq_e8p_decode(idx, nv, wt);
    const float ws = *(const float *)glq_tensor_data(&a->wscale);
    if (t2) {
      const float irs = *(const float *)glq_tensor_data(&a->inv_resid_scale);
      q = glq_tensor_data(&a->qidxs2);
      for (int64_t i = 0; i < nv; i++) idx[i] = (uint16_t)q[i];
      for (int64_t i = 0; a->bits == 3 && i < nv; i++)
        if (idx[i] >= GLQ_E81B_SIZE) rc = glq_error(GLQ_EINVAL, "artifacts: 3-bit E8P Qidxs2[%lld] = %d is not an E81B index (< 256)", (long long)i, idx[i]);
      if (!rc) (a->bits == 3 ? glq_e81b_decode : glq_e8p_decode)(idx, nv, t2);
      for (int64_t i = 0; !rc && i < nv * 8; i++) wt[i] = ws * (wt[i] + irs * t2[i]);
    } else {
      for (int64_t i = 0; i < nv * 8; i++) wt[i] = ws * wt[i];
    }
    free(idx), free(t2);
    return rc;
  }
  const glq_e8_codebook *cb = glq_e8_codebook_get(65536);
  int32_t *idx = malloc((size_t)nv * sizeof *idx);
  float *t2 = a->qidxs2.st ? malloc((size_t)nv * 8 * sizeof *t2) : NULL;
  if (!cb || !idx || (a->qidxs2.st && !t2)) {
    free(idx), free(t2);
    return cb ? glq_error(GLQ_ENOMEM, "artifacts: out of memory decoding") : GLQ_EINVAL;
  }
  const int16_t *q = glq_tensor_data(&a->qidxs);
  for (int64_t i = 0; i < nv; i++) idx[i] = (uint16_t)q[i];
  glq_e8_decode(cb, idx, nv, wt);
  const float ws = *(const float *)glq_tensor_data(&a->wscale);
  if (t2) { /* the 256-entry codebook is a prefix of the full one, so one table decodes both rates */
    const float irs = *(const float *)glq_tensor_data(&a->inv_resid_scale);
    q = glq_tensor_data(&a->qidxs2);
    for (int64_t i = 0; i < nv; i++) idx[i] = (uint16_t)q[i];
    glq_e8_decode(cb, idx, nv, t2);
    for (int64_t i = 0; i < nv * 8; i++) wt[i] = ws * (wt[i] + irs * t2[i]);
  } else {
    for (int64_t i = 0; i < nv * 8; i++) wt[i] = ws * wt[i];
  }
  free(idx);
  free(t2);
  return 0;
}

static void signs_f32(const glq_tensor *t, float *out) {
  const uint16_t *s = glq_tensor_data(t);
  for (int64_t i = 0; i < glq_tensor_numel(t); i++) out[i] = glq_f16_to_f32(s[i]);
}

int glq_dequantize_linear(const glq_quant_artifacts *a, float *w) {
  int rc = check_artifacts(a);
  if (rc) return rc;
  const int64_t mp = glq_rht_pad(a->m), np = glq_rht_pad(a->n);
  float *wt = malloc((size_t)(mp * np) * sizeof *wt), *su = malloc((size_t)mp * sizeof *su),
        *sv = malloc((size_t)np * sizeof *sv);
  rc = (wt && su && sv) ? 0 : glq_error(GLQ_ENOMEM, "dequantize: out of memory (%lld x %lld)", (long long)mp, (long long)np);
  if (!rc) rc = glq_quant_decode_rotated(a, wt);
  if (!rc) {
    signs_f32(&a->su, su);
    signs_f32(&a->sv, sv);
    rc = glq_rht_weight_inverse(wt, a->m, a->n, su, sv, a->transform, w);
  }
  free(wt), free(su), free(sv);
  return rc;
}

/* ---- the layer ---- */

typedef struct { /* every buffer of one call, freed together */
  float *su, *sv, *wt, *ht1, *wr, *r, *hreg, *hinv, *ws, *dw, *what, *h1;
  int32_t *codes;
  factor f;
} work;

static void work_free(work *w) {
  free(w->su), free(w->sv), free(w->wt), free(w->ht1), free(w->wr), free(w->r), free(w->hreg), free(w->hinv);
  free(w->ws), free(w->dw), free(w->what), free(w->h1), free(w->codes), free(w->f.l), free(w->f.d);
}

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static int check_inputs(const float *w, int64_t m, int64_t n, const double *h, const glq_quant_opts *o) {
  if (m < 1 || n < 1) return glq_error(GLQ_EINVAL, "weight shape %lld x %lld is empty", (long long)m, (long long)n);
  if (o->bits < 2 || o->bits > 4) return glq_error(GLQ_EINVAL, "bits must be 2, 3 or 4, got %d", o->bits);
  if (!(o->damp >= 0) || !isfinite(o->damp)) return glq_error(GLQ_EINVAL, "damp must be finite and >= 0, got %g", o->damp);
  if (o->tune_iters < 0) return glq_error(GLQ_EINVAL, "tune_iters must be >= 0, got %d", o->tune_iters);
  if (o->resid_scale < 0 || !isfinite(o->resid_scale))
    return glq_error(GLQ_EINVAL, "resid_scale must be > 0 (or 0 for the default), got %g", o->resid_scale);
  for (int64_t i = 0; i < m * n; i++)
    if (!isfinite(w[i])) return glq_error(GLQ_EINVAL, "weight has a non-finite value at (%lld, %lld)", (long long)(i / n), (long long)(i % n));
  for (int64_t i = 0; h && i < n * n; i++)
    if (!isfinite(h[i])) return glq_error(GLQ_EINVAL, "Hessian has a non-finite value at (%lld, %lld)", (long long)(i / n), (long long)(i % n));
  for (int64_t i = 0; h && i < n; i++) /* a sum of x·xᵀ never has one */
    if (h[i * n + i] < 0) return glq_error(GLQ_EINVAL, "Hessian has a negative diagonal entry at (%lld, %lld)", (long long)i, (long long)i);
  return 0;
}

#define ALLOC(p, count) ((p) = malloc((size_t)(count) * sizeof *(p))) == NULL

static int quantize(const float *w, int64_t m, int64_t n, const double *h, const glq_quant_opts *o, work *x,
                    glq_quant_artifacts *out, glq_quant_stats *st) {
  const double t0 = now();
  const int64_t mp = glq_rht_pad(m), np = glq_rht_pad(n), nb = np / 8;
  int rc = check_inputs(w, m, n, h, o);
  if (rc) return rc;
  glq_codec cd;
  const int custom = o->codec != NULL;
  if (custom) {
    cd = *o->codec;
    cd.codebook = GLQ_CODEBOOK_CUSTOM;
    if (cd.cols < 8 || cd.cols > 16 || cd.cols % 8 || cd.rows < 1 || cd.ncodes < 1 || !cd.quantize || !cd.decode)
      return glq_error(GLQ_EINVAL, "codec %s: needs 8 or 16 columns, rows >= 1, ncodes >= 1, quantize and decode",
                       cd.name ? cd.name : "(unnamed)");
    if (mp % cd.rows || np % cd.cols)
      return glq_error(GLQ_EINVAL, "codec %s: the padded shape %lld x %lld is not a multiple of its %d x %d tiles",
                       cd.name ? cd.name : "(unnamed)", (long long)mp, (long long)np, cd.rows, cd.cols);
    if (o->tune_iters > 0 && (cd.cols != 8 || cd.rows != 1))
      return glq_error(GLQ_EINVAL, "tune_iters needs a codec of single rows and 8 columns (%s)", cd.name ? cd.name : "(unnamed)");
  } else if ((rc = glq_codec_builtin(o->codebook, o->bits, o->resid_scale, &cd))) {
    return rc;
  }
  const int B = cd.cols;
  const glq_ldlq_backend *be = cd.codebook == GLQ_CODEBOOK_E8 ? o->backend : NULL; /* the GPU sweep: E8 shell only */
  if (ALLOC(x->su, mp) || ALLOC(x->sv, np) || ALLOC(x->wt, mp * np) || ALLOC(x->ht1, np * np) ||
      ALLOC(x->wr, mp * np) || ALLOC(x->r, mp * np) || ALLOC(x->codes, mp / cd.rows * (np / B) * cd.ncodes))
    return glq_error(GLQ_ENOMEM, "out of memory for a %lld x %lld layer", (long long)m, (long long)n);
  glq_rht_signs(o->seed, o->name, "SU", mp, x->su);
  glq_rht_signs(o->seed, o->input_name ? o->input_name : o->name, "SV", np, x->sv);
  double mu = 1; /* damp #1 in the original domain (glq §3.1) */
  if (h) {
    mu = 0;
    for (int64_t i = 0; i < n; i++) mu += h[i * n + i];
    mu /= (double)n;
  }
  const double damp1 = o->damp * mu;
  if ((rc = glq_rht_weight(w, m, n, x->su, x->sv, o->transform, x->wt)) ||
      (rc = glq_rht_hessian(h, n, damp1, x->sv, o->transform, x->ht1)) ||
      (rc = factorize(x->ht1, np, o->damp, B, &x->f)))
    return rc;
  const double t_prep = now();

  double ss = 0;
  for (int64_t i = 0; i < mp * np; i++) ss += (double)x->wt[i] * x->wt[i];
  const double rms = sqrt(ss / (double)(mp * np));
  double fbest = o->feedback && cd.wscale_default > 0 ? cd.wscale_default : 1.0;
  double rsbest = cd.rs;
  sweep_in s = {mp, np, x->f.l, x->f.d, &cd, o->feedback, be};
  if (be && (rc = be->set_factor(be->ctx, np, x->f.l, x->f.d))) return rc;

  if (o->scale_search && o->feedback && rms > 1e-10) {
    const int64_t sr = mp < SAMPLE_ROWS ? mp : SAMPLE_ROWS;
    if (ALLOC(x->ws, sr * np)) return glq_error(GLQ_ENOMEM, "out of memory for the scale search");
    for (int64_t i = 0; i < sr; i++) memcpy(x->ws + i * np, x->wt + (i * mp / sr) * np, (size_t)np * sizeof(float));
    search_ctx sc = {x->ws, s, &x->f};
    sc.s.rows = sr;
    const double f0 = fbest, rs0 = rsbest;
    double best = INFINITY;
    double cand[3], v[3];
    for (int g = 0; g < 3; g++) cand[g] = rms * f0 * search_steps[g];
    rc = evaluate(&sc, cand, 3, &cd, v); /* Wscale at the default residual scale */
    for (int g = 0; g < 3 && !rc; g++)
      if (v[g] < best) best = v[g], fbest = f0 * search_steps[g];
    for (int g = 1; g < 3 && !rc && !custom && o->bits > 2 && o->resid_scale == 0; g++) { /* then the residual scale */
      glq_codec c2;
      rc = glq_codec_builtin(cd.codebook, o->bits, rs0 * search_steps[g], &c2);
      const double c = rms * fbest;
      double vr;
      if (!rc) rc = evaluate(&sc, &c, 1, &c2, &vr);
      if (!rc && vr < best) best = vr, rsbest = rs0 * search_steps[g];
    }
    if (rc) return rc;
    if (!custom && (rc = glq_codec_builtin(cd.codebook, o->bits, rsbest, &cd))) return rc;
  }
  const double t_search = now();
  const float wscale = rms > 1e-10 ? (float)(rms * fbest) : 1.0f;
  for (int64_t i = 0; i < mp * np; i++) x->wr[i] = x->wt[i] / wscale;
  if ((rc = sweep(&s, x->wr, x->r, x->codes, NULL, NULL))) return rc;

  if (o->tune_iters > 0) {
    if (ALLOC(x->hreg, np * np) || ALLOC(x->hinv, nb * 64)) return glq_error(GLQ_ENOMEM, "out of memory for tune_iters");
    for (int64_t i = 0; i < np * np; i++) x->hreg[i] = x->f.identity ? (float)(i % (np + 1) == 0) : x->ht1[i];
    for (int64_t i = 0; i < np && !x->f.identity; i++) x->hreg[i * np + i] += (float)x->f.extra;
    for (int64_t k = 0; k < nb; k++) {
      float blk[64];
      for (int a = 0; a < 8; a++)
        for (int b = 0; b < 8; b++) blk[a * 8 + b] = x->hreg[(8 * k + a) * np + 8 * k + b];
      if (!inv8(blk, x->hinv + k * 64)) return glq_error(GLQ_ENUMERIC, "tune_iters: singular diagonal block %lld", (long long)k);
    }
    for (int it = 0; it < o->tune_iters && !rc; it++) rc = refine(&s, x->hreg, x->hinv, x->wr, x->r, x->codes);
    if (rc) return rc;
  }

  const double t_sweep = now();
  free(x->f.l), free(x->hreg); /* not needed any more: lowers the peak memory of the statistics */
  x->f.l = NULL, x->hreg = NULL;
  if ((rc = make_artifacts(&cd, o->codec, m, n, x->codes, x->su, x->sv, wscale, o->transform, out))) return rc;
  if (!st) return 0;

  /* statistics from the artifacts themselves, so they describe exactly what dequantize returns */
  memset(st, 0, sizeof *st);
  if (ALLOC(x->dw, mp * np) || ALLOC(x->what, m * n)) return glq_error(GLQ_ENOMEM, "out of memory for statistics");
  if ((rc = glq_quant_decode_rotated(out, x->dw)) || (rc = glq_rht_weight_inverse(x->dw, m, n, x->su, x->sv, o->transform, x->what)))
    return rc;
  for (int64_t i = 0; i < mp * np; i++) x->dw[i] = x->wt[i] - x->dw[i];
  double px, e2 = 0, w2 = 0;
  if ((rc = proxy_sum(o->backend, x->dw, mp, np, x->ht1, &px))) return rc;
  st->proxy_loss = px / (double)mp;
  for (int64_t i = 0; i < m * n; i++) {
    double d = (double)w[i] - x->what[i];
    e2 += d * d, w2 += (double)w[i] * w[i];
    x->what[i] = (float)d;
  }
  st->sqnr_db = e2 > 0 ? 10 * log10(w2 / e2) : INFINITY;
  if (m == mp && n == np) {
    st->proxy_loss_orig = st->proxy_loss; /* identical by the trace identity (rht.h) */
  } else {
    if (ALLOC(x->h1, n * n)) return glq_error(GLQ_ENOMEM, "out of memory for statistics");
    for (int64_t i = 0; i < n * n; i++) x->h1[i] = (float)((h ? h[i] : (double)(i % (n + 1) == 0)) + (i % (n + 1) == 0 ? damp1 : 0));
    if ((rc = proxy_sum(o->backend, x->what, m, n, x->h1, &px))) return rc;
    st->proxy_loss_orig = px / (double)m;
  }
  if (custom) /* the stored i32 codes and Wscale */
    st->bpw = (32.0 * (double)(mp / cd.rows * (np / B) * cd.ncodes) + 32.0) / (double)(m * n);
  else /* E8 and E8P alike: 16 bits per 8 weights, a second stage 8 (256 entries) or 16 more */
    st->bpw = ((16.0 + (o->bits == 2 ? 0 : o->bits == 3 ? 8 : 16)) * (double)(mp * nb) + 32.0 * (o->bits > 2 ? 2 : 1)) /
              (double)(m * n);
  st->damp_used = x->f.rel;
  st->fallback = x->f.level;
  st->wscale_rel = fbest;
  st->resid_scale = !custom && o->bits > 2 ? cd.rs : 0;
  st->seconds = now() - t0;
  st->seconds_prepare = t_prep - t0;
  st->seconds_search = t_search - t_prep;
  st->seconds_sweep = t_sweep - t_search;
  st->seconds_stats = t0 + st->seconds - t_sweep;
  return 0;
}

int glq_quantize_linear(const float *w, int64_t m, int64_t n, const double *h, const glq_quant_opts *o,
                        glq_quant_artifacts *out, glq_quant_stats *stats) {
  work x;
  memset(&x, 0, sizeof x);
  memset(out, 0, sizeof *out);
  int rc = quantize(w, m, n, h, o, &x, out, stats);
  work_free(&x);
  if (rc) {
    glq_quant_artifacts_free(out);
    glq_error_prefix("quantize_linear %s", o->name && *o->name ? o->name : "(unnamed)");
  }
  return rc;
}
