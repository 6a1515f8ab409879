/* rht.h - random Hadamard transforms (RHT) of weights, Hessians and activations.
 *
 * Convention (m x n weight W, dimensions padded with zeros to m_pad, n_pad = next multiple of 8;
 * Hm, Hn the orthonormal transforms of glq_hadamard_plan; SU (m_pad), SV (n_pad) signs +-1):
 *   forward    W̃ = Hm · diag(SU) · W_pad · diag(SV) · Hnᵀ            (m_pad x n_pad)
 *   inverse    W_pad = diag(SU) · Hmᵀ · W̃ · Hn · diag(SV), then crop to m x n
 *   Hessian    H̃ = Hn · diag(SV) · H_pad · diag(SV) · Hnᵀ,  so tr(ΔW H ΔWᵀ) = tr(ΔW̃ H̃ ΔW̃ᵀ)
 *   inference  y = W x = SU ⊙ Hmᵀ( W̃ · Hn(SV ⊙ pad(x)) ), cropped to m
 * For powers of two and Paley II sizes H is symmetric, which makes this glq 0.2.7's convention.
 *
 * Signs: key = SplitMix64 finaliser of (seed XOR FNV-1a-64 of name "\0" tag); a SplitMix64 stream
 * started at key gives words w_0, w_1, ...; sign i is -1 iff bit (i mod 64) of w_(i/64) is set.
 * tag is "SU" or "SV", so equal-shaped layers with different names get different signs.
 *
 * The *_kind variants take the Hadamard construction (hadamard.h) used for Hm and Hn; the plain
 * functions use GLQ_HADAMARD_DEFAULT. Padding to multiples of 8 is the same for every kind. */
#ifndef GLQ_RHT_H
#define GLQ_RHT_H
#include <stdint.h>
#include "hadamard.h"

/* next multiple of 8 (the padded size of a dimension) */
int64_t glq_rht_pad(int64_t d);
/* out[0..len) = +-1 from (seed, name, tag) as documented above (name NULL = "") */
void glq_rht_signs(uint64_t seed, const char *name, const char *tag, int64_t len, float *out);
/* The transforms below take the Hadamard kind of the layer (GLQ_HADAMARD_DEFAULT: ours, glq-hadamard-v1). */
/* wt (m_pad x n_pad) = forward transform of w (m x n) */
int glq_rht_weight(const float *w, int64_t m, int64_t n, const float *su, const float *sv, glq_hadamard_kind kind,
                   float *wt);
/* w (m x n) = inverse transform of wt (m_pad x n_pad): the single reconstruction used everywhere */
int glq_rht_weight_inverse(const float *wt, int64_t m, int64_t n, const float *su, const float *sv,
                           glq_hadamard_kind kind, float *w);
/* the inverse for a W̃ stored at any padded size (mp >= m, np >= n; e.g. glq 0.2.7's powers of two) */
int glq_rht_weight_inverse_stored(const float *wt, int64_t mp, int64_t np, int64_t m, int64_t n, const float *su,
                                  const float *sv, glq_hadamard_kind kind, float *w);
/* ht (n_pad x n_pad f32) = transform of (h + diag_add·I) padded with zeros, for h (n x n f64, NULL =
 * identity); the result is exactly symmetric */
int glq_rht_hessian(const double *h, int64_t n, double diag_add, const float *sv, glq_hadamard_kind kind, float *ht);
/* xt (rows x n_pad) = Hn(SV ⊙ pad(x)) for x (rows x n): the inference input transform */
int glq_rht_input(const float *x, int64_t rows, int64_t n, const float *sv, glq_hadamard_kind kind, float *xt);
/* y (rows x m) = crop(SU ⊙ Hmᵀ yt) for yt (rows x m_pad): the inference output transform */
int glq_rht_output(const float *yt, int64_t rows, int64_t m, const float *su, glq_hadamard_kind kind, float *y);

#endif
