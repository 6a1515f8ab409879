/* hif4_bench.c - HiF4 throughput: quantize/dequantize (values/s, 1 and 2 threads) and the fused
 * linear forward at batch 1 and 64 against OpenBLAS sgemv/sgemm on the f32 weight.
 * Build and run: bash bench/hif4_bench.sh [out in]   (default 4096 4096)
 * The OpenBLAS baselines run with as many threads as the HiF4 kernels. */
#include "quant/hif4_linear.h"
#include "core/pool.h"
#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

/* best of reps wall times of fn, in seconds */
#define BEST(reps, stmt)                                    \
  ({                                                        \
    double best_ = 1e30;                                    \
    for (int r_ = 0; r_ < (reps); r_++) {                   \
      double t0_ = now();                                   \
      stmt;                                                 \
      double t_ = now() - t0_;                              \
      if (t_ < best_) best_ = t_;                           \
    }                                                       \
    best_;                                                  \
  })

static int die(const char *what) {
  fprintf(stderr, "%s: %s\n", what, glq_errmsg());
  return 1;
}

int main(int argc, char **argv) {
  int64_t out = argc > 2 ? atoll(argv[1]) : 4096, in = argc > 2 ? atoll(argv[2]) : 4096, sh[2] = {out, in};
  glq_tensor w;
  if (glq_tensor_new(GLQ_F32, 2, sh, &w)) return die("alloc");
  float *wd = glq_tensor_data(&w);
  srand(1);
  for (int64_t i = 0; i < out * in; i++) wd[i] = (float)rand() / (float)RAND_MAX - 0.5f;
  int64_t nb = glq_hif4_nblocks(in), nu = out * nb;
  glq_hif4_buf b = {malloc((size_t)nu), malloc((size_t)nu), malloc((size_t)(2 * nu)), malloc((size_t)(32 * nu))};
  float *deq = malloc((size_t)(out * in) * sizeof(float));
  int64_t bad;
  printf("HiF4 bench, weight %lld x %lld\n\n| op | threads | values/s |\n|---|---|---|\n", (long long)out, (long long)in);
  for (int th = 1; th <= 2; th++) {
    glq_set_num_threads(th);
    double tq = BEST(3, glq_hif4_encode(wd, GLQ_F32, out, in, in, 0, &b, &bad));
    double td = BEST(3, glq_hif4_decode(&b, out, in, deq, in));
    printf("| quantize | %d | %.3g |\n| dequantize | %d | %.3g |\n", th, (double)(out * in) / tq, th,
           (double)(out * in) / td);
  }
  glq_hif4_fields f;
  glq_tensor signs = {0};
  glq_hif4_wopts o = {0};
  glq_hif4_wstats st;
  glq_linear *l;
  if (glq_hif4_quantize_weight(&w, &o, &f, &signs, &st)) return die("quantize");
  if (glq_hif4_linear_new(&f, NULL, NULL, GLQ_HIF4_KERNEL_AUTO, &l)) return die("linear");
  printf("\n| forward | batch | threads | hif4 ms | openblas f32 ms | speed-up |\n|---|---|---|---|---|---|\n");
  int64_t Bs[2] = {1, 64};
  float *x = malloc((size_t)(64 * in) * sizeof(float)), *y = malloc((size_t)(64 * out) * sizeof(float));
  for (int64_t i = 0; i < 64 * in; i++) x[i] = (float)rand() / (float)RAND_MAX - 0.5f;
  for (int th = 1; th <= 2; th++) {
    glq_set_num_threads(th);
    openblas_set_num_threads(th);
    for (int i = 0; i < 2; i++) {
      int B = (int)Bs[i], reps = B == 1 ? 20 : 5;
      double th4 = BEST(reps, glq_linear_forward(l, x, B, y));
      double tb = B == 1 ? BEST(reps, cblas_sgemv(CblasRowMajor, CblasNoTrans, (int)out, (int)in, 1.0f, wd, (int)in, x, 1,
                                                  0.0f, y, 1))
                         : BEST(reps, cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, B, (int)out, (int)in, 1.0f, x,
                                                  (int)in, wd, (int)in, 0.0f, y, (int)out));
      printf("| %s | %d | %d | %.3f | %.3f | %.2fx |\n", B == 1 ? "gemv" : "gemm", B, th, 1e3 * th4, 1e3 * tb, tb / th4);
    }
  }
  glq_linear_free(l);
  glq_hif4_fields_release(&f);
  glq_tensor_release(&w);
  free(b.e6m2), free(b.e1_8), free(b.e1_16), free(b.s1p2), free(deq), free(x), free(y);
  return 0;
}
