/* quant_bench.c - time to quantize one linear layer with a dense Hessian (E8 + RHT + LDLQ) at 2/3/4
 * bits, with and without the scale search, plus nearest rounding of the same rotated weights.
 * Data: W ~ N(0, 0.02²); H = XᵀX/rows with X rows an AR(1) process along the features (rho 0.9)
 * and every 17th feature 4x louder (an outlier-channel pattern), rows = 2n.
 * Build: make && gcc -std=c11 -O2 -march=x86-64-v2 -D_GNU_SOURCE -Isrc bench/quant_bench.c build/libglq.a \
 *          -lopenblas -llapacke -lpcre2-8 -lm -lpthread -ldl -o build/quant_bench
 * Run: build/quant_bench [out in [tune_iters]]   (default 4096 4096 0). */
#include "core/ops.h"
#include "linalg/linalg.h"
#include "quant/ldlq.h"
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static double gauss(uint64_t *s) {
  double u1 = ((double)(glq_splitmix64(s) >> 11) + 1) * 0x1p-53, u2 = (double)(glq_splitmix64(s) >> 11) * 0x1p-53;
  return sqrt(-2 * log(u1)) * cos(6.283185307179586 * u2);
}

int main(int argc, char **argv) {
  const int64_t m = argc > 1 ? atoll(argv[1]) : 4096, n = argc > 2 ? atoll(argv[2]) : 4096, rows = 2 * n;
  const int tune = argc > 3 ? atoi(argv[3]) : 0;
  uint64_t s = 1;
  float *w = malloc((size_t)(m * n) * sizeof *w), *x = malloc((size_t)(rows * n) * sizeof *x);
  double *h = calloc((size_t)(n * n), sizeof *h);
  if (!w || !x || !h) return fprintf(stderr, "out of memory\n"), 1;
  for (int64_t i = 0; i < m * n; i++) w[i] = (float)(0.02 * gauss(&s));
  for (int64_t r = 0; r < rows; r++) {
    double prev = 0;
    for (int64_t j = 0; j < n; j++) {
      prev = 0.9 * prev + gauss(&s);
      x[r * n + j] = (float)(prev * (j % 17 == 0 ? 4.0 : 1.0));
    }
  }
  double t0 = now();
  if (glq_hessian_accumulate(h, n, x, rows)) return fprintf(stderr, "hessian failed\n"), 1;
  printf("layer %lld x %lld, Hessian from %lld rows: %.2f s (f64 dsyrk)\n", (long long)m, (long long)n,
         (long long)rows, now() - t0);
  for (int64_t i = 0; i < n * n; i++) h[i] /= (double)rows;
  printf("| bits | method          | tune | seconds | SQNR dB | proxy loss  | Wscale/rms | rs   |\n");
  printf("|------|-----------------|------|---------|---------|-------------|------------|------|\n");
  for (int bits = 2; bits <= 4; bits++)
    for (int mode = 0; mode < 3; mode++) {
      glq_quant_opts o;
      glq_quant_opts_default(&o);
      o.bits = bits;
      o.name = "bench";
      o.feedback = mode < 2;
      o.scale_search = mode == 0;
      o.tune_iters = mode == 0 ? tune : 0;
      glq_quant_artifacts a;
      glq_quant_stats st;
      if (glq_quantize_linear(w, m, n, h, &o, &a, &st)) return fprintf(stderr, "quantize failed\n"), 1;
      printf("| %4d | %-15s | %4d | %7.2f | %7.3f | %11.5g | %10.2f | %4.2f |\n", bits,
             mode == 0 ? "LDLQ + search" : mode == 1 ? "LDLQ" : "nearest (RHT)", o.tune_iters, st.seconds, st.sqnr_db,
             st.proxy_loss, st.wscale_rel, st.resid_scale);
      fflush(stdout);
      glq_quant_artifacts_free(&a);
    }
  free(w), free(x), free(h);
  return 0;
}
