/* rht.c - random Hadamard transforms; conventions in rht.h. */
#include "rht.h"
#include "hadamard.h"
#include "../core/error.h"
#include "../core/ops.h"
#include "../core/pool.h"
#include <stdlib.h>
#include <string.h>

int64_t glq_rht_pad(int64_t d) { return (d + 7) / 8 * 8; }

void glq_rht_signs(uint64_t seed, const char *name, const char *tag, int64_t len, float *out) {
  uint64_t f = 0xcbf29ce484222325ULL;
  const char *parts[2] = {name ? name : "", tag ? tag : ""};
  for (int p = 0; p < 2; p++) {
    for (const unsigned char *s = (const unsigned char *)parts[p]; *s; s++) f = (f ^ *s) * 0x100000001b3ULL;
    if (p == 0) f = f * 0x100000001b3ULL; /* the "\0" separator: f ^ 0 == f */
  }
  uint64_t st = seed ^ f;
  st = glq_splitmix64(&st);
  uint64_t w = 0;
  for (int64_t i = 0; i < len; i++) {
    if (i % 64 == 0) w = glq_splitmix64(&st);
    out[i] = (w >> (i % 64)) & 1 ? -1.0f : 1.0f;
  }
}

#define PANEL 16 /* columns transformed together: PANEL x rows floats stay in cache */

typedef struct {
  const glq_hadamard *h;
  float *a;
  int64_t rows, cols;
  int transpose_h, failed;
} col_ctx;

/* panels [p0, p1): gather PANEL columns as rows, transform them, scatter back */
static void columns_range(void *vc, int64_t p0, int64_t p1) {
  col_ctx *c = vc;
  float *t = malloc((size_t)(PANEL * c->rows) * sizeof *t);
  if (!t) {
    __atomic_store_n(&c->failed, 1, __ATOMIC_RELAXED);
    return;
  }
  for (int64_t p = p0; p < p1; p++) {
    const int64_t j0 = p * PANEL, w = c->cols - j0 < PANEL ? c->cols - j0 : PANEL;
    for (int64_t i = 0; i < c->rows; i++)
      for (int64_t j = 0; j < w; j++) t[j * c->rows + i] = c->a[i * c->cols + j0 + j];
    glq_hadamard_apply(c->h, t, w, c->transpose_h); /* nested: runs on this thread */
    for (int64_t i = 0; i < c->rows; i++)
      for (int64_t j = 0; j < w; j++) c->a[i * c->cols + j0 + j] = t[j * c->rows + i];
  }
  free(t);
}

/* a (rows x cols): each column c <- H c (or Hᵀ c) */
static int columns(float *a, int64_t rows, int64_t cols, glq_hadamard_kind kind, int transpose_h) {
  col_ctx c = {NULL, a, rows, cols, transpose_h, 0};
  int rc = glq_hadamard_plan(rows, kind, &c.h);
  if (rc) return rc;
  glq_parallel_for((cols + PANEL - 1) / PANEL, 1, columns_range, &c);
  if (c.failed) return glq_error(GLQ_ENOMEM, "rht: out of memory for a column panel (%lld rows)", (long long)rows);
  return 0;
}

static int oom(const char *what, int64_t a, int64_t b) {
  return glq_error(GLQ_ENOMEM, "rht: out of memory for %s (%lld x %lld)", what, (long long)a, (long long)b);
}

int glq_rht_weight(const float *w, int64_t m, int64_t n, const float *su, const float *sv, glq_hadamard_kind kind,
                        float *wt) {
  int64_t mp = glq_rht_pad(m), np = glq_rht_pad(n);
  memset(wt, 0, (size_t)(mp * np) * sizeof *wt);
  for (int64_t i = 0; i < m; i++)
    for (int64_t j = 0; j < n; j++) wt[i * np + j] = su[i] * w[i * n + j] * sv[j];
  int rc = glq_hadamard_transform(wt, mp, np, kind, 0);
  return rc ? rc : columns(wt, mp, np, kind, 0);
}

int glq_rht_weight_inverse(const float *wt, int64_t m, int64_t n, const float *su, const float *sv,
                                glq_hadamard_kind kind, float *w) {
  return glq_rht_weight_inverse_stored(wt, glq_rht_pad(m), glq_rht_pad(n), m, n, su, sv, kind, w);
}

int glq_rht_weight_inverse_stored(const float *wt, int64_t mp, int64_t np, int64_t m, int64_t n, const float *su,
                                  const float *sv, glq_hadamard_kind kind, float *w) {
  float *a = malloc((size_t)(mp * np) * sizeof *a);
  int rc = a ? 0 : oom("weight", mp, np);
  if (!rc) {
    memcpy(a, wt, (size_t)(mp * np) * sizeof *a);
    rc = glq_hadamard_transform(a, mp, np, kind, 1);
  }
  if (!rc) rc = columns(a, mp, np, kind, 1);
  if (!rc)
    for (int64_t i = 0; i < m; i++)
      for (int64_t j = 0; j < n; j++) w[i * n + j] = su[i] * a[i * np + j] * sv[j];
  free(a);
  return rc;
}

#define TILE 32

typedef struct {
  float *a;
  int64_t n;
} sym_ctx;

/* tile rows [t0, t1): a[i][j] = a[j][i] = their mean for j < i (tiles (I, J <= I) are disjoint per I) */
static void symmetrize_range(void *vc, int64_t t0, int64_t t1) {
  const sym_ctx *c = vc;
  for (int64_t i0 = t0 * TILE; i0 < t1 * TILE && i0 < c->n; i0 += TILE)
    for (int64_t j0 = 0; j0 <= i0; j0 += TILE)
      for (int64_t i = i0; i < i0 + TILE && i < c->n; i++)
        for (int64_t j = j0; j < j0 + TILE && j < i; j++)
          c->a[i * c->n + j] = c->a[j * c->n + i] = 0.5f * (c->a[i * c->n + j] + c->a[j * c->n + i]);
}

int glq_rht_hessian(const double *h, int64_t n, double diag_add, const float *sv, glq_hadamard_kind kind, float *ht) {
  int64_t np = glq_rht_pad(n);
  memset(ht, 0, (size_t)(np * np) * sizeof *ht);
  for (int64_t i = 0; i < n; i++)
    for (int64_t j = 0; j < n; j++)
      ht[i * np + j] = (float)(sv[i] * ((h ? h[i * n + j] : (double)(i == j)) + (i == j ? diag_add : 0.0)) * sv[j]);
  int rc = glq_hadamard_transform(ht, np, np, kind, 0); /* X·Hnᵀ */
  if (!rc) rc = columns(ht, np, np, kind, 0);                 /* Hn·X·Hnᵀ */
  sym_ctx c = {ht, np};
  if (!rc) glq_parallel_for((np + TILE - 1) / TILE, 1, symmetrize_range, &c);
  return rc;
}

int glq_rht_input(const float *x, int64_t rows, int64_t n, const float *sv, glq_hadamard_kind kind, float *xt) {
  int64_t np = glq_rht_pad(n);
  for (int64_t r = 0; r < rows; r++)
    for (int64_t j = 0; j < np; j++) xt[r * np + j] = j < n ? x[r * n + j] * sv[j] : 0.0f;
  return glq_hadamard_transform(xt, rows, np, kind, 0);
}

int glq_rht_output(const float *yt, int64_t rows, int64_t m, const float *su, glq_hadamard_kind kind, float *y) {
  int64_t mp = glq_rht_pad(m);
  float *a = malloc((size_t)(rows * mp) * sizeof *a);
  if (!a) return oom("output", rows, mp);
  memcpy(a, yt, (size_t)(rows * mp) * sizeof *a);
  int rc = glq_hadamard_transform(a, rows, mp, kind, 1);
  if (!rc)
    for (int64_t r = 0; r < rows; r++)
      for (int64_t i = 0; i < m; i++) y[r * m + i] = su[i] * a[r * mp + i];
  free(a);
  return rc;
}
