/* fuzz_safetensors.c - libFuzzer harness: arbitrary bytes as a whole safetensors file, and the
 * same bytes as JSON text. Every accepted tensor is read end to end so that a view reaching
 * outside the buffer shows up under ASan; everything is freed (leaks fail the run). */
#include <stdint.h>
#include <string.h>
#include "core/tensor.h"
#include "io/json.h"
#include "io/safetensors.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Walk a parsed JSON tree and depend on every value, so nothing is optimised away. */
static uint64_t json_walk(const glq_json *v) {
  uint64_t h = (uint64_t)v->type + v->offset + v->keylen;
  if (v->type == GLQ_JSON_STR) h += v->len + (v->len ? (unsigned char)v->str[v->len - 1] : 0);
  if (v->type == GLQ_JSON_ARR || v->type == GLQ_JSON_OBJ)
    for (size_t i = 0; i < v->n; i++) h += json_walk(&v->items[i]);
  return h;
}

static volatile uint64_t sink;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  glq_json_doc *doc;
  if (glq_json_parse((const char *)data, size, GLQ_JSON_DEFAULT_DEPTH, &doc) == 0) {
    sink = json_walk(glq_json_root(doc));
    glq_json_free(doc);
  }

  glq_storage *st;
  if (glq_storage_alloc(size, &st) != 0) return 0;
  if (size) memcpy(st->data, data, size);
  glq_safetensors *s;
  if (glq_safetensors_from_storage(st, "fuzz.safetensors", &s) == 0) {
    uint64_t h = 0;
    for (size_t i = 0; i < s->n; i++) {
      const glq_tensor *t = &s->tensors[i];
      const unsigned char *p = glq_tensor_data(t);
      size_t nb = (size_t)glq_tensor_numel(t) * glq_dtype_size(t->dtype);
      for (size_t k = 0; k < nb; k++) h += p[k];
      h += strlen(s->entries[i].name);
    }
    for (size_t k = 0; k < 2 * s->n_meta; k++) h += strlen(s->meta[k]);
    sink = h;
    glq_safetensors_free(s);
  }
  glq_storage_release(st);
  return 0;
}
