/* evalops.h - per-row statistics of logits for perplexity and KL evaluation, computed in double
 * with a max-shifted log-sum-exp, parallel over rows (deterministic). */
#ifndef GLQ_EVALOPS_H
#define GLQ_EVALOPS_H
#include <stdint.h>

/* nll[i] = logsumexp(logits_i) - logits_i[target_i] for n rows of `vocab` logits. */
int glq_nll_rows(const float *logits, int64_t n, int64_t vocab, const int32_t *targets, double *nll);
/* kl[i] = KL(softmax(p_i) || softmax(q_i)) (p: reference/base, q: candidate); agree[i] = 1 when
 * the argmax (lowest index on ties) of both rows is the same. */
int glq_kl_rows(const float *p, const float *q, int64_t n, int64_t vocab, double *kl, uint8_t *agree);

#endif
