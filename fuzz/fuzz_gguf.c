/* fuzz_gguf.c - libFuzzer harness: arbitrary bytes as a whole GGUF file. Every metadata value is
 * read through the accessors, every tensor is materialised (views read end to end, quantized
 * types dequantized), and a tokenizer is built from the metadata when it describes one and
 * used once; everything is freed, so out-of-bounds reads, UB and leaks all fail the run. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include "core/pool.h"
#include "core/tensor.h"
#include "io/gguf.h"
#include "model/tokenizer.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static volatile uint64_t sink;

static uint64_t walk_value(const glq_gguf_value *v) {
  uint64_t h = (uint64_t)v->type + v->len;
  for (uint64_t i = 0; i < (v->type == GLQ_GGUF_ARRAY ? v->len : 1); i++) {
    int64_t k;
    double d;
    const char *s;
    size_t n;
    if (glq_gguf_value_int(v, i, &k) == 0) h += (uint64_t)k;
    if (glq_gguf_value_num(v, i, &d) == 0) h += d == d ? (uint64_t)(d != 0) : 7;
    if (glq_gguf_value_str(v, i, &s, &n) == 0) h += n ? (uint8_t)s[n - 1] : 1;
    if (v->items) h += walk_value(&v->items[i]);
  }
  return h;
}

static void use_tokenizer(const glq_gguf *g) {
  glq_tokenizer *t;
  if (glq_tokenizer_from_gguf(g, &t) != 0) return;
  static const char text[] = "Hello w\xC3\xB6rld 123 <s> \xF0\x9F\x99\x82";
  int32_t *ids;
  size_t n, len;
  char *back;
  if (glq_tokenizer_encode(t, text, sizeof text - 1, 0, &ids, &n) == 0) {
    if (glq_tokenizer_decode(t, ids, n, 0, &back, &len) == 0) {
      sink += len;
      free(back);
    }
    free(ids);
  }
  glq_tokenizer_free(t);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  static int once;
  if (!once++) glq_set_num_threads(1);
  glq_storage *st;
  if (glq_storage_alloc(size, &st) != 0) return 0;
  if (size) memcpy(st->data, data, size);
  glq_gguf *g;
  if (glq_gguf_open_storage(st, "fuzz.gguf", &g) == 0) {
    uint64_t h = 0;
    for (uint64_t i = 0; i < g->n_kv; i++) h += strlen(g->kv[i].key) + walk_value(&g->kv[i].value);
    for (uint64_t i = 0; i < g->n_tensors; i++) {
      glq_tensor t;
      if (glq_gguf_tensor(g, &g->tensors[i], &t) != 0) continue;
      const unsigned char *p = glq_tensor_data(&t);
      size_t nb = (size_t)glq_tensor_numel(&t) * glq_dtype_size(t.dtype);
      for (size_t k = 0; k < nb; k++) h += p[k];
      glq_tensor_release(&t);
    }
    sink = h;
    use_tokenizer(g);
    glq_gguf_close(g);
  }
  glq_storage_release(st);
  return 0;
}
