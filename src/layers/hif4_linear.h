/* hif4_linear.h - HiF4 linear layers: the fused forward (glq_linear "hif4") and the weight
 * quantizers behind it: plain rounding, randomized Hadamard rotation of the input dimension (RHT)
 * and LDLQ/GPTQ error feedback with a calibration Hessian. docs/hif4.md has the details. */
#ifndef GLQ_HIF4_LINEAR_H
#define GLQ_HIF4_LINEAR_H
#include "../quant/hif4.h"
#include "linear.h"

/* forward kernels */
enum { GLQ_HIF4_KERNEL_AUTO = 0, GLQ_HIF4_KERNEL_PORTABLE = 1 };

/* New HiF4 layer from packed fields of a 2-D weight (out × in); the bytes are copied.
 * bias: NULL or a float tensor of out elements (copied). signs: NULL, or glq_rht_pad(in) values
 * of +-1 (any numeric dtype): the rows were rotated as in rht.h (units cover the padded rows) and
 * the layer feeds Hn(signs ⊙ pad(x)) to them.
 * kernel: GLQ_HIF4_KERNEL_AUTO (AVX2 when available and GLQ_NO_AVX2 is not 1) or _PORTABLE. */
int glq_hif4_linear_new(const glq_hif4_fields *w, const glq_tensor *bias, const glq_tensor *signs,
                        int kernel, glq_linear **out);

/* An existing layer (vt->kind "hif4") as another implementation (the CUDA layer) needs it. */
typedef struct glq_hif4_linear_desc {
  int64_t out, in, nb;   /* nb = ceil(in/64) units per row */
  const float *bias;     /* out values or NULL (borrowed, valid while the layer lives) */
  const float *signs;    /* glq_rht_pad(in) values of +-1: the input is Hn(signs ⊙ pad(x)); or NULL */
} glq_hif4_linear_desc;
int glq_hif4_linear_desc_of(const glq_linear *l, glq_hif4_linear_desc *d);
/* The layer's weights as the packed fields of out*nb units, written to the caller's buffers
 * (out*nb, out*nb, 2*out*nb and 32*out*nb bytes). A "-0" code comes back as +0 (the same value). */
int glq_hif4_linear_fields_of(const glq_linear *l, const glq_hif4_buf *b);

typedef struct glq_hif4_wopts {
  int rht;                 /* rotate the input dimension first (rht.h, SV only) */
  uint64_t seed;           /* RHT signs: glq_rht_signs(seed, name, "SV", glq_rht_pad(in)) */
  const char *name;        /* layer name for the signs (NULL = "") */
  const glq_tensor *hessian; /* NULL: plain rounding; else in × in float tensor: LDLQ */
  double damp;             /* LDLQ relative damping (fraction of the mean diagonal); <= 0: 0.01 */
} glq_hif4_wopts;

typedef struct glq_hif4_wstats {
  double damp;             /* damping actually used (relative), 0 without a Hessian */
  int64_t dead;            /* Hessian columns with zero diagonal (their weights were zeroed) */
  double bits_per_weight;  /* storage incl. scales and signs, per original weight */
} glq_hif4_wstats;

/* Quantize a 2-D weight w (out × in, float dtype) as o says. out receives packed fields of shape
 * (out, in); signs (f32, glq_rht_pad(in)) is filled when o->rht, else left empty. Deterministic. */
int glq_hif4_quantize_weight(const glq_tensor *w, const glq_hif4_wopts *o, glq_hif4_fields *out,
                             glq_tensor *signs, glq_hif4_wstats *stats);

/* tr(D H Dᵀ) for D = a - b (out × n, f32) and H (n × n, float tensor); in double. */
int glq_hif4_proxy_loss(const glq_tensor *a, const glq_tensor *b, const glq_tensor *h, double *loss);

#endif
