#include "gguf.h"
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include "../core/error.h"
#include "ggml_quants.h"

#define GGUF_MAGIC 0x46554747u /* "GGUF" read as a little-endian u32 */
#define MAX_ARRAY_DEPTH 8      /* nested arrays deeper than this are rejected (and bound recursion) */

/* Reading cursor over the file's bytes; every read is bounds-checked. */
typedef struct {
  const uint8_t *p;
  size_t n, pos;
  const char *name;
} cursor;

static int truncated(const cursor *c, const char *what) {
  return glq_error(GLQ_EFORMAT, "gguf '%s': file truncated at offset %zu while reading %s", c->name, c->pos, what);
}

static int rd(cursor *c, void *dst, size_t n, const char *what) {
  if (c->n - c->pos < n) return truncated(c, what);
  memcpy(dst, c->p + c->pos, n);
  c->pos += n;
  return GLQ_OK;
}

static int rd_u32(cursor *c, uint32_t *v, const char *what) { return rd(c, v, 4, what); }
static int rd_u64(cursor *c, uint64_t *v, const char *what) { return rd(c, v, 8, what); }

/* A length-prefixed string: pointer into the file and its length. */
static int rd_str(cursor *c, const uint8_t **s, uint64_t *len, const char *what) {
  int rc = rd_u64(c, len, what);
  if (rc) return rc;
  if (*len > c->n - c->pos)
    return glq_error(GLQ_EFORMAT, "gguf '%s': %s at offset %zu has length %" PRIu64 ", beyond the end of the file",
                     c->name, what, c->pos - 8, *len);
  *s = c->p + c->pos;
  c->pos += (size_t)*len;
  return GLQ_OK;
}

static char *dup_str(const uint8_t *s, uint64_t len) {
  char *d = malloc((size_t)len + 1);
  if (d) {
    memcpy(d, s, (size_t)len);
    d[len] = 0;
  }
  return d;
}

/* ---- name lookup: keys and tensor names hash into tables of index + 1 ---- */

static uint64_t hash_name(const char *s) {
  uint64_t h = 1469598103934665603ull; /* FNV-1a */
  for (; *s; s++) h = (h ^ (uint8_t)*s) * 1099511628211ull;
  return h;
}

static const char *kv_name(const glq_gguf *g, uint32_t i) { return g->kv[i].key; }
static const char *tensor_name(const glq_gguf *g, uint32_t i) { return g->tensors[i].name; }

static int table_alloc(uint32_t **tab, uint64_t *mask, uint64_t n) {
  uint64_t cap = 16;
  while (cap < 2 * n) cap *= 2;
  *tab = calloc((size_t)cap, sizeof **tab);
  *mask = cap - 1;
  return *tab ? GLQ_OK : glq_error(GLQ_ENOMEM, "gguf: out of memory");
}

/* The slot holding `name`, or the empty slot where it would go. */
static uint32_t *table_slot(const glq_gguf *g, uint32_t *tab, uint64_t mask,
                            const char *(*name_of)(const glq_gguf *, uint32_t), const char *name) {
  for (uint64_t i = hash_name(name) & mask;; i = (i + 1) & mask)
    if (!tab[i] || strcmp(name_of(g, tab[i] - 1), name) == 0) return &tab[i];
}

/* Bytes of a fixed-size value type; 0 for strings and arrays, -1 for unknown ids. */
static int type_size(uint32_t t) {
  static const int sizes[] = {1, 1, 2, 2, 4, 4, 4, 1, 0, 0, 8, 8, 8};
  return t < sizeof sizes / sizeof sizes[0] ? sizes[t] : -1;
}

static void value_free(glq_gguf_value *v) {
  if (v->items) {
    for (uint64_t i = 0; i < v->len; i++) value_free(&v->items[i]);
    free(v->items);
    v->items = NULL;
  }
}

static int rd_value(cursor *c, uint32_t type, int depth, const char *key, glq_gguf_value *v) {
  memset(v, 0, sizeof *v);
  int sz = type_size(type);
  if (sz < 0)
    return glq_error(GLQ_EFORMAT, "gguf '%s': key '%s' has unknown value type id %u", c->name, key, type);
  v->type = (glq_gguf_type)type;
  if (sz > 0) {
    if (c->n - c->pos < (size_t)sz) return truncated(c, "a metadata value");
    v->data = c->p + c->pos;
    v->len = 1;
    c->pos += (size_t)sz;
    return GLQ_OK;
  }
  if (type == GLQ_GGUF_STRING) return rd_str(c, &v->data, &v->len, "a metadata string");

  uint32_t et = 0;
  uint64_t n = 0;
  int rc;
  if ((rc = rd_u32(c, &et, "an array element type")) || (rc = rd_u64(c, &n, "an array length"))) return rc;
  int esz = type_size(et);
  if (esz < 0)
    return glq_error(GLQ_EFORMAT, "gguf '%s': array '%s' has unknown element type id %u", c->name, key, et);
  if (et == GLQ_GGUF_ARRAY && depth + 1 >= MAX_ARRAY_DEPTH)
    return glq_error(GLQ_EFORMAT, "gguf '%s': array '%s' nests deeper than %d levels", c->name, key, MAX_ARRAY_DEPTH);
  /* smallest encoding of one element: its bytes, a string's length, an array's type + length */
  size_t min_elem = esz > 0 ? (size_t)esz : et == GLQ_GGUF_STRING ? 8 : 12;
  if (n > (c->n - c->pos) / min_elem)
    return glq_error(GLQ_EFORMAT, "gguf '%s': array '%s' at offset %zu claims %" PRIu64 " elements, more than the file holds",
                     c->name, key, c->pos - 12, n);
  v->elem_type = (glq_gguf_type)et;
  v->len = n;
  v->data = c->p + c->pos;
  if (esz > 0) {
    c->pos += (size_t)n * (size_t)esz;
    return GLQ_OK;
  }
  if (n == 0) return GLQ_OK;
  v->items = calloc((size_t)n, sizeof *v->items);
  if (!v->items) return glq_error(GLQ_ENOMEM, "gguf '%s': out of memory for array '%s'", c->name, key);
  for (uint64_t i = 0; i < n; i++)
    if ((rc = rd_value(c, et, depth + 1, key, &v->items[i]))) return rc;
  return GLQ_OK;
}

void glq_gguf_close(glq_gguf *g) {
  if (!g) return;
  for (uint64_t i = 0; i < g->n_kv; i++) {
    free(g->kv[i].key);
    value_free(&g->kv[i].value);
  }
  for (uint64_t i = 0; i < g->n_tensors; i++) free(g->tensors[i].name);
  free(g->kv);
  free(g->tensors);
  free(g->kv_hash);
  free(g->tensor_hash);
  free(g->path);
  glq_storage_release(g->st);
  free(g);
}

static int rd_header(cursor *c, glq_gguf *g) {
  uint32_t magic = 0;
  int rc;
  if ((rc = rd_u32(c, &magic, "the magic"))) return rc;
  if (magic != GGUF_MAGIC) return glq_error(GLQ_EFORMAT, "gguf '%s': bad magic (not a GGUF file)", c->name);
  if ((rc = rd_u32(c, &g->version, "the version"))) return rc;
  if (g->version != 2 && g->version != 3) {
    if ((g->version & 0xFFFF) == 0)
      return glq_error(GLQ_EUNSUPPORTED, "gguf '%s': unsupported version %u (a big-endian file?)", c->name, g->version);
    return glq_error(GLQ_EUNSUPPORTED, "gguf '%s': unsupported version %u (only 2 and 3 are read)", c->name, g->version);
  }
  /* g->n_tensors / n_kv only count what is allocated, so that close() can walk them */
  uint64_t nt = 0, nk = 0;
  if ((rc = rd_u64(c, &nt, "the tensor count")) || (rc = rd_u64(c, &nk, "the metadata count"))) return rc;
  /* a tensor info takes at least 24 bytes, a key/value at least 13: bound counts by the file */
  size_t left = c->n - c->pos;
  if (nt > left / 24 || nt >= UINT32_MAX) return glq_error(GLQ_EFORMAT, "gguf '%s': tensor count %" PRIu64 " is more than the file can hold", c->name, nt);
  if (nk > left / 13 || nk >= UINT32_MAX) return glq_error(GLQ_EFORMAT, "gguf '%s': metadata count %" PRIu64 " is more than the file can hold", c->name, nk);
  g->kv = calloc(nk ? (size_t)nk : 1, sizeof *g->kv);
  g->tensors = calloc(nt ? (size_t)nt : 1, sizeof *g->tensors);
  if (!g->kv || !g->tensors || table_alloc(&g->kv_hash, &g->kv_mask, nk) || table_alloc(&g->tensor_hash, &g->tensor_mask, nt))
    return glq_error(GLQ_ENOMEM, "gguf '%s': out of memory", c->name);
  for (uint64_t i = 0; i < nk; i++) {
    const uint8_t *ks;
    uint64_t klen;
    uint32_t type = 0;
    if ((rc = rd_str(c, &ks, &klen, "a metadata key"))) return rc;
    glq_gguf_kv *kv = &g->kv[i];
    if (!(kv->key = dup_str(ks, klen))) return glq_error(GLQ_ENOMEM, "gguf '%s': out of memory", c->name);
    g->n_kv = i + 1;
    uint32_t *slot = table_slot(g, g->kv_hash, g->kv_mask, kv_name, kv->key);
    if (*slot) return glq_error(GLQ_EFORMAT, "gguf '%s': duplicate metadata key '%s'", c->name, kv->key);
    *slot = (uint32_t)i + 1;
    if ((rc = rd_u32(c, &type, "a metadata value type")) || (rc = rd_value(c, type, 0, kv->key, &kv->value))) return rc;
  }
  g->n_tensors = nt;
  return GLQ_OK;
}

static int rd_tensor_info(cursor *c, glq_gguf *g, glq_gguf_tensor_info *ti) {
  const uint8_t *ns;
  uint64_t nlen, ne = 0;
  uint32_t nd = 0;
  int rc;
  if ((rc = rd_str(c, &ns, &nlen, "a tensor name"))) return rc;
  if (!(ti->name = dup_str(ns, nlen))) return glq_error(GLQ_ENOMEM, "gguf '%s': out of memory", c->name);
  if ((rc = rd_u32(c, &nd, "a tensor's dimension count"))) return rc;
  if (nd > 4) return glq_error(GLQ_EFORMAT, "gguf '%s': tensor '%s' has %u dimensions (at most 4)", c->name, ti->name, nd);
  ti->ndim = (int)nd;
  int64_t numel = 1;
  for (int d = 0; d < 4; d++) {
    ti->ne[d] = 1;
    if (d >= ti->ndim) continue;
    if ((rc = rd_u64(c, &ne, "a tensor dimension"))) return rc;
    if (ne > (uint64_t)INT64_MAX || (ne > 0 && numel > INT64_MAX / (int64_t)ne))
      return glq_error(GLQ_EFORMAT, "gguf '%s': tensor '%s' has an absurd size", c->name, ti->name);
    ti->ne[d] = (int64_t)ne;
    numel *= (int64_t)ne;
  }
  if ((rc = rd_u32(c, &ti->type, "a tensor type")) || (rc = rd_u64(c, &ti->offset, "a tensor offset"))) return rc;
  int64_t block;
  size_t bytes;
  if (glq_ggml_type_block(ti->type, &block, &bytes))
    return glq_error(GLQ_EFORMAT, "gguf '%s': tensor '%s' has unknown type id %u", c->name, ti->name, ti->type);
  if (ti->ne[0] % block != 0)
    return glq_error(GLQ_EFORMAT, "gguf '%s': tensor '%s' row length %" PRId64 " is not a multiple of the %s block size %" PRId64,
                     c->name, ti->name, ti->ne[0], glq_ggml_type_name(ti->type), block);
  if ((uint64_t)(numel / block) > UINT64_MAX / bytes)
    return glq_error(GLQ_EFORMAT, "gguf '%s': tensor '%s' has an absurd size", c->name, ti->name);
  ti->nbytes = (uint64_t)(numel / block) * bytes;
  if (ti->offset % g->alignment != 0)
    return glq_error(GLQ_EFORMAT, "gguf '%s': tensor '%s' data offset %" PRIu64 " is not a multiple of the alignment %u",
                     c->name, ti->name, ti->offset, g->alignment);
  return GLQ_OK;
}

static int rd_alignment(const cursor *c, glq_gguf *g) {
  g->alignment = 32;
  const glq_gguf_value *v = glq_gguf_get(g, "general.alignment");
  if (!v) return GLQ_OK;
  uint32_t a;
  if (v->type != GLQ_GGUF_U32) return glq_error(GLQ_EFORMAT, "gguf '%s': general.alignment is not a u32", c->name);
  memcpy(&a, v->data, 4);
  if (a == 0 || (a & (a - 1)) != 0)
    return glq_error(GLQ_EFORMAT, "gguf '%s': general.alignment %u is not a power of two", c->name, a);
  g->alignment = a;
  return GLQ_OK;
}

static int parse(cursor *c, glq_gguf *g) {
  int rc;
  if ((rc = rd_header(c, g)) || (rc = rd_alignment(c, g))) return rc;
  for (uint64_t i = 0; i < g->n_tensors; i++) {
    if ((rc = rd_tensor_info(c, g, &g->tensors[i]))) return rc;
    uint32_t *slot = table_slot(g, g->tensor_hash, g->tensor_mask, tensor_name, g->tensors[i].name);
    if (*slot) return glq_error(GLQ_EFORMAT, "gguf '%s': duplicate tensor name '%s'", c->name, g->tensors[i].name);
    *slot = (uint32_t)i + 1;
  }
  g->data_offset = (c->pos + g->alignment - 1) / g->alignment * g->alignment;
  uint64_t data_size = g->data_offset < c->n ? c->n - g->data_offset : 0;
  for (uint64_t i = 0; i < g->n_tensors; i++) {
    const glq_gguf_tensor_info *ti = &g->tensors[i];
    if (ti->offset > data_size || ti->nbytes > data_size - ti->offset)
      return glq_error(GLQ_EFORMAT, "gguf '%s': tensor '%s' data (offset %" PRIu64 ", %" PRIu64 " bytes) lies beyond the end of the file",
                       c->name, ti->name, ti->offset, ti->nbytes);
  }
  return GLQ_OK;
}

int glq_gguf_open_storage(glq_storage *st, const char *name, glq_gguf **out) {
  *out = NULL;
  glq_gguf *g = calloc(1, sizeof *g);
  if (!g || !(g->path = dup_str((const uint8_t *)name, strlen(name)))) {
    free(g);
    return glq_error(GLQ_ENOMEM, "gguf '%s': out of memory", name);
  }
  glq_storage_retain(st);
  g->st = st;
  cursor c = {st->data, st->nbytes, 0, g->path};
  int rc = parse(&c, g);
  if (rc) {
    glq_gguf_close(g);
    return rc;
  }
  *out = g;
  return GLQ_OK;
}

int glq_gguf_open(const char *path, glq_gguf **out) {
  glq_storage *st;
  *out = NULL;
  int rc = glq_storage_mmap(path, &st);
  if (rc) return rc;
  rc = glq_gguf_open_storage(st, path, out);
  glq_storage_release(st);
  return rc;
}

const glq_gguf_value *glq_gguf_get(const glq_gguf *g, const char *key) {
  uint32_t i = *table_slot(g, g->kv_hash, g->kv_mask, kv_name, key);
  return i ? &g->kv[i - 1].value : NULL;
}

/* The bytes and type of element i (i == 0 for a scalar); NULL if out of range. */
static const uint8_t *element(const glq_gguf_value *v, uint64_t i, glq_gguf_type *t) {
  if (v->type != GLQ_GGUF_ARRAY) {
    *t = v->type;
    return i == 0 ? v->data : NULL;
  }
  *t = v->elem_type;
  int sz = type_size(v->elem_type);
  return i < v->len && sz > 0 ? v->data + i * (uint64_t)sz : NULL;
}

int glq_gguf_value_int(const glq_gguf_value *v, uint64_t i, int64_t *out) {
  glq_gguf_type t;
  const uint8_t *p = element(v, i, &t);
  union { uint8_t u8; int8_t i8; uint16_t u16; int16_t i16; uint32_t u32; int32_t i32; uint64_t u64; int64_t i64; } x;
  int sz = p ? type_size(t) : 0;
  if (sz <= 0 || sz > 8) return glq_error(GLQ_EINVAL, "gguf value: element %" PRIu64 " is not an integer", i);
  memcpy(&x, p, (size_t)sz);
  switch (t) {
  case GLQ_GGUF_U8: case GLQ_GGUF_BOOL: *out = x.u8; break;
  case GLQ_GGUF_I8: *out = x.i8; break;
  case GLQ_GGUF_U16: *out = x.u16; break;
  case GLQ_GGUF_I16: *out = x.i16; break;
  case GLQ_GGUF_U32: *out = x.u32; break;
  case GLQ_GGUF_I32: *out = x.i32; break;
  case GLQ_GGUF_I64: *out = x.i64; break;
  case GLQ_GGUF_U64:
    if (x.u64 > (uint64_t)INT64_MAX) return glq_error(GLQ_EINVAL, "gguf value: %" PRIu64 " does not fit an int64", x.u64);
    *out = (int64_t)x.u64;
    break;
  default: return glq_error(GLQ_EINVAL, "gguf value: element %" PRIu64 " is not an integer", i);
  }
  return GLQ_OK;
}

int glq_gguf_value_num(const glq_gguf_value *v, uint64_t i, double *out) {
  glq_gguf_type t;
  const uint8_t *p = element(v, i, &t);
  if (p && t == GLQ_GGUF_F32) {
    float f;
    memcpy(&f, p, 4);
    *out = f;
  } else if (p && t == GLQ_GGUF_F64) {
    memcpy(out, p, 8);
  } else {
    int64_t k;
    if (glq_gguf_value_int(v, i, &k)) return glq_error(GLQ_EINVAL, "gguf value: element %" PRIu64 " is not a number", i);
    *out = (double)k;
  }
  return GLQ_OK;
}

int glq_gguf_value_str(const glq_gguf_value *v, uint64_t i, const char **s, size_t *len) {
  const glq_gguf_value *e = v->type == GLQ_GGUF_ARRAY && v->items && i < v->len ? &v->items[i] : i == 0 ? v : NULL;
  if (!e || e->type != GLQ_GGUF_STRING) return glq_error(GLQ_EINVAL, "gguf value: element %" PRIu64 " is not a string", i);
  *s = (const char *)e->data;
  *len = (size_t)e->len;
  return GLQ_OK;
}

const glq_gguf_tensor_info *glq_gguf_find_tensor(const glq_gguf *g, const char *name) {
  uint32_t i = *table_slot(g, g->tensor_hash, g->tensor_mask, tensor_name, name);
  return i ? &g->tensors[i - 1] : NULL;
}

int glq_gguf_tensor_shape(const glq_gguf_tensor_info *ti, int64_t shape[4]) {
  for (int d = 0; d < ti->ndim; d++) shape[d] = ti->ne[ti->ndim - 1 - d];
  return ti->ndim;
}

const void *glq_gguf_tensor_data(const glq_gguf *g, const glq_gguf_tensor_info *ti) {
  return (const uint8_t *)g->st->data + g->data_offset + ti->offset;
}

/* glq dtype that stores a ggml type unchanged, or -1 */
static int plain_dtype(uint32_t type) {
  switch (type) {
  case GLQ_GGML_F32: return GLQ_F32;
  case GLQ_GGML_F16: return GLQ_F16;
  case GLQ_GGML_BF16: return GLQ_BF16;
  case GLQ_GGML_F64: return GLQ_F64;
  case GLQ_GGML_I8: return GLQ_I8;
  case GLQ_GGML_I16: return GLQ_I16;
  case GLQ_GGML_I32: return GLQ_I32;
  case GLQ_GGML_I64: return GLQ_I64;
  default: return -1;
  }
}

int glq_gguf_tensor(const glq_gguf *g, const glq_gguf_tensor_info *ti, glq_tensor *out) {
  int64_t shape[4];
  int nd = glq_gguf_tensor_shape(ti, shape);
  int dt = plain_dtype(ti->type), rc;
  const void *src = glq_gguf_tensor_data(g, ti);
  if (dt >= 0 && (uintptr_t)src % glq_dtype_size((glq_dtype)dt) == 0) {
    rc = glq_tensor_view(g->st, (size_t)(g->data_offset + ti->offset), (glq_dtype)dt, nd, shape, out);
  } else if (dt >= 0) { /* a file with general.alignment below the element size: copy */
    rc = glq_tensor_new((glq_dtype)dt, nd, shape, out);
    if (!rc) memcpy(glq_tensor_data(out), src, (size_t)ti->nbytes);
  } else {
    rc = glq_tensor_new(GLQ_F32, nd, shape, out);
    if (!rc && (rc = glq_ggml_dequantize(ti->type, src, glq_tensor_data(out), glq_tensor_numel(out))))
      glq_tensor_release(out);
  }
  if (rc) glq_error_prefix("gguf '%s': tensor '%s'", g->path, ti->name);
  return rc;
}
