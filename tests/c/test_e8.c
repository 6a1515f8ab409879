/* test_e8.c - large exhaustive check of glq_e8_encode against glq_e8_encode_bruteforce (both codebooks):
 * N(0, s^2) vectors at scales from 0.1x to 10x the table radius, plus quarter-grid points (exact ties).
 * Build: make && gcc -std=c11 -O2 -march=x86-64-v2 -D_GNU_SOURCE -Isrc tests/c/test_e8.c build/libglq.a \
 *          -lopenblas -llapacke -lpcre2-8 -lm -lpthread -ldl -o build/test_e8
 * Run: build/test_e8 [vectors per case]   (default 170000: about 10^6 per codebook); exit 1 on a mismatch. */
#include "core/ops.h"
#include "core/pool.h"
#include "quant/e8.h"
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

/* compares one batch; returns the number of mismatches (and prints the first few) */
static int64_t check(const glq_e8_codebook *cb, const float *x, int64_t n, const char *what, double *t_fast,
                     double *t_ref) {
  int32_t *a = malloc((size_t)n * sizeof *a), *b = malloc((size_t)n * sizeof *b);
  if (!a || !b) { fprintf(stderr, "out of memory\n"); exit(2); }
  double t0 = now();
  int rc = glq_e8_encode(cb, x, n, a);
  double t1 = now();
  rc = rc ? rc : glq_e8_encode_bruteforce(cb, x, n, b);
  double t2 = now();
  if (rc) { fprintf(stderr, "%s\n", glq_errmsg()); exit(2); }
  *t_fast += t1 - t0;
  *t_ref += t2 - t1;
  int64_t bad = 0;
  for (int64_t i = 0; i < n; i++)
    if (a[i] != b[i] && bad++ < 5)
      printf("  MISMATCH %s size %d vector %lld: encode %d, brute force %d\n", what, cb->size, (long long)i, a[i], b[i]);
  free(a);
  free(b);
  return bad;
}

int main(int argc, char **argv) {
  int64_t n = argc > 1 ? atoll(argv[1]) : 170000;
  static const double scales[] = {0.125, 0.5, 1, 2, 4, 12.5};
  int64_t total_bad = 0;
  for (int b = 0; b < 2; b++) {
    const glq_e8_codebook *cb = glq_e8_codebook_get(b ? 256 : 65536);
    if (!cb) { fprintf(stderr, "%s\n", glq_errmsg()); return 2; }
    double tf = 0, tr = 0;
    int64_t done = 0;
    for (int s = 0; s < 7; s++) {
      glq_tensor t, x;
      int64_t shape[2] = {n, 8};
      char what[32];
      if (s < 6) {
        glq_randn(GLQ_F32, 2, shape, 1000 + (uint64_t)s, &t);
        glq_scale(&t, scales[s], &x);
        snprintf(what, sizeof what, "scale %g", scales[s]);
      } else {
        glq_rand(GLQ_F32, 2, shape, 2000, &t);
        glq_scale(&t, 1, &x);
        float *p = glq_tensor_data(&x);
        for (int64_t i = 0; i < 8 * n; i++) p[i] = floorf(p[i] * 33) / 4 - 4;
        snprintf(what, sizeof what, "quarter grid");
      }
      int64_t bad = check(cb, glq_tensor_data(&x), n, what, &tf, &tr);
      printf("size %5d %-13s %lld vectors: %lld mismatches\n", cb->size, what, (long long)n, (long long)bad);
      total_bad += bad;
      done += n;
      glq_tensor_release(&t);
      glq_tensor_release(&x);
    }
    printf("size %5d: %lld vectors, encode %.2f M/s, brute force %.3f M/s (%d threads)\n", cb->size, (long long)done,
           done / tf / 1e6, done / tr / 1e6, glq_num_threads());
  }
  printf(total_bad ? "FAILED: %lld mismatches\n" : "OK: encode == brute force everywhere\n", (long long)total_bad);
  return total_bad ? 1 : 0;
}
