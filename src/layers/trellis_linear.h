/* trellis_linear.h - a linear layer quantized with a QTIP trellis code (trellis.h) inside RHT + LDLQ, stored in
 * glq 0.8.16's layout (quantization_config codebook "trellis", variant "3inst" | "hyb", trellis_layout "kernel").
 * In the convention of rht.h, with mp, np = m, n rounded up to multiples of 32 (the kernel layout's 2x2 tile
 * blocks; glq itself needs no padding: its layers are multiples of 32) and W padded with zeros:
 *   W̃ = Wscale · decode_layer(trellis_packed)    (mp x np, trellis.h)
 *   W = crop_{m x n}( diag(SU) · Hmᵀ · W̃ · Hn · diag(SV) ),   y = x·Wᵀ + b
 * Quantization is ldlq.c's (RHT, damping, block LDL, scale search, reverse sweep) through the codec seam (codec.h):
 * 16-column blocks whose 16x16 tiles get one tail-biting Viterbi each (trellis.h); the default Wscale is glq's
 * rule, rms(W̃) / (0.9 · rms of the code's values), and the search tries 0.95x and 1.05x of it. */
#ifndef GLQ_TRELLIS_LINEAR_H
#define GLQ_TRELLIS_LINEAR_H
#include <stdint.h>
#include "../core/tensor.h"
#include "linear.h"
#include "../quant/hadamard.h"
#include "../quant/ldlq.h"
#include "../quant/trellis.h"

typedef struct {
  glq_trellis_variant variant; /* GLQ_TRELLIS_3INST or GLQ_TRELLIS_HYB */
  int K;                       /* bits per weight, 2..4 */
  int64_t m, n;                /* original (unpadded) shape */
  glq_tensor packed;           /* i16 ((mp/16)·(np/16), 16K), kernel layout */
  glq_tensor su, sv;           /* f16 +-1, (mp) and (np) */
  glq_tensor wscale;           /* f32 0-dim */
  glq_tensor tlut;             /* f16 (512, 2), hyb only */
  glq_hadamard_kind transform;
} glq_trellis_artifacts;

/* m or n rounded up to a multiple of 32. */
int64_t glq_trellis_pad(int64_t d);
/* The LDLQ codec (codec.h) of a trellis code: 16-column blocks, 16x16 tiles, 256/V states per tile as codes, default
 * Wscale glq's rule; c must outlive out. */
void glq_trellis_codec(const glq_trellis_code *c, glq_codec *out);
/* Quantize w (m x n f32) with Hessian h (n x n f64, NULL = identity): o->bits is K (2..4); o->seed, damp, name,
 * input_name, transform, feedback, scale_search are used as in ldlq.h, backend only for its trellis_viterbi (tune_iters not);
 * the variant is 3inst. out is owned by the caller (glq_trellis_artifacts_free); stats may be NULL
 * (bpw counts every stored code bit and Wscale per real weight). */
int glq_trellis_quantize_linear(const float *w, int64_t m, int64_t n, const double *h, const glq_quant_opts *o,
                                glq_trellis_artifacts *out, glq_quant_stats *stats);
/* w (a->m x a->n f32) = the weight the artifacts encode; validates shapes and dtypes (errors name the field). */
int glq_trellis_dequantize_linear(const glq_trellis_artifacts *a, float *w);
/* wt (mp x np f32) = Wscale · decode_layer(packed): the rotated weight. */
int glq_trellis_decode_rotated(const glq_trellis_artifacts *a, float *wt);
/* Release the tensors (safe on a zeroed or partially filled struct). */
void glq_trellis_artifacts_free(glq_trellis_artifacts *a);

/* A glq_linear (kind "trellis") from the artifacts (copied) and bias (m entries or NULL, copied): the forward
 * decodes each 16x16 tile once per call and accumulates every output in a fixed order (any thread count
 * gives the same bytes). */
int glq_trellis_linear_new(const glq_trellis_artifacts *a, const float *bias, glq_linear **out);

/* What a kind "trellis" layer holds, pointing at the layer's own arrays (valid while it lives): for the GPU upload. */
typedef struct {
  glq_trellis_variant variant;
  int K;
  int64_t m, n, mp, np;       /* shape, padded shape (multiples of 32) */
  const uint16_t *words;      /* (mp/16)·(np/16) tiles of 16K words, natural layout (MSB first, trellis.h) */
  float wscale;
  const float *su, *sv, *bias; /* mp, np, m (or NULL) */
  glq_hadamard_kind transform;
} glq_trellis_linear_desc;
/* GLQ_EINVAL for a layer of another kind. */
int glq_trellis_linear_desc_of(const glq_linear *l, glq_trellis_linear_desc *d);

#endif
