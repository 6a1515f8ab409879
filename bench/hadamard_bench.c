/* hadamard_bench.c - the CPU Hadamard transform (src/quant/hadamard.h, our default plans) per row at the sizes a
 * decode step transforms: SmolLM2's 576 (H36 (x) FWHT 16) and 1536 (H12 (x) FWHT 128), Llama's 4096 and 14336 (H28 (x)
 * FWHT 512). One thread, 256 rows a call, best of 200 calls (CLOCK_THREAD_CPUTIME), forward and transposed alternating.
 * Build and run: make bench (or the cc line of scripts/bench.sh, then build/bench/hadamard_bench). */
#include "core/pool.h"
#include "quant/hadamard.h"
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
  return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

int main(void) {
  glq_set_num_threads(1);
  const int ns[] = {576, 1536, 4096, 14336}, rows = 256;
  printf("| n | us a row (one thread) |\n|---|---|\n");
  for (int k = 0; k < 4; k++) {
    const int n = ns[k];
    float *x = malloc(sizeof(float) * (size_t)n * rows);
    if (!x) return 1;
    for (int i = 0; i < n * rows; i++) x[i] = (float)rand() / (float)RAND_MAX - 0.5f;
    double best = 1e30;
    for (int r = 0; r < 200; r++) {
      const double t0 = now();
      if (glq_hadamard_transform(x, rows, n, GLQ_HADAMARD_DEFAULT, r & 1)) return 1;
      const double t = now() - t0;
      if (t < best) best = t;
    }
    printf("| %d | %.2f |\n", n, best * 1e6 / rows);
    free(x);
  }
  return 0;
}
