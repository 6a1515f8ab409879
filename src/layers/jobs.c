/* jobs.c - the scheduler of jobs.h. */
#include "jobs.h"
#include "../core/error.h"
#include "../core/pool.h"
#include "../linalg/linalg.h"
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void job_run(glq_quant_job *j, const glq_ldlq_backend_source *src) {
  glq_ldlq_backend be;
  memset(&be, 0, sizeof be);
  j->rc = GLQ_OK;
  if (j->use_backend)
    j->rc = src ? src->take(&be) : glq_error(GLQ_EUNSUPPORTED, "quantize %s: no backend to run it on", j->o.name ? j->o.name : "");
  j->o.backend = be.ctx ? &be : NULL;
  if (!j->rc)
    j->rc = j->kind == GLQ_JOB_TRELLIS ? glq_trellis_quantize_linear(j->w, j->m, j->n, j->h, &j->o, &j->trellis, &j->st)
                                       : glq_quantize_linear(j->w, j->m, j->n, j->h, &j->o, &j->e8, &j->st);
  j->o.backend = NULL;
  if (be.ctx) src->give(&be);
  if (j->rc) snprintf(j->msg, sizeof j->msg, "%s", glq_errmsg());
}

typedef struct {
  glq_quant_job *jobs;
  const int *order;
  int n;
  const glq_ldlq_backend_source *src;
  atomic_int next; /* the next job in `order` to claim */
} batch;

/* One part per thread; each claims the next job until none is left (the pool's parts are fixed ranges,
 * which would pin the largest jobs to one thread). */
static void batch_range(void *vctx, int64_t i0, int64_t i1) {
  batch *c = vctx;
  for (int64_t p = i0; p < i1; p++)
    for (int k; (k = atomic_fetch_add(&c->next, 1)) < c->n;) job_run(&c->jobs[c->order[k]], c->src);
}

typedef struct {
  int64_t size; /* weights */
  int job;
} job_size;

static int by_size_desc(const void *a, const void *b) {
  const job_size *x = a, *y = b;
  return x->size != y->size ? (x->size < y->size ? 1 : -1) : x->job - y->job;
}

int glq_quantize_linears(glq_quant_job *jobs, int n, int threads, const glq_ldlq_backend_source *backends) {
  int side = threads > 1 && n > 1;
  for (int i = 0; i < n && side; i++)
    if (jobs[i].m * jobs[i].n > GLQ_JOBS_SIDE_BY_SIDE_MAX) side = 0;
  job_size *js = side ? malloc(sizeof *js * (size_t)n) : NULL;
  int *order = side ? malloc(sizeof *order * (size_t)n) : NULL;
  if (side && js && order) {
    for (int i = 0; i < n; i++) js[i] = (job_size){jobs[i].m * jobs[i].n, i};
    qsort(js, (size_t)n, sizeof *js, by_size_desc);
    for (int i = 0; i < n; i++) order[i] = js[i].job;
    batch c = {jobs, order, n, backends, 0};
    int blas = glq_blas_threads(1);
    glq_parallel_for(threads < n ? threads : n, 1, batch_range, &c);
    glq_blas_threads(blas);
  } else { /* (also when the two small arrays could not be had: the same results, one after another) */
    for (int i = 0; i < n; i++) job_run(&jobs[i], backends);
  }
  free(js);
  free(order);
  for (int i = 0; i < n; i++)
    if (jobs[i].rc) return i;
  return -1;
}

void glq_quant_job_free(glq_quant_job *j) {
  glq_quant_artifacts_free(&j->e8);
  glq_trellis_artifacts_free(&j->trellis);
}
