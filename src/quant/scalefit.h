/* scalefit.h - closed-form refit of a quantized layer's diagonal scales.
 * A layer W ≈ diag(SU)·Hmᵀ·W̃·Hn·diag(SV) keeps its codes W̃ while SU (per output row) and SV (per input
 * column) are free reals: multiplying them by s and u turns the decoded Q into diag(s)·Q·diag(u). This
 * picks s and u that minimise the proxy loss tr((W - diag(s)Q diag(u)) H (W - ...)ᵀ), alternating the
 * two exact sub-problems: rows s_i = <W_i, Q_i>_H / <Q_i, Q_i>_H, columns the n x n system
 * (H ∘ QᵀQ) u = diag(H·Wᵀ·Q) (Cholesky, lightly damped). The loss never increases: a step that would
 * raise it (round-off on a near-singular system) is not taken. Deterministic: every sum runs in a
 * fixed order (GEMMs through linalg/, whose OpenBLAS split never crosses the inner dimension). */
#ifndef GLQ_SCALEFIT_H
#define GLQ_SCALEFIT_H
#include <stdint.h>

/* w, q: (m x n) f32 row-major, the original and the decoded weight; h: (n x n) f64 Hessian, or NULL
 * for the identity (plain Frobenius loss), damped as LDLQ damps it: damp * mean(diag h) is added to its
 * diagonal (damp >= 0; with few calibration tokens an undamped H lets the n column scales fit its
 * noise). The losses reported are on the damped H. iters >= 1 alternations (column step, then row step;
 * the column step is skipped when n > max_cols, 0 = never skipped). Writes s (m) and u (n) and the
 * losses before/after (either pointer may be NULL). GLQ_EINVAL on bad sizes, GLQ_ENOMEM. */
int glq_fit_scales(const float *w, const float *q, int64_t m, int64_t n, const double *h, double damp, int iters,
                   int64_t max_cols, float *s, float *u, double *loss0, double *loss1);

#endif
