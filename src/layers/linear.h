/* linear.h - the pluggable linear layer: y = x·Wᵀ (+ b) for x (B × in), y (B × out), f32 row-major.
 * Dense, E8-RHT quantized and HiF4 layers implement this; the forward pass sees only this. */
#ifndef GLQ_LINEAR_H
#define GLQ_LINEAR_H
#include <stdint.h>
#include <stddef.h>

typedef struct glq_linear glq_linear;

typedef struct glq_linear_vt {
  const char *kind;                                   /* "dense", "e8", "hif4" */
  /* y[B×out] = x[B×in]·Wᵀ + b; must not allocate per call beyond the layer's own scratch
   * (callers may run several layers concurrently only if each has its own scratch). */
  int (*forward)(glq_linear *l, const float *x, int64_t B, float *y);
  /* write the reconstructed f32 weight (out×in) into w; used by tests and dequantize */
  int (*dequantize)(const glq_linear *l, float *w);
  size_t (*stored_bytes)(const glq_linear *l);        /* bytes the weight occupies as stored */
  void (*destroy)(glq_linear *l);
} glq_linear_vt;

struct glq_linear {
  const glq_linear_vt *vt;
  int64_t in, out;
  const float *bias;   /* optional (out), owned by the implementation or borrowed */
};

static inline int glq_linear_forward(glq_linear *l, const float *x, int64_t B, float *y) {
  return l->vt->forward(l, x, B, y);
}
static inline void glq_linear_free(glq_linear *l) { if (l) l->vt->destroy(l); }

#endif
