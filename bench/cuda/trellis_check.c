/* trellis_check.c - the GPU Viterbi (cuda/trellis.cu) against the CPU's (src/quant/trellis.c).
 * Run by `make test-gpu`; prints one line per check, then "N passed, M failed", and exits 1 on a failure
 * (also when there is no CUDA device: this program only runs on a GPU machine).
 *
 * The search is defined operation for operation (trellis.h), so the GPU must return the CPU's states
 * exactly: for 3inst at K = 1..4 (computed in the kernel), hyb at K = 2 (a random table) and a random
 * lut with L = 10 (both read from a table), sequences of 256 weights drawn as
 * N(0, s^2) at several scales plus sequences with many exact ties (values repeated from the code), free
 * and constrained to a tail-biting overlap; then glq's two-pass tail-biting flow on both; and the same
 * GPU call twice (identical bytes). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "../../cuda/glq_cuda.h"
#define GLQ_HOST_CHECKS
#include "host_util.h"
#include "../../src/core/error.h"
#include "../../src/quant/trellis.h"
#include "../../src/core/pool.h"

#define NSEQ 300 /* more than one launch's worth (cuda/trellis.cu takes 128 per launch) */

/* The CPU reference of sequences [i0, i1) on the pool threads (it dominates this program's time):
 * res[i] = 0 when the CPU's states equal the GPU's sg, 1 when they differ, -1 on a CPU error. */
typedef struct {
  const glq_trellis_code *c;
  const float *x;
  const int32_t *ov; /* NULL: free ends */
  const int32_t *sg;
  int T, steps, two_pass;
  int *res;
} cpu_ref;

static void cpu_ref_range(void *vc, int64_t i0, int64_t i1) {
  const cpu_ref *r = vc;
  uint16_t sc[GLQ_TRELLIS_TILE];
  for (int64_t i = i0; i < i1; i++) {
    const float *xi = r->x + (size_t)i * r->T;
    const int32_t o = r->ov ? r->ov[i] : -1;
    int rc = r->two_pass ? glq_trellis_quantize_seq(r->c, xi, r->steps, sc) : glq_trellis_viterbi(r->c, xi, r->steps, o, o, sc, NULL);
    int d = rc ? -1 : 0;
    for (int k = 0; !rc && k < r->steps; k++)
      if ((int32_t)sc[k] != r->sg[(size_t)i * r->steps + k]) {
        d = 1;
        break;
      }
    r->res[i] = d;
  }
}

/* runs the reference; returns the number of differing sequences (first one in *first) or -1 on a CPU error */
static int cpu_compare(const glq_trellis_code *c, const float *x, const int32_t *ov, const int32_t *sg, int T, int steps,
                       int two_pass, int *first) {
  int res[NSEQ];
  cpu_ref r = {c, x, ov, sg, T, steps, two_pass, res};
  glq_trellis_vector(); /* the dispatch level, settled before the threads read it */
  glq_parallel_for(NSEQ, 4, cpu_ref_range, &r);
  int bad = 0;
  *first = -1;
  for (int i = 0; i < NSEQ; i++) {
    if (res[i] < 0) return -1;
    if (res[i] && bad++ == 0) *first = i;
  }
  return bad;
}

static void check_code(const char *name, const glq_trellis_code *c) {
  glq_cuda_trellis *g = NULL;
  if (glq_cuda_trellis_create(c->L, c->K, c->V, c->lut, &g)) {
    report(0, "%-12s create: %s", name, glq_errmsg());
    return;
  }
  const int T = GLQ_TRELLIS_TILE, steps = T / c->V, KV = c->K * c->V;
  const int32_t G = 1 << (c->L - KV);
  float *x = xmalloc(sizeof(float) * NSEQ * T);
  int32_t *ov = xmalloc(sizeof(int32_t) * NSEQ), *sg = xmalloc(sizeof(int32_t) * NSEQ * steps);
  int32_t *sg2 = xmalloc(sizeof(int32_t) * NSEQ * steps);
  const double scales[] = {0.25, 1.0, 3.0};
  for (int set = 0; set < 4; set++) {
    for (int i = 0; i < NSEQ; i++) {
      ov[i] = (int32_t)(rnd() % (uint64_t)G);
      for (int k = 0; k < T; k++)
        x[(size_t)i * T + k] = set < 3 ? (float)(scales[set] * gauss())
                                       : c->lut[rnd() % ((uint64_t)c->V << c->L)]; /* exact code values: ties */
    }
    for (int constrained = 0; constrained < 2; constrained++) {
      memset(sg, 0xFF, sizeof(int32_t) * NSEQ * steps);
      if (glq_cuda_trellis_viterbi(g, x, NSEQ, T, constrained ? ov : NULL, sg)) {
        report(0, "%-12s set %d %s: GPU error: %s", name, set, constrained ? "tail-biting" : "free", glq_errmsg());
        continue;
      }
      int first;
      const int bad = cpu_compare(c, x, constrained ? ov : NULL, sg, T, steps, 0, &first);
      if (bad < 0) report(0, "%-12s CPU error on a sequence", name);
      if (bad >= 0)
        report(bad == 0, "%-12s set %d %-11s %d sequences%s%d", name, set, constrained ? "tail-biting" : "free", NSEQ,
               bad ? " differ, first " : " identical", bad ? first : 0);
      if (set == 0 && constrained) {
        if (glq_cuda_trellis_viterbi(g, x, NSEQ, T, ov, sg2)) report(0, "%-12s rerun: %s", name, glq_errmsg());
        else report(!memcmp(sg, sg2, sizeof(int32_t) * NSEQ * steps), "%-12s rerun gives identical bytes", name);
      }
    }
  }
  /* glq's two passes (trellis.h: rotate by half, take the overlap, constrained pass) on the GPU vs
   * glq_trellis_quantize_seq */
  {
    const int h = steps / 2;
    float *rot = xmalloc(sizeof(float) * NSEQ * T);
    for (int i = 0; i < NSEQ; i++)
      for (int k = 0; k < T; k++) x[(size_t)i * T + k] = (float)gauss();
    for (int i = 0; i < NSEQ; i++)
      for (int k = 0; k < T; k++) rot[(size_t)i * T + k] = x[(size_t)i * T + ((k - h * c->V) % T + T) % T];
    int ok = !glq_cuda_trellis_viterbi(g, rot, NSEQ, T, NULL, sg);
    for (int i = 0; ok && i < NSEQ; i++) ov[i] = sg[(size_t)i * steps + h] >> KV;
    ok = ok && !glq_cuda_trellis_viterbi(g, x, NSEQ, T, ov, sg);
    int first, bad = 0;
    if (ok && (bad = cpu_compare(c, x, NULL, sg, T, steps, 1, &first)) < 0) ok = 0;
    if (!ok) report(0, "%-12s two-pass: %s", name, bad < 0 ? "CPU error on a sequence" : glq_errmsg());
    else report(bad == 0, "%-12s two-pass tail-biting, %d sequences: %d differ", name, NSEQ, bad);
    free(rot);
  }
  /* timing (informational): one free + one constrained call, as the LDLQ does per 16-column block */
  for (int n = 36; n <= NSEQ; n *= 8) {
    struct timespec t0, t1;
    glq_cuda_trellis_viterbi(g, x, n, T, NULL, sg);
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (int r = 0; r < 5; r++) {
      glq_cuda_trellis_viterbi(g, x, n, T, NULL, sg);
      glq_cuda_trellis_viterbi(g, x, n, T, ov, sg);
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double ms = ((t1.tv_sec - t0.tv_sec) * 1e3 + (t1.tv_nsec - t0.tv_nsec) * 1e-6) / 5;
    printf("# %-12s %3d tiles, two passes: %.2f ms (%.1f M weights/s)\n", name, n, ms, n * T / ms * 1e-3);
  }
  free(x), free(ov), free(sg), free(sg2);
  glq_cuda_trellis_free(g);
}

int main(void) {
  char dev[256];
  if (glq_cuda_describe(dev, sizeof dev)) {
    fprintf(stderr, "trellis_check: %s\n", dev);
    printf("0 passed, 1 failed\n");
    return 1;
  }
  printf("# trellis_check on %s\n", dev);
  for (int K = 1; K <= 4; K++) {
    glq_trellis_code c;
    char name[32];
    snprintf(name, sizeof name, "3inst K=%d", K);
    if (glq_trellis_code_3inst(&c, K)) {
      report(0, "%s: %s", name, glq_errmsg());
      continue;
    }
    check_code(name, &c);
    glq_trellis_code_free(&c);
  }
  {
    float tlut[GLQ_TRELLIS_HYB_TLUT * 2];
    for (int i = 0; i < GLQ_TRELLIS_HYB_TLUT * 2; i++) tlut[i] = nrand();
    glq_trellis_code c;
    if (glq_trellis_code_hyb(&c, 2, tlut)) report(0, "hyb K=2: %s", glq_errmsg());
    else {
      check_code("hyb K=2", &c);
      glq_trellis_code_free(&c);
    }
  }
  {
    float lut[1 << 10];
    for (int i = 0; i < 1 << 10; i++) lut[i] = nrand();
    glq_trellis_code c;
    if (glq_trellis_code_lut(&c, 10, 3, 1, lut)) report(0, "lut L=10 K=3: %s", glq_errmsg());
    else {
      check_code("lut L=10 K=3", &c);
      glq_trellis_code_free(&c);
    }
  }
  printf("%d passed, %d failed\n", n_pass, n_fail);
  return n_fail ? 1 : 0;
}
