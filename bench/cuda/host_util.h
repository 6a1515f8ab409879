/* host_util.h - what the host-side CUDA test and benchmark programs share (kernel_bench, linear_check,
 * linear_bench): exit with a message (status 2) on a failed CUDA call or allocation. Header-only. */
#ifndef GLQ_BENCH_CUDA_HOST_UTIL_H
#define GLQ_BENCH_CUDA_HOST_UTIL_H
#include <cuda_runtime_api.h>
#include <stdio.h>
#include <stdlib.h>

#define CK(x)                                                                              \
  do {                                                                                     \
    cudaError_t e_ = (x);                                                                  \
    if (e_ != cudaSuccess) {                                                               \
      fprintf(stderr, "%s:%d %s: %s\n", __FILE__, __LINE__, #x, cudaGetErrorString(e_));   \
      exit(2);                                                                             \
    }                                                                                      \
  } while (0)

static inline void *xmalloc(size_t n) {
  void *p = malloc(n ? n : 1); /* (C++ callers cast the result) */
  if (!p) {
    fprintf(stderr, "out of host memory (%zu bytes)\n", n);
    exit(2);
  }
  return p;
}

#endif
