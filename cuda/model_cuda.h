/* model_cuda.h - the Llama forward on the GPU: device tensors, a model copied from a CPU glq_llama
 * (layer by layer, so a streaming quantizer can keep one decoder layer on the device), an f32 KV
 * cache, and Hessian capture in fp64 with cuBLAS. Activations are f32 as on the CPU; linears are
 * glq_cuda_linear (dense f32 by default, E8 and HiF4 through their fused kernels).
 * Plain C interface; every function returns a glq_status and sets the error message. Not
 * reentrant: one call at a time per model. Deterministic: no floating-point atomics. */
#ifndef GLQ_MODEL_CUDA_H
#define GLQ_MODEL_CUDA_H
#include <stddef.h>
#include <stdint.h>
#include "glq_cuda.h"

#ifdef __cplusplus
extern "C" {
#endif
#include "../src/core/tensor.h"

struct glq_llama;
struct glq_model_backend;

/* ---- device memory ---- */
/* A zero-filled contiguous tensor in GPU memory: storage of kind GLQ_STORAGE_CUDA whose free_fn
 * releases the memory when the last view goes (what device activations and logits are). */
int glq_cuda_tensor_new(glq_dtype dt, int ndim, const int64_t *shape, glq_tensor *out);
int glq_cuda_copy_to_device(void *dst, const void *src, size_t bytes);
int glq_cuda_copy_to_host(void *dst, const void *src, size_t bytes);

/* ---- model ---- */
typedef struct glq_cuda_llama glq_cuda_llama;
/* A device model with the CPU model's configuration and RoPE tables and no weights yet.
 * dense_bf16: dense projections are stored and multiplied in bf16 (else f32, TF32 off). */
int glq_cuda_llama_new(const struct glq_llama *cpu, int dense_bf16, glq_cuda_llama **out);
void glq_cuda_llama_free(glq_cuda_llama *g);
/* Copy layer l's norms and projections from the CPU model (replacing what the device held). */
int glq_cuda_llama_sync_layer(glq_cuda_llama *g, const struct glq_llama *cpu, int l);
/* Free layer l's device weights (streaming). */
void glq_cuda_llama_drop_layer(glq_cuda_llama *g, int l);
/* Copy the embedding, the final norm and the output head (tied: a dense layer over the embedding). */
int glq_cuda_llama_sync_head(glq_cuda_llama *g, const struct glq_llama *cpu);
/* Benchmarks of large shapes without a CPU weight: layer l from random layers of `kind` ("dense" bf16,
 * "e8", "e8p" or "trellis" with bits 2/3/4, "hif4"; see glq_cuda_linear_random) with unit norms, and a random bf16
 * embedding with a dense bf16 head. */
int glq_cuda_llama_random_layer(glq_cuda_llama *g, int l, const char *kind, int bits, uint64_t seed);
int glq_cuda_llama_random_head(glq_cuda_llama *g, uint64_t seed);
/* Device bytes of the weights held now. */
size_t glq_cuda_llama_bytes(const glq_cuda_llama *g);

/* KV cache on the device, f32, for `batch` sequences of up to max_seq positions. */
typedef struct glq_cuda_kv glq_cuda_kv;
int glq_cuda_kv_new(const glq_cuda_llama *g, int batch, int max_seq, glq_cuda_kv **out);
void glq_cuda_kv_free(glq_cuda_kv *kv);
int glq_cuda_kv_len(const glq_cuda_kv *kv);
int glq_cuda_kv_batch(const glq_cuda_kv *kv);
void glq_cuda_kv_reset(glq_cuda_kv *kv);
size_t glq_cuda_kv_bytes(const glq_cuda_kv *kv);

/* Hessian sums H[i] += xᵀx (fp64, on the device) over the rows fed to capture input i
 * (GLQ_CAP_QKV, _O, _GATE_UP, _DOWN of llama.h). */
typedef struct glq_cuda_capture glq_cuda_capture;
int glq_cuda_capture_new(const glq_cuda_llama *g, glq_cuda_capture **out);
void glq_cuda_capture_free(glq_cuda_capture *c);
int64_t glq_cuda_capture_rows(const glq_cuda_capture *c, int which);
int64_t glq_cuda_capture_dim(const glq_cuda_capture *c, int which);
/* The full symmetric d×d sum of input `which` into host memory (row-major). */
int glq_cuda_capture_download(const glq_cuda_capture *c, int which, double *host);

/* hidden (n × dim, device f32) = embedding rows of the host token ids. */
int glq_cuda_llama_embed(glq_cuda_llama *g, const int32_t *tokens, int64_t n, float *hidden);
/* Decoder layer l on hidden (B × T × dim, device) at positions pos0.. (= kv's length with a cache;
 * the caller advances the cache after the last layer with glq_cuda_kv_advance). in_place = 0 leaves
 * hidden unchanged (capture only). Without a cache, sequences are processed in chunks that bound
 * the attention scratch. cap may be NULL. */
int glq_cuda_llama_layer(glq_cuda_llama *g, int l, float *hidden, int B, int T, glq_cuda_kv *kv,
                         glq_cuda_capture *cap, int in_place);
int glq_cuda_kv_advance(glq_cuda_kv *kv, int T);
/* logits (n × vocab, device f32) = head(final_norm(hidden)). */
int glq_cuda_llama_head(glq_cuda_llama *g, const float *hidden, int64_t n, float *logits);
/* Whole forward of host tokens (B × T) after kv's positions (or from 0 without kv); host logits of
 * each sequence's last position (B × vocab), or of every position with all_logits. */
int glq_cuda_llama_forward(glq_cuda_llama *g, glq_cuda_kv *kv, const int32_t *tokens, int B, int T,
                           float *logits, int all_logits);
/* The same forward, but greedy: next[b] (host) = the lowest index of the maximum of sequence b's last
 * logits, computed on the device (only B ids come back); a NaN logit is an error naming the sequence. */
int glq_cuda_llama_forward_argmax(glq_cuda_llama *g, glq_cuda_kv *kv, const int32_t *tokens, int B, int T,
                                  int32_t *next);
/* out[i] (device) = the lowest index of the maximum of row i of device logits (n x vocab), -1 for a row
 * with a NaN; asynchronous on stream. */
int glq_cuda_argmax_rows(const float *logits, int64_t n, int64_t vocab, int32_t *out, void *stream);
/* Per-row evaluation statistics of device logits, as evalops.h defines them on the CPU (double
 * log-sum-exp; argmax ties to the lowest index); results land in host memory. */
int glq_cuda_nll_rows(const float *logits, int64_t n, int64_t vocab, const int32_t *targets, double *nll);
int glq_cuda_kl_rows(const float *p, const float *q, int64_t n, int64_t vocab, double *kl, uint8_t *agree);
/* Wait for the model's stream. */
int glq_cuda_llama_sync(glq_cuda_llama *g);

/* The model backend (src/model/backend.h) that runs cpu's forward on the GPU through a glq_cuda_llama
 * (cuda/backend.cu); cpu is borrowed and must outlive it. */
int glq_cuda_backend_new(struct glq_llama *cpu, int dense_bf16, struct glq_model_backend **out);

#ifdef __cplusplus
}
#endif
#endif
