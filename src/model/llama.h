/* llama.h - the Llama-family forward pass on the CPU (Llama 2/3, SmolLM, Qwen3 with qk_norm).
 * A model is a config plus borrowed weights: norms are copied (small), the embedding table is
 * held by reference, and the linears are glq_linear pointers owned by the caller unless the
 * model was created with owns_linears. Activations are f32, rows are (sequence, position).
 * The forward is exposed in pieces (embed, layer, head) so calibration can run one layer at a
 * time and capture the Hessians of each distinct linear input. Not reentrant: one call at a time
 * per model (it keeps its scratch). */
#ifndef GLQ_LLAMA_H
#define GLQ_LLAMA_H
#include "../layers/linear.h"
#include "kvcache.h"
#include "../core/tensor.h"

typedef enum { GLQ_ROPE_INTERLEAVED, GLQ_ROPE_HALF } glq_rope_layout; /* pairs (2i,2i+1) | (i,i+d/2) */
typedef enum { GLQ_ROPE_SCALE_NONE, GLQ_ROPE_SCALE_LLAMA3 } glq_rope_scaling;

typedef struct glq_llama_config {
  int dim, n_layers, n_heads, n_kv_heads, head_dim, ffn_dim, vocab, max_seq;
  float norm_eps, rope_theta;
  glq_rope_layout rope_layout;
  glq_rope_scaling rope_scaling;   /* llama3: factor, low/high_freq_factor, original_max_pos */
  float rope_factor, rope_low_freq_factor, rope_high_freq_factor;
  int rope_original_max_pos;
  int qk_norm;                     /* RMSNorm over head_dim on each q and k head before RoPE */
  int tied;                        /* with no head set, the head is a dense linear over the embedding */
} glq_llama_config;

typedef struct glq_llama_layer_weights {
  const glq_tensor *attn_norm, *ffn_norm;  /* (dim) */
  const glq_tensor *q_norm, *k_norm;       /* (head_dim), only with qk_norm */
  glq_linear *q, *k, *v, *o, *gate, *up, *down;
} glq_llama_layer_weights;

/* The four distinct linear inputs of a layer. */
enum { GLQ_CAP_QKV, GLQ_CAP_O, GLQ_CAP_GATE_UP, GLQ_CAP_DOWN, GLQ_CAP_N };

/* H[i] += xᵀx in double over every row fed to input i; rows[i] counts them. H[i] is caller-owned,
 * d×d row-major (d from glq_llama_capture_dim) and starts zeroed; NULL skips that input. */
typedef struct glq_llama_capture {
  double *H[GLQ_CAP_N];
  int64_t rows[GLQ_CAP_N];
} glq_llama_capture;

typedef struct glq_llama glq_llama;

/* New model without weights; owns_linears: glq_llama_free (and replacement) frees the linears. */
int glq_llama_new(const glq_llama_config *cfg, int owns_linears, glq_llama **out);
/* Free the model (and its linears if it owns them); NULL is fine. */
void glq_llama_free(glq_llama *m);
/* The configuration. */
const glq_llama_config *glq_llama_config_of(const glq_llama *m);
/* Token embedding (vocab × dim): f32/bf16 held by reference, other float dtypes copied to f32. */
int glq_llama_set_embedding(glq_llama *m, const glq_tensor *emb);
/* Final RMSNorm weight (dim). */
int glq_llama_set_final_norm(glq_llama *m, const glq_tensor *w);
/* A tied model whose f32 embedding came from a GGUF Q8_0 tensor: blocks = that tensor's raw bytes
 * (vocab × dim/32 blocks of 34 bytes, held by reference). Every block is checked to dequantize to
 * the embedding. Head calls of up to 4 rows (decode) then read the 3.8× smaller blocks, with
 * logits bit-identical to the f32 head's; a new embedding or head drops them. */
int glq_llama_set_head_q8_0(glq_llama *m, const glq_tensor *blocks);
/* Output head (dim → vocab); NULL returns a tied model to the embedding-backed head. */
int glq_llama_set_head(glq_llama *m, glq_linear *head);
/* Set every weight of layer l (shapes are checked). */
int glq_llama_set_layer(glq_llama *m, int l, const glq_llama_layer_weights *w);
/* The output head in use (NULL until set or tied). */
glq_linear *glq_llama_head_linear(const glq_llama *m);
/* Width d of capture input `which` (GLQ_CAP_*), or -1. */
int64_t glq_llama_capture_dim(const glq_llama *m, int which);

/* hidden (n × dim) = embedding rows of tokens. */
int glq_llama_embed(glq_llama *m, const int32_t *tokens, int64_t n, float *hidden);
/* One decoder layer in place on hidden (B × T × dim) at positions pos0.. (causal within each
 * sequence). With a cache, pos0 must equal its length and attention also sees the cached
 * positions; this layer's keys/values are written but the caller commits them with
 * glq_kvcache_advance after the last layer. cap may be NULL. */
int glq_llama_layer(glq_llama *m, int l, float *hidden, int B, int T, int pos0, glq_kvcache *cache,
                    glq_llama_capture *cap);
/* logits (n × vocab) = head(final_norm(hidden)). */
int glq_llama_head(glq_llama *m, const float *hidden, int64_t n, float *logits);
/* Full forward of tokens (B × T) after the cache's positions (or from 0 without a cache);
 * logits: B × vocab for each sequence's last position, or B × T × vocab with all_logits. */
int glq_llama_forward(glq_llama *m, glq_kvcache *cache, const int32_t *tokens, int B, int T,
                      float *logits, int all_logits);

/* Read-only view of what a model holds, for backends that copy it (cuda/llama.cu). */
typedef struct glq_llama_view {
  const float *attn_norm, *ffn_norm, *q_norm, *k_norm;   /* layer's norms (q/k only with qk_norm) */
  glq_linear *q, *k, *v, *o, *gate, *up, *down;           /* NULL until the layer is set */
} glq_llama_view;
/* The weights of layer l (GLQ_EINVAL when l is out of range or the layer is not set). */
int glq_llama_layer_view(const glq_llama *m, int l, glq_llama_view *out);
/* The token embedding (NULL until set), the final norm (NULL until set), and the RoPE tables
 * (max_seq × head_dim/2 floats each, the angles the CPU forward uses). */
const glq_tensor *glq_llama_embedding(const glq_llama *m);
const float *glq_llama_final_norm(const glq_llama *m);
void glq_llama_rope_tables(const glq_llama *m, const float **cos_out, const float **sin_out);

#endif
