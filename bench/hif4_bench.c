/* hif4_bench.c - HiF4 throughput at the current thread count (GLQ_THREADS, OPENBLAS_NUM_THREADS):
 *   hif4_bench quant [out in]    quantize / dequantize rows, values per second
 *   hif4_bench forward [out in]  fused linear forward at batch 1 and 64 vs OpenBLAS sgemv/sgemm on
 *                                the f32 weight
 * Prints markdown table rows; `make bench` (scripts/bench.sh) prints the tables for 1 and 2 threads. */
#include "layers/hif4_linear.h"
#include "core/pool.h"
#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

/* best wall time of reps runs of stmt, in seconds */
#define BEST(reps, stmt)                  \
  ({                                      \
    double best_ = 1e30;                  \
    for (int r_ = 0; r_ < (reps); r_++) { \
      double t0_ = now();                 \
      stmt;                               \
      double t_ = now() - t0_;            \
      if (t_ < best_) best_ = t_;         \
    }                                     \
    best_;                                \
  })

static int die(const char *what) {
  fprintf(stderr, "hif4_bench: %s: %s\n", what, glq_errmsg());
  return 1;
}

int main(int argc, char **argv) {
  const char *mode = argc > 1 ? argv[1] : "forward";
  int64_t out = argc > 3 ? atoll(argv[2]) : 4096, in = argc > 3 ? atoll(argv[3]) : 4096, sh[2] = {out, in};
  int th = glq_num_threads();
  glq_tensor w;
  if (glq_tensor_new(GLQ_F32, 2, sh, &w)) return die("alloc");
  float *wd = glq_tensor_data(&w);
  srand(1);
  for (int64_t i = 0; i < out * in; i++) wd[i] = (float)rand() / (float)RAND_MAX - 0.5f;
  if (!strcmp(mode, "quant")) {
    int64_t nu = out * glq_hif4_nblocks(in), bad;
    glq_hif4_buf b = {malloc((size_t)nu), malloc((size_t)nu), malloc((size_t)(2 * nu)), malloc((size_t)(32 * nu))};
    float *deq = malloc((size_t)(out * in) * sizeof(float));
    if (!b.e6m2 || !b.e1_8 || !b.e1_16 || !b.s1p2 || !deq) return die("alloc");
    double tq = BEST(3, glq_hif4_encode(wd, GLQ_F32, out, in, in, 0, &b, &bad));
    double td = BEST(3, glq_hif4_decode(&b, out, in, deq, in));
    printf("| quantize | %d | %.3g |\n| dequantize | %d | %.3g |\n", th, (double)(out * in) / tq, th,
           (double)(out * in) / td);
    free(b.e6m2), free(b.e1_8), free(b.e1_16), free(b.s1p2), free(deq);
    glq_tensor_release(&w);
    return 0;
  }
  glq_hif4_fields f;
  glq_tensor signs = {0};
  glq_hif4_wopts o = {0};
  glq_hif4_wstats st;
  glq_linear *l;
  if (glq_hif4_quantize_weight(&w, &o, &f, &signs, &st)) return die("quantize");
  if (glq_hif4_linear_new(&f, NULL, NULL, GLQ_HIF4_KERNEL_AUTO, &l)) return die("linear");
  float *x = malloc((size_t)(64 * in) * sizeof(float)), *y = malloc((size_t)(64 * out) * sizeof(float));
  if (!x || !y) return die("alloc");
  for (int64_t i = 0; i < 64 * in; i++) x[i] = (float)rand() / (float)RAND_MAX - 0.5f;
  for (int B = 1; B <= 64; B *= 64) {
    int reps = B == 1 ? 50 : 5;
    double th4 = BEST(reps, glq_linear_forward(l, x, B, y));
    double tb = B == 1 ? BEST(reps, cblas_sgemv(CblasRowMajor, CblasNoTrans, (int)out, (int)in, 1.0f, wd, (int)in, x, 1,
                                                0.0f, y, 1))
                       : BEST(reps, cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, B, (int)out, (int)in, 1.0f, x,
                                                (int)in, wd, (int)in, 0.0f, y, (int)out));
    printf("| %d | %d/%d | %.3f | %.3f | %.2fx |\n", B, th, openblas_get_num_threads(), 1e3 * th4, 1e3 * tb, tb / th4);
  }
  glq_linear_free(l);
  glq_hif4_fields_release(&f);
  glq_tensor_release(&w);
  free(x), free(y);
  return 0;
}
