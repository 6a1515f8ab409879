/* ops.c - convenience tensor operations (reference-quality, double precision). */
#include "ops.h"
#include "../linalg/linalg.h"
#include <math.h>
#include <string.h>

static int contig_f64(const glq_tensor *t, glq_tensor *out) { return glq_tensor_to(t, GLQ_F64, out); }

static int same_shape(const glq_tensor *a, const glq_tensor *b) {
  if (a->ndim != b->ndim) return 0;
  for (int i = 0; i < a->ndim; i++)
    if (a->shape[i] != b->shape[i]) return 0;
  return 1;
}

int glq_binary(const glq_tensor *a, const glq_tensor *b, glq_binop op, glq_tensor *out) {
  if (!same_shape(a, b)) return glq_error(GLQ_EINVAL, "elementwise op: shapes differ (%d-d vs %d-d or sizes)", a->ndim, b->ndim);
  glq_tensor x, y, r;
  int rc = contig_f64(a, &x);
  if (rc) return rc;
  if ((rc = contig_f64(b, &y))) { glq_tensor_release(&x); return rc; }
  double *p = glq_tensor_data(&x);
  const double *q = glq_tensor_data(&y);
  int64_t n = glq_tensor_numel(&x);
  for (int64_t i = 0; i < n; i++) {
    switch (op) {
    case GLQ_OP_ADD: p[i] += q[i]; break;
    case GLQ_OP_SUB: p[i] -= q[i]; break;
    case GLQ_OP_MUL: p[i] *= q[i]; break;
    case GLQ_OP_DIV: p[i] /= q[i]; break;
    }
  }
  glq_dtype dt = (a->dtype == GLQ_F64 && b->dtype == GLQ_F64) ? GLQ_F64 : GLQ_F32;
  rc = glq_tensor_to(&x, dt, &r);
  glq_tensor_release(&x);
  glq_tensor_release(&y);
  if (!rc) *out = r;
  return rc;
}

int glq_scale(const glq_tensor *a, double s, glq_tensor *out) {
  glq_tensor x;
  int rc = contig_f64(a, &x);
  if (rc) return rc;
  double *p = glq_tensor_data(&x);
  int64_t n = glq_tensor_numel(&x);
  for (int64_t i = 0; i < n; i++) p[i] *= s;
  rc = glq_tensor_to(&x, glq_dtype_is_float(a->dtype) ? a->dtype : GLQ_F32, out);
  glq_tensor_release(&x);
  return rc;
}

typedef enum { R_SUM, R_SUMSQ, R_ABSMAX } red_kind;
static double reduce(const glq_tensor *t, red_kind k) {
  glq_tensor x;
  if (contig_f64(t, &x)) return NAN;
  const double *p = glq_tensor_data(&x);
  int64_t n = glq_tensor_numel(&x);
  double acc = 0;
  for (int64_t i = 0; i < n; i++) {
    if (k == R_SUM) acc += p[i];
    else if (k == R_SUMSQ) acc += p[i] * p[i];
    else if (!(fabs(p[i]) <= acc)) acc = fabs(p[i]); /* NaN propagates */
  }
  glq_tensor_release(&x);
  return acc;
}

double glq_sum(const glq_tensor *t) { return reduce(t, R_SUM); }
double glq_sumsq(const glq_tensor *t) { return reduce(t, R_SUMSQ); }
double glq_absmax(const glq_tensor *t) { return reduce(t, R_ABSMAX); }

int glq_max_abs_diff(const glq_tensor *a, const glq_tensor *b, double *out) {
  glq_tensor d;
  int rc = glq_binary(a, b, GLQ_OP_SUB, &d);
  if (rc) return rc;
  *out = glq_absmax(&d);
  glq_tensor_release(&d);
  return GLQ_OK;
}

int glq_matmul(const glq_tensor *a, const glq_tensor *b, int transpose_b, glq_tensor *out) {
  if (a->ndim != 2 || b->ndim != 2) return glq_error(GLQ_EINVAL, "matmul: both operands must be 2-d");
  if (a->dtype != b->dtype || (a->dtype != GLQ_F32 && a->dtype != GLQ_F64))
    return glq_error(GLQ_EINVAL, "matmul: operands must both be f32 or both f64 (got %s and %s)", glq_dtype_name(a->dtype), glq_dtype_name(b->dtype));
  int64_t m = a->shape[0], k = a->shape[1], kb = transpose_b ? b->shape[1] : b->shape[0], n = transpose_b ? b->shape[0] : b->shape[1];
  if (k != kb) return glq_error(GLQ_EINVAL, "matmul: inner sizes differ (%lld vs %lld)", (long long)k, (long long)kb);
  glq_tensor x, y, r;
  int rc = glq_tensor_contiguous(a, &x);
  if (rc) return rc;
  if ((rc = glq_tensor_contiguous(b, &y))) { glq_tensor_release(&x); return rc; }
  int64_t shape[2] = {m, n};
  if ((rc = glq_tensor_new(a->dtype, 2, shape, &r))) { glq_tensor_release(&x); glq_tensor_release(&y); return rc; }
  if (m && n && k) {
    if (a->dtype == GLQ_F32)
      glq_sgemm(0, transpose_b, m, n, k, 1.0f, glq_tensor_data(&x), k, glq_tensor_data(&y), y.shape[1], 0.0f,
                glq_tensor_data(&r), n);
    else
      glq_dgemm(0, transpose_b, m, n, k, 1.0, glq_tensor_data(&x), k, glq_tensor_data(&y), y.shape[1], 0.0,
                glq_tensor_data(&r), n);
  }
  glq_tensor_release(&x);
  glq_tensor_release(&y);
  *out = r;
  return GLQ_OK;
}

uint64_t glq_splitmix64(uint64_t *s) {
  uint64_t z = (*s += 0x9e3779b97f4a7c15ULL);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

static double uniform01(uint64_t *s) { return (double)(glq_splitmix64(s) >> 11) * 0x1p-53; }

static int fill(glq_dtype dt, int ndim, const int64_t *shape, uint64_t seed, int normal, glq_tensor *out) {
  glq_tensor x;
  int rc = glq_tensor_new(GLQ_F64, ndim, shape, &x);
  if (rc) return rc;
  double *p = glq_tensor_data(&x);
  int64_t n = glq_tensor_numel(&x);
  uint64_t s = seed;
  for (int64_t i = 0; i < n; i++) {
    if (!normal) { p[i] = uniform01(&s); continue; }
    double u1 = uniform01(&s), u2 = uniform01(&s);
    double r = sqrt(-2.0 * log(1.0 - u1));
    p[i] = r * cos(6.283185307179586 * u2);
    if (i + 1 < n) p[++i] = r * sin(6.283185307179586 * u2);
  }
  rc = glq_tensor_to(&x, dt, out);
  glq_tensor_release(&x);
  return rc;
}

int glq_randn(glq_dtype dt, int ndim, const int64_t *shape, uint64_t seed, glq_tensor *out) { return fill(dt, ndim, shape, seed, 1, out); }
int glq_rand(glq_dtype dt, int ndim, const int64_t *shape, uint64_t seed, glq_tensor *out) { return fill(dt, ndim, shape, seed, 0, out); }
