/* scalefit.c - the closed-form scale refit of scalefit.h. */
#include "scalefit.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "../core/error.h"
#include "../linalg/linalg.h"

/* tr((W - Q) H (W - Q)ᵀ) with hf = H as f32 (n x n); d and p are m x n scratch */
static double proxy(const float *w, const float *q, int64_t m, int64_t n, const float *hf, float *d, float *p) {
  for (int64_t i = 0; i < m * n; i++) d[i] = w[i] - q[i];
  glq_sgemm(0, 0, m, n, n, 1.0f, d, n, hf, n, 0.0f, p, n);
  double t = 0;
  for (int64_t i = 0; i < m * n; i++) t += (double)d[i] * p[i];
  return t;
}

/* row step: s_i = <W_i, Q_i>_H / <Q_i, Q_i>_H (1 where the row of Q carries no energy) */
static void row_scales(const float *w, const float *q, int64_t m, int64_t n, const float *hf, float *p, float *s) {
  glq_sgemm(0, 0, m, n, n, 1.0f, q, n, hf, n, 0.0f, p, n); /* P = Q·H */
  for (int64_t i = 0; i < m; i++) {
    double num = 0, den = 0;
    for (int64_t j = 0; j < n; j++) {
      num += (double)w[i * n + j] * p[i * n + j];
      den += (double)q[i * n + j] * p[i * n + j];
    }
    double v = den > 0 ? num / den : 1.0;
    s[i] = isfinite(v) ? (float)v : 1.0f;
  }
}

/* column step: (H ∘ QᵀQ) u = diag(H·Wᵀ·Q); g, k: n x n f32 scratch, a: n x n f64. Returns 0 and u, or
 * non-zero (u untouched) when the damped system is still not positive definite. */
static int col_scales(const float *w, const float *q, int64_t m, int64_t n, const double *h, float *g, float *k,
                      double *a, double *y, float *u) {
  glq_sgemm(1, 0, n, n, m, 1.0f, w, n, q, n, 0.0f, g, n); /* G = Wᵀ·Q */
  glq_ssyrk_tn(n, m, q, k);                                /* K = QᵀQ (upper triangle) */
  double tr = 0;
  for (int64_t j = 0; j < n; j++) {
    double b = 0;
    for (int64_t c = 0; c < n; c++) b += (h ? h[j * n + c] : (double)(c == j)) * g[c * n + j];
    y[j] = b;
    for (int64_t c = j; c < n; c++) {
      double v = (h ? h[j * n + c] : (double)(c == j)) * k[j * n + c];
      a[j * n + c] = v;
      a[c * n + j] = v;
    }
    tr += a[j * n + j];
  }
  if (!(tr > 0)) return 1;
  const double damp = 1e-7 * tr / (double)n;
  for (int64_t j = 0; j < n; j++) a[j * n + j] += damp;
  if (glq_cholesky(a, n) != GLQ_OK) return 1; /* a = C·Cᵀ, lower */
  for (int64_t j = 0; j < n; j++) {             /* C z = y */
    double t = y[j];
    for (int64_t c = 0; c < j; c++) t -= a[j * n + c] * y[c];
    y[j] = t / a[j * n + j];
  }
  for (int64_t j = n - 1; j >= 0; j--) { /* Cᵀ u = z */
    double t = y[j];
    for (int64_t c = j + 1; c < n; c++) t -= a[c * n + j] * y[c];
    y[j] = t / a[j * n + j];
  }
  for (int64_t j = 0; j < n; j++)
    if (!isfinite(y[j])) return 1;
  for (int64_t j = 0; j < n; j++) u[j] = (float)y[j];
  return 0;
}

int glq_fit_scales(const float *w, const float *q, int64_t m, int64_t n, const double *h0, double damp, int iters,
                   int64_t max_cols, float *s, float *u, double *loss0, double *loss1) {
  if (!w || !q || !s || !u || m < 1 || n < 1 || iters < 1 || max_cols < 0 || !(damp >= 0))
    return glq_error(GLQ_EINVAL, "fit_scales: bad arguments (m=%lld n=%lld iters=%d damp=%g)", (long long)m, (long long)n,
                     iters, damp);
  const int do_cols = max_cols == 0 || n <= max_cols;
  int rc = GLQ_OK;
  float *hf = malloc((size_t)(n * n) * sizeof(float));
  float *cur = malloc((size_t)(m * n) * sizeof(float)), *trial = malloc((size_t)(m * n) * sizeof(float));
  float *d = malloc((size_t)(m * n) * sizeof(float)), *p = malloc((size_t)(m * n) * sizeof(float));
  float *st = malloc((size_t)m * sizeof(float)), *ut = malloc((size_t)n * sizeof(float));
  float *g = do_cols ? malloc((size_t)(n * n) * sizeof(float)) : NULL, *k = do_cols ? malloc((size_t)(n * n) * sizeof(float)) : NULL;
  double *a = do_cols ? malloc((size_t)(n * n) * sizeof(double)) : NULL, *y = malloc((size_t)n * sizeof(double));
  double *h = h0 ? malloc((size_t)(n * n) * sizeof(double)) : NULL;
  if (!hf || !cur || !trial || !d || !p || !st || !ut || !y || (do_cols && (!g || !k || !a)) || (h0 && !h)) {
    rc = glq_error(GLQ_ENOMEM, "fit_scales: out of memory for a %lld x %lld layer", (long long)m, (long long)n);
    goto done;
  }
  if (h0) {
    double tr = 0;
    for (int64_t j = 0; j < n; j++) tr += h0[j * n + j];
    memcpy(h, h0, (size_t)(n * n) * sizeof(double));
    for (int64_t j = 0; j < n; j++) h[j * n + j] += damp * tr / (double)n;
  }
  for (int64_t i = 0; i < n * n; i++) hf[i] = h ? (float)h[i] : 0.0f;
  if (!h)
    for (int64_t j = 0; j < n; j++) hf[j * n + j] = 1.0f;
  memcpy(cur, q, (size_t)(m * n) * sizeof(float));
  for (int64_t i = 0; i < m; i++) s[i] = 1.0f;
  for (int64_t j = 0; j < n; j++) u[j] = 1.0f;
  double best = proxy(w, cur, m, n, hf, d, p);
  if (loss0) *loss0 = best;
  for (int it = 0; it < iters; it++) {
    if (do_cols && col_scales(w, cur, m, n, h, g, k, a, y, ut) == 0) {
      for (int64_t i = 0; i < m; i++)
        for (int64_t j = 0; j < n; j++) trial[i * n + j] = cur[i * n + j] * ut[j];
      double l = proxy(w, trial, m, n, hf, d, p);
      if (l < best) {
        best = l;
        memcpy(cur, trial, (size_t)(m * n) * sizeof(float));
        for (int64_t j = 0; j < n; j++) u[j] *= ut[j];
      }
    }
    row_scales(w, cur, m, n, hf, p, st);
    for (int64_t i = 0; i < m; i++)
      for (int64_t j = 0; j < n; j++) trial[i * n + j] = cur[i * n + j] * st[i];
    double l = proxy(w, trial, m, n, hf, d, p);
    if (l < best) {
      best = l;
      memcpy(cur, trial, (size_t)(m * n) * sizeof(float));
      for (int64_t i = 0; i < m; i++) s[i] *= st[i];
    }
  }
  if (loss1) *loss1 = best;
done:
  free(hf), free(cur), free(trial), free(d), free(p), free(st), free(ut), free(g), free(k), free(a), free(y), free(h);
  return rc;
}
