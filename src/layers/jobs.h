/* jobs.h - many linear layers quantized in one call: E8/E8P (src/quant/ldlq.h) and trellis (trellis_linear.h)
 * layers side by side on the thread pool. Every job's result is byte-identical to one call of its quantizer
 * alone, whatever the thread count and whatever else is in the batch.
 * (Here, not in src/quant: the trellis quantizer is a layer of this directory, and quant stays below layers.) */
#ifndef GLQ_JOBS_H
#define GLQ_JOBS_H
#include <stdint.h>
#include "../quant/ldlq.h"
#include "trellis_linear.h"

typedef enum { GLQ_JOB_E8 = 0, GLQ_JOB_TRELLIS = 1 } glq_job_kind;

/* Where jobs that ask for a backend get one (e.g. a pool of GPU contexts: cuda/glq_cuda.h): take fills *be
 * for one job (status on failure), give returns it. */
typedef struct {
  int (*take)(glq_ldlq_backend *be);
  void (*give)(glq_ldlq_backend *be);
} glq_ldlq_backend_source;

typedef struct {
  /* in (borrowed until glq_quantize_linears returns) */
  glq_job_kind kind;
  const float *w;         /* m x n f32, row-major */
  int64_t m, n;
  const double *h;        /* n x n f64 or NULL (identity) */
  glq_quant_opts o;       /* o.backend is set by the scheduler (a taken backend, or NULL) */
  int use_backend;        /* quantize with a backend from the source (E8: the sweeps; trellis: the Viterbi) */
  /* out (free with glq_quant_job_free) */
  glq_quant_artifacts e8; /* GLQ_JOB_E8 */
  glq_trellis_artifacts trellis; /* GLQ_JOB_TRELLIS */
  glq_quant_stats st;
  int rc;                 /* status; msg holds its message (glq_errmsg is per thread) */
  char msg[512];
} glq_quant_job;

/* Layers up to this many weights run side by side, one per pool thread (their own loops then run serially);
 * a batch holding a larger one runs one job after another with every thread inside each. */
#define GLQ_JOBS_SIDE_BY_SIDE_MAX ((int64_t)1 << 22)

/* Quantize jobs[0..n): with threads > 1, n > 1 and every job small, side by side on at most `threads` pool
 * threads, largest first (OpenBLAS single-threaded meanwhile); else in order. backends may be NULL (a job
 * with use_backend then fails with GLQ_EUNSUPPORTED). Every job runs; returns the index of the first failed
 * one (its rc and msg say why), or -1. */
int glq_quantize_linears(glq_quant_job *jobs, int n, int threads, const glq_ldlq_backend_source *backends);

/* Release a job's results (safe on a zeroed or failed job). */
void glq_quant_job_free(glq_quant_job *j);

#endif
