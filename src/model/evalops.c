/* evalops.c - log-softmax based row statistics for evaluation. */
#include "evalops.h"
#include <math.h>
#include <stddef.h>
#include "../core/error.h"
#include "../core/pool.h"

static double row_lse(const float *x, int64_t v, int64_t *argmax) {
  float mx = x[0];
  int64_t am = 0;
  for (int64_t j = 1; j < v; j++)
    if (x[j] > mx) { mx = x[j]; am = j; }
  double s = 0;
  for (int64_t j = 0; j < v; j++) s += exp((double)x[j] - mx);
  if (argmax) *argmax = am;
  return mx + log(s);
}

typedef struct {
  const float *a, *b;
  int64_t v;
  const int32_t *t;
  double *out;
  uint8_t *agree;
} job;

static void nll_range(void *c, int64_t b, int64_t e) {
  job *j = c;
  for (int64_t i = b; i < e; i++) {
    const float *x = j->a + i * j->v;
    j->out[i] = row_lse(x, j->v, NULL) - x[j->t[i]];
  }
}

int glq_nll_rows(const float *logits, int64_t n, int64_t vocab, const int32_t *targets, double *nll) {
  if (vocab <= 0) return glq_error(GLQ_EINVAL, "nll: vocabulary size must be positive");
  for (int64_t i = 0; i < n; i++)
    if (targets[i] < 0 || targets[i] >= vocab)
      return glq_error(GLQ_EINVAL, "nll: target %d at row %lld outside the vocabulary of %lld", targets[i], (long long)i, (long long)vocab);
  job j = {logits, NULL, vocab, targets, nll, NULL};
  glq_parallel_for(n, 4, nll_range, &j);
  return GLQ_OK;
}

static void kl_range(void *c, int64_t b, int64_t e) {
  job *j = c;
  for (int64_t i = b; i < e; i++) {
    const float *p = j->a + i * j->v, *q = j->b + i * j->v;
    int64_t ap, aq;
    double lp = row_lse(p, j->v, &ap), lq = row_lse(q, j->v, &aq), kl = 0;
    for (int64_t k = 0; k < j->v; k++) {
      double lpk = p[k] - lp;
      kl += exp(lpk) * (lpk - (q[k] - lq));
    }
    j->out[i] = kl > 0 ? kl : 0; /* rounding can make a tiny negative */
    j->agree[i] = ap == aq;
  }
}

int glq_kl_rows(const float *p, const float *q, int64_t n, int64_t vocab, double *kl, uint8_t *agree) {
  if (vocab <= 0) return glq_error(GLQ_EINVAL, "kl: vocabulary size must be positive");
  job j = {p, q, vocab, NULL, kl, agree};
  glq_parallel_for(n, 4, kl_range, &j);
  return GLQ_OK;
}
