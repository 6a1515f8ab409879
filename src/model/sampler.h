/* sampler.h - next-token choice from a logit row: greedy (temperature 0: argmax, lowest index on
 * ties) or softmax(logits / temperature) restricted to the top_k most likely tokens and then to
 * the smallest prefix whose probability reaches top_p. Random numbers come from a SplitMix64
 * stream started at `seed` (one draw per sample; uniform = top 24 bits / 2^24), so a seed
 * replays the same tokens on any machine.
 *
 * Exactly: with top_k or top_p the candidates are ordered by logit (descending), equal logits by
 * id, else they keep id order; weights are w_i = exp((l_i - l_max) / T) in double. top_k keeps the first k. top_p keeps the shortest prefix
 * whose weight, summed in that order, reaches top_p * W, where W is the kept candidates' weight:
 * summed in order when top_k limits them, else summed by id (every candidate). The draw is
 * r = uniform * (kept weight) and the token the first whose running sum exceeds r. Only as much of
 * the order is built as these need (a selection for top_k, the high-weight candidates for top_p),
 * so sampling costs about one pass over the row.
 *
 * Before all this, two optional filters change the row (as llama.cpp and HF do): a repetition
 * penalty p divides the logit of every distinct token among the last repeat_last_n accepted ones
 * (glq_sampler_accept) by p when it is positive, multiplies it by p otherwise (greedy choice
 * included); min_p then drops (logit -inf) every token whose tempered weight w_i is below min_p,
 * i.e. whose probability is below min_p times the most likely token's. */
#ifndef GLQ_SAMPLER_H
#define GLQ_SAMPLER_H
#include <stdint.h>

typedef struct glq_sampler_config {
  float temperature;  /* <= 0: greedy */
  int top_k;          /* <= 0: no limit */
  float top_p;        /* >= 1 or <= 0: no limit */
  uint64_t seed;
  float min_p;          /* <= 0: off; else in (0, 1] */
  float repeat_penalty; /* <= 0 or 1: off */
  int repeat_last_n;    /* tokens the penalty looks back over (<= 0: 64) */
} glq_sampler_config;

typedef struct glq_sampler glq_sampler;

/* New sampler (validates the config). */
int glq_sampler_new(const glq_sampler_config *cfg, glq_sampler **out);
/* Free it (NULL is fine). */
void glq_sampler_free(glq_sampler *s);
/* Record a token (prompt or chosen) for the repetition penalty's window. */
int glq_sampler_accept(glq_sampler *s, int32_t token);
/* Choose a token from logits[0..n); fails on NaN logits. */
int glq_sampler_sample(glq_sampler *s, const float *logits, int n, int32_t *token);

#endif
