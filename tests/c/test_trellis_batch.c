/* test_trellis_batch.c - glq_trellis_quantize_block through a batched Viterbi hook (the path the GPU search
 * takes, trellis.h's viterbi_batch) gives the CPU path's states and reconstruction byte for byte. The hook
 * here runs glq_trellis_viterbi per sequence, so this checks the batching (permutation, rotation by half,
 * overlap extraction, constrained pass, decode) and not the GPU; bench/cuda/trellis_check.c checks that
 * the GPU's search equals glq_trellis_viterbi. Run from the repository root: build/tests/test_trellis_batch. */
#include "core/error.h"
#include "quant/trellis.h"
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int calls;

static int cpu_batch(void *ctx, const glq_trellis_code *c, const float *x, int64_t n, int T, const int32_t *overlap,
                     int32_t *states) {
  (void)ctx;
  calls++;
  const int steps = T / c->V;
  uint16_t st[GLQ_TRELLIS_TILE];
  for (int64_t i = 0; i < n; i++) {
    const int32_t ov = overlap ? overlap[i] : -1;
    int rc = glq_trellis_viterbi(c, x + i * T, steps, ov, ov, st, NULL);
    if (rc) return rc;
    for (int k = 0; k < steps; k++) states[i * steps + k] = st[k];
  }
  return 0;
}

int main(void) {
  int fails = 0;
  uint64_t s = 12345;
  const int64_t rows = 64, ld = 20; /* 4 tiles, a row stride wider than the block */
  float *t = malloc(sizeof(float) * rows * ld), *q1 = malloc(sizeof(float) * rows * 16), *q2 = malloc(sizeof(float) * rows * 16);
  uint16_t *s1 = malloc(sizeof(uint16_t) * 4 * 256), *s2 = malloc(sizeof(uint16_t) * 4 * 256);
  for (int64_t i = 0; i < rows * ld; i++) {
    s = s * 6364136223846793005ull + 1442695040888963407ull;
    t[i] = (float)((double)(s >> 11) * 0x1p-53 * 2.0 - 1.0) * 1.7f;
  }
  for (int variant = 0; variant < 2; variant++)
    for (int K = 2; K <= (variant ? 2 : 4); K++) {
      glq_trellis_code c;
      float tlut[GLQ_TRELLIS_HYB_TLUT * 2];
      for (int i = 0; i < GLQ_TRELLIS_HYB_TLUT * 2; i++) tlut[i] = sinf((float)i * 0.37f);
      if (variant ? glq_trellis_code_hyb(&c, K, tlut) : glq_trellis_code_3inst(&c, K)) {
        printf("FAIL code: %s\n", glq_errmsg());
        return 1;
      }
      const int steps = 256 / c.V;
      memset(q1, 0, sizeof(float) * rows * 16), memset(q2, 0xFF, sizeof(float) * rows * 16);
      int rc1 = glq_trellis_quantize_block(&c, t, rows, ld, q1, 16, s1);
      c.viterbi_batch = cpu_batch;
      calls = 0;
      int rc2 = glq_trellis_quantize_block(&c, t, rows, ld, q2, 16, s2);
      const int ok = !rc1 && !rc2 && calls == 2 && !memcmp(s1, s2, sizeof(uint16_t) * 4 * steps) &&
                     !memcmp(q1, q2, sizeof(float) * rows * 16);
      printf("%s %s K=%d: batched path %s the per-tile path (%d hook calls)\n", ok ? "ok  " : "FAIL",
             variant ? "hyb" : "3inst", K, ok ? "equals" : "differs from", calls);
      fails += !ok;
      glq_trellis_code_free(&c);
    }
  free(t), free(q1), free(q2), free(s1), free(s2);
  return fails ? 1 : 0;
}
