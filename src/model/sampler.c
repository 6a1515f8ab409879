/* sampler.c - greedy / temperature / top-k / top-p sampling over one logit row (semantics in
 * sampler.h). */
#include "sampler.h"
#include "../core/error.h"
#include "../core/ops.h"
#include <math.h>
#include <stdlib.h>

typedef struct {
  float logit;
  int32_t id;
  double w; /* its weight, once known */
} cand_t;

struct glq_sampler {
  glq_sampler_config cfg;
  uint64_t state;
  cand_t *cand;
  double *prob;
  float *row;     /* the row after the penalty / min_p filters */
  int cap;
  int32_t *recent; /* ring of the last repeat_last_n accepted tokens */
  int nrecent, head;
};

int glq_sampler_new(const glq_sampler_config *cfg, glq_sampler **out) {
  *out = NULL;
  if (!isfinite(cfg->temperature) || isnan(cfg->top_p))
    return glq_error(GLQ_EINVAL, "sampler: temperature %g and top_p %g must be finite", cfg->temperature, cfg->top_p);
  if (!(cfg->min_p <= 1.0f) || !isfinite(cfg->repeat_penalty))
    return glq_error(GLQ_EINVAL, "sampler: min_p %g must be at most 1 and repeat_penalty %g finite", cfg->min_p, cfg->repeat_penalty);
  glq_sampler *s = calloc(1, sizeof *s);
  if (!s) return glq_error(GLQ_ENOMEM, "sampler: out of memory");
  s->cfg = *cfg;
  if (s->cfg.repeat_last_n <= 0) s->cfg.repeat_last_n = 64;
  s->state = cfg->seed;
  if (cfg->repeat_penalty > 0.0f && cfg->repeat_penalty != 1.0f) {
    s->recent = malloc((size_t)s->cfg.repeat_last_n * sizeof *s->recent);
    if (!s->recent) {
      free(s);
      return glq_error(GLQ_ENOMEM, "sampler: out of memory");
    }
  }
  *out = s;
  return GLQ_OK;
}

void glq_sampler_free(glq_sampler *s) {
  if (!s) return;
  free(s->cand);
  free(s->prob);
  free(s->row);
  free(s->recent);
  free(s);
}

/* a before b in the candidate order: higher logit first, equal logits by lower id */
static inline int before(cand_t a, cand_t b) { return a.logit > b.logit || (a.logit == b.logit && a.id < b.id); }

static int by_order(const void *a, const void *b) {
  const cand_t *x = a, *y = b;
  return before(*x, *y) ? -1 : before(*y, *x) ? 1 : 0;
}

static void swap(cand_t *a, cand_t *b) {
  cand_t t = *a;
  *a = *b;
  *b = t;
}

/* Reorder c[0..n) so that its first k (0 < k < n) are the k first in the candidate order (in any
 * order among themselves): quickselect with a median-of-three pivot. */
static void select_first(cand_t *c, int n, int k) {
  int lo = 0, hi = n - 1;
  while (lo < hi) {
    int mid = lo + (hi - lo) / 2;
    if (before(c[mid], c[lo])) swap(&c[mid], &c[lo]);
    if (before(c[hi], c[lo])) swap(&c[hi], &c[lo]);
    if (before(c[hi], c[mid])) swap(&c[hi], &c[mid]);
    cand_t pv = c[mid];
    int i = lo, j = hi;
    while (i <= j) { /* Hoare partition around the pivot value (the order is total: no equal elements) */
      while (before(c[i], pv)) i++;
      while (before(pv, c[j])) j--;
      if (i <= j) swap(&c[i++], &c[j--]);
    }
    if (k - 1 <= j) hi = j;
    else if (k - 1 >= i) lo = i;
    else return;
  }
}

/* Argmax (first index on ties); -1 if a logit is NaN. */
static int argmax(const float *x, int n) {
  float mx = x[0];
  int nan = 0;
  for (int i = 0; i < n; i++) {
    nan |= x[i] != x[i];
    mx = x[i] > mx ? x[i] : mx;
  }
  if (nan) return -1;
  for (int i = 0; i < n; i++)
    if (x[i] == mx) return i;
  return 0;
}

static int reserve(glq_sampler *s, int n) {
  if (n <= s->cap) return GLQ_OK;
  cand_t *cd = realloc(s->cand, (size_t)n * sizeof *cd);
  if (cd) s->cand = cd;
  double *pr = realloc(s->prob, (size_t)n * sizeof *pr);
  if (pr) s->prob = pr;
  float *rw = realloc(s->row, (size_t)n * sizeof *rw);
  if (rw) s->row = rw;
  if (!cd || !pr || !rw) return glq_error(GLQ_ENOMEM, "sampler: out of memory for %d candidates", n);
  s->cap = n;
  return GLQ_OK;
}

int glq_sampler_accept(glq_sampler *s, int32_t token) {
  if (token < 0) return glq_error(GLQ_EINVAL, "sampler: token id %d is negative", (int)token);
  if (!s->recent) return GLQ_OK;
  s->recent[s->head] = token;
  s->head = (s->head + 1) % s->cfg.repeat_last_n;
  if (s->nrecent < s->cfg.repeat_last_n) s->nrecent++;
  return GLQ_OK;
}

/* The repetition penalty on a copy of the row (each distinct recent token once). */
static void penalize(const glq_sampler *s, float *row, int n) {
  const float p = s->cfg.repeat_penalty;
  for (int k = 0; k < s->nrecent; k++) {
    int32_t t = s->recent[k];
    int seen = 0;
    for (int j = 0; j < k && !seen; j++) seen = s->recent[j] == t;
    if (seen || t >= n) continue;
    row[t] = row[t] > 0.0f ? row[t] / p : row[t] * p;
  }
}

int glq_sampler_sample(glq_sampler *s, const float *logits, int n, int32_t *token) {
  if (n < 1) return glq_error(GLQ_EINVAL, "sampler: empty logit row");
  int best = argmax(logits, n);
  if (best < 0) {
    for (int i = 0; i < n; i++)
      if (isnan(logits[i])) return glq_error(GLQ_EINVAL, "sampler: logit %d is NaN", i);
  }
  const glq_sampler_config *c = &s->cfg;
  const int use_pen = s->recent != NULL && s->nrecent > 0;
  const int use_min_p = c->min_p > 0.0f && c->temperature > 0.0f;
  if (use_pen || use_min_p) {
    int rc = reserve(s, n);
    if (rc) return rc;
    for (int i = 0; i < n; i++) s->row[i] = logits[i];
    if (use_pen) penalize(s, s->row, n);
    logits = s->row;
    best = argmax(logits, n);
    if (use_min_p) { /* the weights exactly as below decide, so the rule is the definition's */
      const double mx = logits[best], T = c->temperature;
      for (int i = 0; i < n; i++)
        if (exp(((double)s->row[i] - mx) / T) < (double)c->min_p) s->row[i] = -INFINITY;
    }
  }
  if (c->temperature <= 0.0f) {
    *token = best;
    return GLQ_OK;
  }
  int rc = reserve(s, n);
  if (rc) return rc;
  const double mx = logits[best], T = c->temperature;
  const int use_k = c->top_k > 0 && c->top_k < n, use_p = c->top_p > 0.0f && c->top_p < 1.0f;
  cand_t *cd = s->cand;
  double *pr = s->prob, total = 0.0;
  int keep = n;
  if (use_k) { /* the first k in order, sorted; their weights summed in order */
    for (int i = 0; i < n; i++) cd[i] = (cand_t){logits[i], i, 0.0};
    select_first(cd, n, c->top_k);
    keep = c->top_k;
    qsort(cd, (size_t)keep, sizeof *cd, by_order);
    for (int i = 0; i < keep; i++) total += (cd[i].w = exp(((double)cd[i].logit - mx) / T));
  } else { /* every candidate, weights summed by id */
    for (int i = 0; i < n; i++) total += (pr[i] = exp(((double)logits[i] - mx) / T));
    if (use_p) {
      /* The prefix is among the candidates of weight >= tau, which all come before every other one.
       * tau: the lower edge of the power-of-two weight bucket where the buckets' mass, heaviest
       * first, reaches the target (a margin for rounding; if the ordered sum falls short anyway, the
       * next bucket is added). */
      const double want = c->top_p * total;
      double mass[66] = {0};
      for (int i = 0; i < n; i++) {
        int e;
        frexp(pr[i], &e); /* pr in (0, 1]: e <= 1 */
        mass[e < -64 ? 65 : 1 - e] += pr[i];
      }
      int b = 0;
      for (double acc = 0.0; b < 65; b++)
        if ((acc += mass[b]) >= want * (1.0 + 1e-9)) break;
      for (;; b++) {
        const double tau = b >= 65 ? 0.0 : ldexp(1.0, -b); /* bucket b holds weights in [2^-b, 2^(1-b)) */
        int m = 0;
        for (int i = 0; i < n; i++)
          if (pr[i] >= tau) cd[m++] = (cand_t){logits[i], i, 0.0};
        qsort(cd, (size_t)m, sizeof *cd, by_order);
        double cum = 0.0;
        int i = 0;
        while (i < m) {
          cum += pr[cd[i++].id];
          if (cum >= want) break;
        }
        if (cum >= want || m == n) {
          keep = i;
          total = cum;
          for (int j = 0; j < keep; j++) cd[j].w = pr[cd[j].id];
          break;
        }
      }
    } else {
      for (int i = 0; i < n; i++) cd[i] = (cand_t){logits[i], i, pr[i]};
    }
  }
  if (use_k && use_p) {
    double cum = 0.0, want = c->top_p * total;
    int i = 0;
    while (i < keep) {
      cum += cd[i++].w;
      if (cum >= want) break;
    }
    keep = i;
    total = cum;
  }
  double r = (double)(glq_splitmix64(&s->state) >> 40) * (1.0 / 16777216.0) * total, cum = 0.0;
  *token = cd[keep - 1].id;
  for (int i = 0; i < keep; i++) {
    cum += cd[i].w;
    if (r < cum) {
      *token = cd[i].id;
      break;
    }
  }
  return GLQ_OK;
}
