/* ldlq.h - E8 + RHT quantization of one linear layer with LDLQ error feedback (docs/hadamard.md;
 * ../shared/docs/glq-spec.md §3).
 *
 * Pipeline: damp #1 on H (original domain) -> RHT of W and H (rht.h, pads to multiples of 8) ->
 * damp #2 with a fallback ladder -> block LDL (b = 8) -> optional search of Wscale and the residual
 * scale on a row sample -> reverse LDLQ sweep (BLAS-3 lazy updates in groups of 128 columns) ->
 * optional block-coordinate refinement passes -> artifacts named and typed as glq's.
 * Output bytes depend only on the inputs and options, not on the thread count. */
#ifndef GLQ_LDLQ_H
#define GLQ_LDLQ_H
#include <stdint.h>
#include "../core/tensor.h"
#include "hadamard.h"

struct glq_trellis_code; /* trellis.h */
#include "codec.h"

/* One LDLQ sweep handed to another implementation (the GPU's: cuda/ldlq.cu). It must return what the
 * CPU sweep returns for the same arguments: exact nearest codewords (lowest index on ties) and the same
 * f32 operations per row; only the summation order of the group updates (a GEMM) may differ. */
typedef struct glq_sweep_args {
  int64_t rows, n;      /* n: multiple of 8 */
  const float *wr;      /* rows x n, row-major: the rotated weight in codebook units */
  int size2;            /* second-stage codebook: 0 (2 bits), 256 (3 bits) or 65536 (4 bits) */
  float rs, inv_rs;     /* residual scale and its f32 inverse (stage 2) */
  int feedback;         /* 0: nearest rounding, no error feedback */
  float *r;             /* out, rows x n: wr - Q */
  int32_t *idx1, *idx2; /* out, rows x n/8 (may be NULL; idx2 only with size2) */
  double *loss;         /* out (may be NULL): sum over rows of sum_k F_k D_k F_kᵀ, rows added in order */
} glq_sweep_args;

typedef struct glq_ldlq_backend {
  void *ctx;
  /* the block LDL of the damped Hessian (l: n x n row-major unit lower, d: n/8 8x8 blocks) that the
   * following sweeps use; called once per layer before its first sweep */
  int (*set_factor)(void *ctx, int64_t n, const float *l, const float *d);
  int (*sweep)(void *ctx, const glq_sweep_args *a);
  /* optional (may be NULL): *out = <dwᵀ·dw, h> for dw (rows x n) and h (n x n), both f32 row-major, the
   * statistics' proxy loss; used for n >= GLQ_BACKEND_PROXY_MIN_N only (below that the CPU's sum is cheap
   * and keeps the statistics bit-equal to the CPU's); may differ from the CPU's in the last bits */
  int (*proxy_sum)(void *ctx, const float *dw, int64_t rows, int64_t n, const float *h, double *out);
  /* optional (may be NULL): the trellis codec's Viterbi of many tiles at once (trellis.h's
   * glq_trellis_viterbi_fn; the GPU's returns the CPU's states exactly) */
  int (*trellis_viterbi)(void *ctx, const struct glq_trellis_code *c, const float *x, int64_t n, int T,
                         const int32_t *overlap, int32_t *states);
} glq_ldlq_backend;

#define GLQ_BACKEND_PROXY_MIN_N 1024

typedef struct {
  int bits;            /* 2 (65536), 3 (65536 + 256) or 4 (65536 + 65536) */
  int codebook;        /* GLQ_CODEBOOK_E8 (the shell book, default) or GLQ_CODEBOOK_E8P (stage 2: E81B at
                        * 3 bits, E8P at 4; codec.h) */
  const glq_codec *codec; /* NULL: the builtin codec of codebook/bits; else this codec (any block shape;
                           * artifacts keep its codes in `codes`, no scale search of a residual scale) */
  int tune_iters;      /* block-coordinate refinement passes after the sweep (0) */
  uint64_t seed;       /* RHT sign seed (42) */
  double damp;         /* relative damping, times mean diag H (0.01) */
  const char *name;    /* layer name: seeds SU, names errors (NULL = "") */
  const char *input_name; /* seeds SV (NULL = name); layers reading one input (q/k/v, gate/up) may share
                           * it so that inference transforms that input once */
  int scale_search;    /* search Wscale and the residual scale on the proxy loss (1) */
  int feedback;        /* 1: LDLQ; 0: nearest rounding of the rotated weights (a baseline; no search) */
  double resid_scale;  /* 0: fitted default for the codebook pair (3 bits 2.0, 4 bits 3.5) */
  glq_hadamard_kind transform; /* Hm, Hn of the RHT (GLQ_HADAMARD_DEFAULT = "glq-hadamard-v1";
                                * GLQ_HADAMARD_GLQ_BLOCKDIAG = glq >= 0.2.9's "block-diagonal") */
  const glq_ldlq_backend *backend; /* NULL: sweeps on the CPU; else every sweep (scale search, final)
                                    * runs there for the E8 shell codebook (others sweep on the CPU);
                                    * the refinement passes stay on the CPU */
} glq_quant_opts;

typedef struct {
  double sqnr_db;         /* 10 log10(|W|² / |W - Ŵ|²), original domain */
  double proxy_loss;      /* mean over the m_pad rows of diag(ΔW̃ H̃₁ ΔW̃ᵀ), H̃₁ with damp #1 only */
  double proxy_loss_orig; /* mean over the m rows of diag(ΔW H₁ ΔWᵀ) in the original domain */
  double bpw;             /* stored index + scale bits per real weight (padding counted) */
  double seconds;
  double seconds_prepare; /* of which: RHT of W and H, damping and the block LDL */
  double seconds_search;  /*   the Wscale / residual-scale search */
  double seconds_sweep;   /*   the final sweep and the refinement passes */
  double seconds_stats;   /*   these statistics */
  double damp_used;       /* relative damping of the factorised Hessian (0 with the identity fallback) */
  int fallback;           /* 0 = first try; 1, 2 = more damping (x10, x100); 3 = identity Hessian */
  double wscale_rel;      /* chosen Wscale / rms(W̃) */
  double resid_scale;     /* chosen residual scale (0 for 2 bits) */
} glq_quant_stats;

typedef struct {
  int bits;
  int codebook;                      /* GLQ_CODEBOOK_E8 (zero), _E8P, or _CUSTOM (codec and codes) */
  int64_t m, n;                      /* original (unpadded) shape */
  glq_tensor qidxs, qidxs2;          /* i16 (m_pad, n_pad/8), uint16 bit patterns; qidxs2 only for 3/4 bits
                                      * (E8P at 3 bits: E81B indices < 256) */
  glq_tensor codes;                  /* custom codec only: i32 (m_pad/rows, n_pad/cols, ncodes) */
  const glq_codec *codec;            /* custom codec only (decodes codes; must outlive the artifacts) */
  glq_tensor su, sv;                 /* f16 +-1, (m_pad) and (n_pad) */
  glq_tensor wscale, inv_resid_scale; /* f32 0-dim; inv_resid_scale only for 3/4 bits */
  glq_hadamard_kind transform;       /* the RHT's Hadamard kind (dequantize uses it; zero = default) */
} glq_quant_artifacts;

/* Defaults listed above (bits 2). */
void glq_quant_opts_default(glq_quant_opts *o);
/* Quantize w (m x n f32) with Hessian h (n x n f64, NULL = identity) into out (owned by the caller:
 * free with glq_quant_artifacts_free); stats may be NULL. h is not modified. */
int glq_quantize_linear(const float *w, int64_t m, int64_t n, const double *h, const glq_quant_opts *o,
                        glq_quant_artifacts *out, glq_quant_stats *stats);
/* w (a->m x a->n f32) = the weight the artifacts encode; validates shapes and dtypes. */
int glq_dequantize_linear(const glq_quant_artifacts *a, float *w);
/* wt (m_pad x n_pad f32) = Wscale·(C[Qidxs] + inv_resid_scale·C₂[Qidxs2]) (or Wscale·the custom codec's
 * decode of codes), the rotated weight. */
int glq_quant_decode_rotated(const glq_quant_artifacts *a, float *wt);
/* Release the tensors (safe on a zeroed or partially filled struct). */
void glq_quant_artifacts_free(glq_quant_artifacts *a);

#endif
