/* sampler.c - greedy / temperature / top-k / top-p sampling over one logit row. */
#include "sampler.h"
#include "../core/error.h"
#include "../core/ops.h"
#include <math.h>
#include <stdlib.h>

typedef struct {
  float logit;
  int32_t id;
} cand_t;

struct glq_sampler {
  glq_sampler_config cfg;
  uint64_t state;
  cand_t *cand;
  double *prob;
  int cap;
};

int glq_sampler_new(const glq_sampler_config *cfg, glq_sampler **out) {
  *out = NULL;
  if (!isfinite(cfg->temperature) || isnan(cfg->top_p))
    return glq_error(GLQ_EINVAL, "sampler: temperature %g and top_p %g must be finite", cfg->temperature, cfg->top_p);
  glq_sampler *s = calloc(1, sizeof *s);
  if (!s) return glq_error(GLQ_ENOMEM, "sampler: out of memory");
  s->cfg = *cfg;
  s->state = cfg->seed;
  *out = s;
  return GLQ_OK;
}

void glq_sampler_free(glq_sampler *s) {
  if (!s) return;
  free(s->cand);
  free(s->prob);
  free(s);
}

/* Higher logit first; equal logits by lower id, so the order is total and deterministic. */
static int by_logit(const void *a, const void *b) {
  const cand_t *x = a, *y = b;
  if (x->logit != y->logit) return x->logit > y->logit ? -1 : 1;
  return (x->id > y->id) - (x->id < y->id);
}

int glq_sampler_sample(glq_sampler *s, const float *logits, int n, int32_t *token) {
  if (n < 1) return glq_error(GLQ_EINVAL, "sampler: empty logit row");
  int best = 0;
  for (int i = 0; i < n; i++) {
    if (isnan(logits[i])) return glq_error(GLQ_EINVAL, "sampler: logit %d is NaN", i);
    if (logits[i] > logits[best]) best = i;
  }
  const glq_sampler_config *c = &s->cfg;
  if (c->temperature <= 0.0f) {
    *token = best;
    return GLQ_OK;
  }
  if (n > s->cap) {
    cand_t *cd = realloc(s->cand, (size_t)n * sizeof *cd);
    if (cd) s->cand = cd;
    double *pr = realloc(s->prob, (size_t)n * sizeof *pr);
    if (pr) s->prob = pr;
    if (!cd || !pr) return glq_error(GLQ_ENOMEM, "sampler: out of memory for %d candidates", n);
    s->cap = n;
  }
  for (int i = 0; i < n; i++) s->cand[i] = (cand_t){logits[i], i};
  int keep = n;
  int use_p = c->top_p > 0.0f && c->top_p < 1.0f;
  if ((c->top_k > 0 && c->top_k < n) || use_p) {
    qsort(s->cand, (size_t)n, sizeof *s->cand, by_logit);
    if (c->top_k > 0 && c->top_k < n) keep = c->top_k;
  }
  double mx = logits[best], total = 0.0;
  for (int i = 0; i < keep; i++) {
    s->prob[i] = exp(((double)s->cand[i].logit - mx) / c->temperature);
    total += s->prob[i];
  }
  if (use_p) {
    double cum = 0.0, want = c->top_p * total;
    int i = 0;
    while (i < keep) {
      cum += s->prob[i++];
      if (cum >= want) break;
    }
    keep = i;
    total = cum;
  }
  double r = (double)(glq_splitmix64(&s->state) >> 40) * (1.0 / 16777216.0) * total, cum = 0.0;
  *token = s->cand[keep - 1].id;
  for (int i = 0; i < keep; i++) {
    cum += s->prob[i];
    if (r < cum) {
      *token = s->cand[i].id;
      break;
    }
  }
  return GLQ_OK;
}
