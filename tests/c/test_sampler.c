/* test_sampler.c - the sampler against a direct implementation of its definition (sampler.h): every
 * candidate sorted, weights and sums in double, the same SplitMix64 draws. Rows: peaked and flat
 * random logits, ties, -inf, a single candidate; configs: greedy, temperature, top_k, top_p, both,
 * min_p and the repetition penalty (alone and with the others, over a history of accepted tokens).
 * Prints the time per sample on a 49152-logit row as information. */
#include "../../src/model/sampler.h"
#include "../../src/core/ops.h"
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static int fails;
#define CHECK(c, ...) do { if (!(c)) { fails++; printf("FAIL: " __VA_ARGS__); printf("\n"); } } while (0)

typedef struct { float logit; int id; double w; } cand;

static int order(const void *a, const void *b) {
  const cand *x = a, *y = b;
  if (x->logit != y->logit) return x->logit > y->logit ? -1 : 1;
  return (x->id > y->id) - (x->id < y->id);
}

/* the definition, with a full sort; hist: every accepted token so far (nh of them) */
static int reference(const glq_sampler_config *c, uint64_t *state, const float *l0, int n, const int *hist, int nh) {
  float *l = malloc(sizeof *l * (size_t)n);
  memcpy(l, l0, sizeof *l * (size_t)n);
  if (c->repeat_penalty > 0.0f && c->repeat_penalty != 1.0f) {
    int last = c->repeat_last_n > 0 ? c->repeat_last_n : 64;
    char *hit = calloc((size_t)n, 1);
    for (int k = nh - 1; k >= 0 && k >= nh - last; k--)
      if (hist[k] < n) hit[hist[k]] = 1;
    for (int i = 0; i < n; i++)
      if (hit[i]) l[i] = l[i] > 0.0f ? l[i] / c->repeat_penalty : l[i] * c->repeat_penalty;
    free(hit);
  }
  if (c->min_p > 0.0f && c->temperature > 0.0f) {
    int b = 0;
    for (int i = 0; i < n; i++)
      if (l[i] > l[b]) b = i;
    double m = l[b];
    for (int i = 0; i < n; i++)
      if (exp(((double)l[i] - m) / c->temperature) < (double)c->min_p) l[i] = -INFINITY;
  }
  int best = 0;
  for (int i = 0; i < n; i++)
    if (l[i] > l[best]) best = i;
  if (c->temperature <= 0.0f) { free(l); return best; }
  cand *cd = malloc(sizeof *cd * (size_t)n);
  double mx = l[best], T = c->temperature, total = 0.0;
  int use_k = c->top_k > 0 && c->top_k < n, use_p = c->top_p > 0.0f && c->top_p < 1.0f, keep = n;
  for (int i = 0; i < n; i++) cd[i] = (cand){l[i], i, exp(((double)l[i] - mx) / T)};
  if (!use_k)
    for (int i = 0; i < n; i++) total += cd[i].w; /* by id */
  if (use_k || use_p) qsort(cd, (size_t)n, sizeof *cd, order); /* else the candidates keep id order */
  if (use_k) {
    keep = c->top_k;
    for (int i = 0; i < keep; i++) total += cd[i].w; /* in order */
  }
  if (use_p) {
    double cum = 0.0, want = c->top_p * total;
    int i = 0;
    while (i < keep) {
      cum += cd[i++].w;
      if (cum >= want) break;
    }
    keep = i;
    total = cum;
  }
  double r = (double)(glq_splitmix64(state) >> 40) * (1.0 / 16777216.0) * total, cum = 0.0;
  int tok = cd[keep - 1].id;
  for (int i = 0; i < keep; i++) {
    cum += cd[i].w;
    if (r < cum) {
      tok = cd[i].id;
      break;
    }
  }
  free(cd);
  free(l);
  return tok;
}

static uint64_t g = 12345;
static double unif(void) { return (double)(glq_splitmix64(&g) >> 11) * 0x1p-53; }
static float gauss(void) { return (float)(sqrt(-2.0 * log(unif() + 1e-300)) * cos(6.283185307179586 * unif())); }

/* kind 0: N(0, 3²); 1: peaked (one logit +12); 2: few distinct values (ties); 3: with -inf */
static void fill(float *l, int n, int kind) {
  for (int i = 0; i < n; i++) {
    float v = 3.0f * gauss();
    if (kind == 2) v = (float)(int)(v);
    if (kind == 3 && i % 3 == 0) v = -INFINITY;
    l[i] = v;
  }
  if (kind == 1) l[n / 3] += 12.0f;
}

int main(void) {
  const glq_sampler_config cfgs[] = {
    {0.0f, 0, 1.0f, 1, 0.0f, 0.0f, 0}, {1.0f, 0, 1.0f, 2, 0.0f, 0.0f, 0}, {0.7f, 40, 1.0f, 3, 0.0f, 0.0f, 0}, {0.8f, 0, 0.9f, 4, 0.0f, 0.0f, 0}, {1.3f, 50, 0.8f, 5, 0.0f, 0.0f, 0},
    {0.5f, 1, 1.0f, 6, 0.0f, 0.0f, 0}, {2.0f, 0, 0.05f, 7, 0.0f, 0.0f, 0}, {1.0f, 7, 0.999f, 8, 0.0f, 0.0f, 0}, {0.9f, 0, 0.5f, 9, 0.0f, 0.0f, 0},
    /* min_p, repetition penalty (window 64 by default, or 5), and both with top_k / top_p */
    {1.0f, 0, 1.0f, 10, 0.05f, 1.0f, 0}, {0.7f, 0, 1.0f, 11, 0.3f, 1.0f, 0}, {0.0f, 0, 1.0f, 12, 0.0f, 1.3f, 0},
    {0.8f, 0, 1.0f, 13, 0.0f, 1.1f, 5}, {1.0f, 40, 0.9f, 14, 0.1f, 1.2f, 0}, {1.2f, 0, 0.8f, 15, 0.02f, 0.8f, 16}};
  const int sizes[] = {1, 2, 7, 100, 4099};
  int draws = 0;
  for (size_t ci = 0; ci < sizeof cfgs / sizeof cfgs[0]; ci++)
    for (size_t si = 0; si < sizeof sizes / sizeof sizes[0]; si++)
      for (int kind = 0; kind < 4; kind++) {
        int n = sizes[si];
        if (kind == 3 && n < 3) continue;
        float *l = malloc(sizeof *l * (size_t)n);
        glq_sampler *s;
        CHECK(glq_sampler_new(&cfgs[ci], &s) == 0, "new");
        uint64_t state = cfgs[ci].seed;
        int hist[200], nh = 0;
        for (int k = 0; k < 100; k++) { /* a "prompt": repeats, and ids beyond the row */
          hist[nh] = (int)(glq_splitmix64(&g) % (uint64_t)(n + 2));
          CHECK(glq_sampler_accept(s, hist[nh]) == 0, "accept");
          nh++;
        }
        for (int rep = 0; rep < 25; rep++) {
          fill(l, n, kind);
          int32_t got;
          CHECK(glq_sampler_sample(s, l, n, &got) == 0, "sample");
          int want = reference(&cfgs[ci], &state, l, n, hist, nh);
          CHECK(got == want, "config %zu, n %d, kind %d, draw %d: token %d, reference %d", ci, n, kind, rep, got, want);
          glq_sampler_accept(s, got);
          hist[nh++] = got;
          draws++;
        }
        glq_sampler_free(s);
        free(l);
      }
  /* NaN is an error naming the position */
  {
    glq_sampler *s;
    glq_sampler_config c = {1.0f, 0, 0.9f, 1, 0.0f, 0.0f, 0};
    glq_sampler_new(&c, &s);
    float l[5] = {1, 2, NAN, 0, 1};
    int32_t t;
    CHECK(glq_sampler_sample(s, l, 5, &t) != 0, "NaN accepted");
    glq_sampler_free(s);
  }
  /* information: time per sample on a SmolLM2-sized row */
  {
    int n = 49152;
    float *l = malloc(sizeof *l * (size_t)n);
    fill(l, n, 1);
    const glq_sampler_config tc[] = {{0.0f, 0, 1.0f, 1, 0.0f, 0.0f, 0}, {0.8f, 0, 1.0f, 1, 0.0f, 0.0f, 0}, {0.8f, 40, 1.0f, 1, 0.0f, 0.0f, 0}, {0.8f, 0, 0.9f, 1, 0.0f, 0.0f, 0}};
    const char *name[] = {"greedy", "temperature", "top_k 40", "top_p 0.9"};
    for (int i = 0; i < 4; i++) {
      glq_sampler *s;
      glq_sampler_new(&tc[i], &s);
      struct timespec a, b;
      clock_gettime(CLOCK_MONOTONIC, &a);
      int32_t t;
      for (int r = 0; r < 100; r++) glq_sampler_sample(s, l, n, &t);
      clock_gettime(CLOCK_MONOTONIC, &b);
      printf("%-12s %.3f ms per sample (49152 logits, one peak)\n", name[i], ((b.tv_sec - a.tv_sec) * 1e3 + (b.tv_nsec - a.tv_nsec) * 1e-6) / 100);
      glq_sampler_free(s);
    }
    free(l);
  }
  printf(fails ? "test_sampler: %d FAILED (%d draws)\n" : "test_sampler: ok (%d draws)\n", fails ? fails : draws, draws);
  return fails != 0;
}
