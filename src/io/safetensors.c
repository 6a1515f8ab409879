#include "safetensors.h"
#include "io/json.h"
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* The safetensors dtype tags, indexed by glq_dtype. */
static const char *const st_dtype_names[GLQ_NDTYPES] = {
  [GLQ_F64] = "F64", [GLQ_F32] = "F32", [GLQ_F16] = "F16", [GLQ_BF16] = "BF16", [GLQ_I64] = "I64",
  [GLQ_I32] = "I32", [GLQ_I16] = "I16", [GLQ_I8] = "I8",   [GLQ_U8] = "U8",     [GLQ_BOOL] = "BOOL",
};

enum { HEADER_DEPTH = 8 };  /* header -> entry -> shape is depth 3; anything deeper is refused early */

static const char *const INDEX_NAME = "model.safetensors.index.json";

/* Format "fname: tensor 'name': <problem>" as a GLQ_EFORMAT error. */
static int bad_tensor(const char *fname, const char *name, const char *fmt, ...)
#if defined(__GNUC__)
  __attribute__((format(printf, 3, 4)))
#endif
  ;
static int bad_tensor(const char *fname, const char *name, const char *fmt, ...) {
  char what[512];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(what, sizeof what, fmt, ap);
  va_end(ap);
  return glq_error(GLQ_EFORMAT, "%s: tensor '%s': %s", fname, name, what);
}

static char *dup_bytes(const char *s, size_t n) {
  char *d = malloc(n + 1);
  if (d) {
    memcpy(d, s, n);
    d[n] = 0;
  }
  return d;
}

static void shape_str(char *buf, size_t cap, int ndim, const int64_t *shape) {
  size_t k = (size_t)snprintf(buf, cap, "[");
  for (int i = 0; i < ndim && k < cap; i++)
    k += (size_t)snprintf(buf + k, cap - k, i ? ", %" PRId64 : "%" PRId64, shape[i]);
  if (k < cap) snprintf(buf + k, cap - k, "]");
}

/* Bytes needed by dtype x shape, or UINT64_MAX when that overflows. */
static uint64_t tensor_bytes(glq_dtype dt, int ndim, const int64_t *shape) {
  uint64_t nb = glq_dtype_size(dt);
  for (int i = 0; i < ndim; i++)
    if (shape[i] == 0) return 0;
  for (int i = 0; i < ndim; i++) {
    if (nb > UINT64_MAX / (uint64_t)shape[i]) return UINT64_MAX;
    nb *= (uint64_t)shape[i];
  }
  return nb;
}

static int check_size(const char *fname, uint64_t file_size) {
  if (file_size < 8)
    return glq_error(GLQ_EFORMAT, "%s: file is too short (%" PRIu64 " bytes) for a safetensors header "
                     "(8-byte length + JSON)", fname, file_size);
  return 0;
}

/* Validate the 8-byte header length against the file size. */
static int header_length(const unsigned char *b, uint64_t file_size, const char *fname, uint64_t *hlen) {
  int rc = check_size(fname, file_size);
  if (rc) return rc;
  uint64_t h = 0;
  for (int i = 7; i >= 0; i--) h = h << 8 | b[i];
  if (h > file_size - 8)
    return glq_error(GLQ_EFORMAT, "%s: header length %" PRIu64 " is larger than the file (%" PRIu64 " bytes)",
                     fname, h, file_size);
  if (h > GLQ_SAFETENSORS_MAX_HEADER)
    return glq_error(GLQ_EFORMAT, "%s: header length %" PRIu64 " is absurdly large (limit %u bytes)", fname, h,
                     GLQ_SAFETENSORS_MAX_HEADER);
  *hlen = h;
  return 0;
}

static int is_uint(const glq_json *v) { return v->type == GLQ_JSON_INT && v->i >= 0; }

static int parse_entry(const glq_json *v, const char *fname, uint64_t data_len, glq_st_entry *e) {
  const char *name = e->name;
  if (v->type != GLQ_JSON_OBJ)
    return bad_tensor(fname, name, "entry is a JSON %s, not an object", glq_json_type_name(v->type));
  const glq_json *dt = glq_json_get(v, "dtype"), *sh = glq_json_get(v, "shape"),
                 *off = glq_json_get(v, "data_offsets");
  if (!dt) return bad_tensor(fname, name, "missing \"dtype\"");
  if (!sh) return bad_tensor(fname, name, "missing \"shape\"");
  if (!off) return bad_tensor(fname, name, "missing \"data_offsets\"");

  if (dt->type != GLQ_JSON_STR) return bad_tensor(fname, name, "\"dtype\" is a JSON %s, not a string", glq_json_type_name(dt->type));
  int found = 0;
  for (int k = 0; k < GLQ_NDTYPES && !found; k++)
    if (strlen(st_dtype_names[k]) == dt->len && memcmp(st_dtype_names[k], dt->str, dt->len) == 0) {
      e->dtype = (glq_dtype)k;
      found = 1;
    }
  if (!found)
    return bad_tensor(fname, name, "unknown or unsupported dtype \"%.32s\" (supported: F64, F32, F16, BF16, "
                      "I64, I32, I16, I8, U8, BOOL)", dt->str);

  if (sh->type != GLQ_JSON_ARR) return bad_tensor(fname, name, "\"shape\" must be a list of non-negative integers");
  if (sh->n > GLQ_MAX_DIMS)
    return bad_tensor(fname, name, "shape has %zu dimensions; glq supports at most %d", sh->n, GLQ_MAX_DIMS);
  for (size_t k = 0; k < sh->n; k++) {
    if (!is_uint(&sh->items[k]))
      return bad_tensor(fname, name, "\"shape\" must be a list of non-negative integers (item %zu is not)", k);
    e->shape[k] = sh->items[k].i;
  }
  e->ndim = (int)sh->n;

  if (off->type != GLQ_JSON_ARR || off->n != 2 || !is_uint(&off->items[0]) || !is_uint(&off->items[1]))
    return bad_tensor(fname, name, "\"data_offsets\" must be [begin, end], two non-negative integers");
  e->begin = (uint64_t)off->items[0].i;
  e->end = (uint64_t)off->items[1].i;
  if (e->begin > e->end)
    return bad_tensor(fname, name, "data_offsets begin %" PRIu64 " is after end %" PRIu64, e->begin, e->end);
  if (e->end > data_len)
    return bad_tensor(fname, name, "data_offsets [%" PRIu64 ", %" PRIu64 "] out of bounds: the data section "
                      "has %" PRIu64 " bytes", e->begin, e->end, data_len);
  uint64_t need = tensor_bytes(e->dtype, e->ndim, e->shape);
  char shp[128];
  shape_str(shp, sizeof shp, e->ndim, e->shape);
  if (need == UINT64_MAX) return bad_tensor(fname, name, "shape %s is too large", shp);
  if (need != e->end - e->begin)
    return bad_tensor(fname, name, "data_offsets [%" PRIu64 ", %" PRIu64 "] span %" PRIu64 " bytes, inconsistent "
                      "with dtype %s x shape %s = %" PRIu64 " bytes", e->begin, e->end, e->end - e->begin,
                      st_dtype_names[e->dtype], shp, need);
  return 0;
}

static int parse_metadata(const glq_json *m, const char *fname, glq_safetensors *s) {
  if (m->type != GLQ_JSON_OBJ)
    return glq_error(GLQ_EFORMAT, "%s: __metadata__ is a JSON %s, not an object", fname, glq_json_type_name(m->type));
  s->meta = calloc(2 * m->n + 1, sizeof *s->meta);
  if (!s->meta) return glq_error(GLQ_ENOMEM, "%s: out of memory", fname);
  for (size_t k = 0; k < m->n; k++) {
    const glq_json *v = &m->items[k];
    if (v->type != GLQ_JSON_STR)
      return glq_error(GLQ_EFORMAT, "%s: __metadata__ value for key '%s' is a JSON %s, not a string", fname,
                       v->key, glq_json_type_name(v->type));
    if (strlen(v->key) != v->keylen || strlen(v->str) != v->len)
      return glq_error(GLQ_EFORMAT, "%s: __metadata__ entry '%s' contains a NUL byte", fname, v->key);
    s->meta[2 * k] = dup_bytes(v->key, v->keylen);
    s->meta[2 * k + 1] = dup_bytes(v->str, v->len);
    s->n_meta = k + 1;
    if (!s->meta[2 * k] || !s->meta[2 * k + 1]) return glq_error(GLQ_ENOMEM, "%s: out of memory", fname);
  }
  return 0;
}

static int cmp_begin(const void *a, const void *b) {
  const glq_st_entry *x = *(const glq_st_entry *const *)a, *y = *(const glq_st_entry *const *)b;
  if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
  return (x->end > y->end) - (x->end < y->end);
}

/* Two tensors may not share a byte; empty tensors share none, and holes are allowed. */
static int check_overlaps(const glq_safetensors *s, const char *fname) {
  if (s->n < 2) return 0;
  const glq_st_entry **by = malloc(s->n * sizeof *by);
  if (!by) return glq_error(GLQ_ENOMEM, "%s: out of memory", fname);
  for (size_t i = 0; i < s->n; i++) by[i] = &s->entries[i];
  qsort(by, s->n, sizeof *by, cmp_begin);
  const glq_st_entry *last = NULL;  /* the non-empty range reaching furthest so far */
  int rc = 0;
  for (size_t i = 0; i < s->n && !rc; i++) {
    const glq_st_entry *e = by[i];
    if (e->begin == e->end) continue;
    if (last && e->begin < last->end)
      rc = glq_error(GLQ_EFORMAT, "%s: tensors '%s' and '%s' overlap: data_offsets [%" PRIu64 ", %" PRIu64
                     "] and [%" PRIu64 ", %" PRIu64 "]", fname, last->name, e->name, last->begin, last->end,
                     e->begin, e->end);
    if (!last || e->end > last->end) last = e;
  }
  free(by);
  return rc;
}

static int parse_tree(const glq_json *root, uint64_t data_len, const char *fname, glq_safetensors *s) {
  if (root->type != GLQ_JSON_OBJ)
    return glq_error(GLQ_EFORMAT, "%s: header is a JSON %s, not an object", fname, glq_json_type_name(root->type));
  s->entries = calloc(root->n + 1, sizeof *s->entries);
  if (!s->entries) return glq_error(GLQ_ENOMEM, "%s: out of memory", fname);
  for (size_t k = 0; k < root->n; k++) {
    const glq_json *v = &root->items[k];
    int rc;
    if (strcmp(v->key, "__metadata__") == 0 && v->keylen == strlen("__metadata__")) {
      if ((rc = parse_metadata(v, fname, s))) return rc;
      continue;
    }
    if (strlen(v->key) != v->keylen)
      return glq_error(GLQ_EFORMAT, "%s: tensor name '%s...' contains a NUL byte", fname, v->key);
    glq_st_entry *e = &s->entries[s->n];
    if (!(e->name = dup_bytes(v->key, v->keylen))) return glq_error(GLQ_ENOMEM, "%s: out of memory", fname);
    s->n++;
    if ((rc = parse_entry(v, fname, data_len, e))) return rc;
  }
  return check_overlaps(s, fname);
}

int glq_safetensors_parse(const void *buf, size_t len, uint64_t file_size, const char *fname, glq_safetensors **out) {
  *out = NULL;
  uint64_t hlen;
  if (len < 8 && file_size >= 8)
    return glq_error(GLQ_EINVAL, "%s: glq_safetensors_parse needs the first 8 bytes", fname);
  int rc = header_length(buf, file_size, fname, &hlen);
  if (rc) return rc;
  if (len - 8 < hlen) return glq_error(GLQ_EINVAL, "%s: glq_safetensors_parse needs the whole header", fname);
  glq_json_doc *doc;
  if ((rc = glq_json_parse((const char *)buf + 8, (size_t)hlen, HEADER_DEPTH, &doc))) {
    glq_error_prefix("%s: malformed JSON header", fname);
    return rc;
  }
  glq_safetensors *s = calloc(1, sizeof *s);
  if (!s) rc = glq_error(GLQ_ENOMEM, "%s: out of memory", fname);
  else {
    s->data_start = 8 + hlen;
    rc = parse_tree(glq_json_root(doc), file_size - 8 - hlen, fname, s);
  }
  glq_json_free(doc);
  if (rc) {
    glq_safetensors_free(s);
    return rc;
  }
  *out = s;
  return 0;
}

/* A view of the entry's bytes; a copy when they are misaligned for the dtype (the format does not
 * promise alignment and unaligned loads are undefined behaviour in C). */
static int entry_tensor(glq_storage *st, uint64_t data_start, const glq_st_entry *e, glq_tensor *t) {
  size_t off = (size_t)(data_start + e->begin), nb = (size_t)(e->end - e->begin);
  const char *src = (const char *)st->data + off;
  if (nb == 0 || (uintptr_t)src % glq_dtype_size(e->dtype) == 0)
    return glq_tensor_view(st, off, e->dtype, e->ndim, e->shape, t);
  int rc = glq_tensor_new(e->dtype, e->ndim, e->shape, t);
  if (!rc) memcpy(glq_tensor_data(t), src, nb);
  return rc;
}

int glq_safetensors_from_storage(glq_storage *st, const char *fname, glq_safetensors **out) {
  glq_safetensors *s;
  int rc = glq_safetensors_parse(st->data, st->nbytes, st->nbytes, fname, &s);
  *out = NULL;
  if (rc) return rc;
  s->tensors = calloc(s->n + 1, sizeof *s->tensors);
  if (!s->tensors) rc = glq_error(GLQ_ENOMEM, "%s: out of memory", fname);
  for (size_t i = 0; i < s->n && !rc; i++)
    if ((rc = entry_tensor(st, s->data_start, &s->entries[i], &s->tensors[i])))
      glq_error_prefix("%s: tensor '%s'", fname, s->entries[i].name);
  if (rc) {
    glq_safetensors_free(s);
    return rc;
  }
  *out = s;
  return 0;
}

/* Size of a regular file, with messages for a missing file or a directory. */
static int regular_file_size(const char *path, uint64_t *size) {
  struct stat sb;
  if (stat(path, &sb) != 0) return glq_error(GLQ_EIO, "%s: cannot open: %s", path, strerror(errno));
  if (!S_ISREG(sb.st_mode)) return glq_error(GLQ_EIO, "%s: not a regular file", path);
  *size = (uint64_t)sb.st_size;
  return 0;
}

int glq_safetensors_load(const char *path, glq_safetensors **out) {
  *out = NULL;
  uint64_t size;
  int rc = regular_file_size(path, &size);
  if (!rc) rc = check_size(path, size);
  if (rc) return rc;
  glq_storage *st;
  if ((rc = glq_storage_mmap(path, &st))) return rc;
  rc = glq_safetensors_from_storage(st, path, out);
  glq_storage_release(st);  /* the views hold their own references */
  return rc;
}

static int read_exact(FILE *f, void *buf, size_t n, const char *path) {
  if (fread(buf, 1, n, f) != n)
    return glq_error(GLQ_EIO, "%s: read failed: %s", path, ferror(f) ? strerror(errno) : "unexpected end of file");
  return 0;
}

int glq_safetensors_info(const char *path, glq_safetensors **out) {
  *out = NULL;
  uint64_t size, hlen;
  unsigned char b8[8];
  int rc = regular_file_size(path, &size);
  if (!rc) rc = check_size(path, size);
  if (rc) return rc;
  FILE *f = fopen(path, "rb");
  if (!f) return glq_error(GLQ_EIO, "%s: cannot open: %s", path, strerror(errno));
  char *buf = NULL;
  if (!(rc = read_exact(f, b8, 8, path)) && !(rc = header_length(b8, size, path, &hlen))) {
    if (!(buf = malloc((size_t)hlen + 8))) rc = glq_error(GLQ_ENOMEM, "%s: out of memory", path);
    else {
      memcpy(buf, b8, 8);
      rc = read_exact(f, buf + 8, (size_t)hlen, path);
    }
  }
  fclose(f);
  if (!rc) rc = glq_safetensors_parse(buf, (size_t)hlen + 8, size, path, out);
  free(buf);
  return rc;
}

void glq_safetensors_free(glq_safetensors *s) {
  if (!s) return;
  for (size_t i = 0; i < s->n; i++) {
    free(s->entries[i].name);
    if (s->tensors && s->tensors[i].st) glq_tensor_release(&s->tensors[i]);
  }
  for (size_t i = 0; i < 2 * s->n_meta; i++) free(s->meta[i]);
  free(s->entries);
  free(s->tensors);
  free(s->meta);
  free(s);
}

/* ---- sharded checkpoints ---- */

static int cmp_str(const void *a, const void *b) { return strcmp(*(const char *const *)a, *(const char *const *)b); }

static int cmp_entry_name(const void *a, const void *b) {
  return strcmp((*(const glq_st_entry *const *)a)->name, (*(const glq_st_entry *const *)b)->name);
}

static char *join_path(const char *dir, const char *name) {
  size_t a = strlen(dir), b = strlen(name);
  char *p = malloc(a + b + 2);
  if (p) {
    memcpy(p, dir, a);
    p[a] = '/';
    memcpy(p + a + 1, name, b + 1);
  }
  return p;
}

/* Shard names come from the file; keep them inside the checkpoint's directory. */
static int check_shard_name(const glq_json *v, const char *index) {
  if (v->type != GLQ_JSON_STR)
    return glq_error(GLQ_EFORMAT, "%s: weight_map entry '%s' is a JSON %s, not a file name", index, v->key,
                     glq_json_type_name(v->type));
  const char *s = v->str;
  int escapes = s[0] == '/' || strcmp(s, "..") == 0 || strncmp(s, "../", 3) == 0 || strstr(s, "/../") ||
                (v->len >= 3 && strcmp(s + v->len - 3, "/..") == 0);
  if (v->len == 0 || strlen(s) != v->len || strlen(v->key) != v->keylen || escapes)
    return glq_error(GLQ_EFORMAT, "%s: weight_map entry '%s' names an invalid shard file '%s' (must be a "
                     "relative path inside the checkpoint directory)", index, v->key, s);
  return 0;
}

static int read_whole(const char *path, char **buf, size_t *len) {
  uint64_t size;
  int rc = regular_file_size(path, &size);
  if (rc) return rc;
  if (size > GLQ_SAFETENSORS_MAX_HEADER)
    return glq_error(GLQ_EFORMAT, "%s: index file is absurdly large (%" PRIu64 " bytes)", path, size);
  FILE *f = fopen(path, "rb");
  if (!f) return glq_error(GLQ_EIO, "%s: cannot open: %s", path, strerror(errno));
  *buf = malloc((size_t)size + 1);
  if (!*buf) rc = glq_error(GLQ_ENOMEM, "%s: out of memory", path);
  else rc = read_exact(f, *buf, (size_t)size, path);
  fclose(f);
  *len = (size_t)size;
  return rc;
}

/* Index "metadata": strings as they are, integers as decimal text, other values skipped. */
static int index_metadata(const glq_json *m, const char *index, glq_safetensors *s) {
  if (!m) return 0;
  if (m->type != GLQ_JSON_OBJ)
    return glq_error(GLQ_EFORMAT, "%s: \"metadata\" is a JSON %s, not an object", index, glq_json_type_name(m->type));
  if (!(s->meta = calloc(2 * m->n + 1, sizeof *s->meta))) return glq_error(GLQ_ENOMEM, "%s: out of memory", index);
  for (size_t k = 0; k < m->n; k++) {
    const glq_json *v = &m->items[k];
    char num[32];
    const char *val = v->type == GLQ_JSON_STR ? v->str : NULL;
    if (v->type == GLQ_JSON_INT) {
      snprintf(num, sizeof num, "%" PRId64, v->i);
      val = num;
    }
    if (!val) continue;
    char **kv = &s->meta[2 * s->n_meta];
    kv[0] = strdup(v->key);
    kv[1] = strdup(val);
    s->n_meta++;
    if (!kv[0] || !kv[1]) return glq_error(GLQ_ENOMEM, "%s: out of memory", index);
  }
  return 0;
}

typedef struct {
  const glq_json *wm;     /* weight_map */
  const char **files;     /* sorted unique shard names */
  size_t nfiles;
  glq_safetensors **shards;
  const glq_st_entry ***by_name; /* per shard: entries sorted by name */
} index_set;

static int open_shards(index_set *x, const char *dir, const char *index) {
  x->files = malloc((x->wm->n + 1) * sizeof *x->files);
  if (!x->files) return glq_error(GLQ_ENOMEM, "%s: out of memory", index);
  for (size_t k = 0; k < x->wm->n; k++) x->files[k] = x->wm->items[k].str;
  qsort(x->files, x->wm->n, sizeof *x->files, cmp_str);
  for (size_t k = 0; k < x->wm->n; k++)
    if (x->nfiles == 0 || strcmp(x->files[x->nfiles - 1], x->files[k]) != 0) x->files[x->nfiles++] = x->files[k];
  x->shards = calloc(x->nfiles + 1, sizeof *x->shards);
  x->by_name = calloc(x->nfiles + 1, sizeof *x->by_name);
  if (!x->shards || !x->by_name) return glq_error(GLQ_ENOMEM, "%s: out of memory", index);
  for (size_t f = 0; f < x->nfiles; f++) {
    char *p = join_path(dir, x->files[f]);
    if (!p) return glq_error(GLQ_ENOMEM, "%s: out of memory", index);
    int rc = glq_safetensors_load(p, &x->shards[f]);
    free(p);
    if (rc) {
      glq_error_prefix("%s: shard '%s'", index, x->files[f]);
      return rc;
    }
    glq_safetensors *sh = x->shards[f];
    if (!(x->by_name[f] = malloc((sh->n + 1) * sizeof **x->by_name)))
      return glq_error(GLQ_ENOMEM, "%s: out of memory", index);
    for (size_t i = 0; i < sh->n; i++) x->by_name[f][i] = &sh->entries[i];
    qsort(x->by_name[f], sh->n, sizeof **x->by_name, cmp_entry_name);
  }
  return 0;
}

/* Take weight_map's tensors out of the shards into s (new references). */
static int collect(const index_set *x, const char *index, glq_safetensors *s) {
  s->entries = calloc(x->wm->n + 1, sizeof *s->entries);
  s->tensors = calloc(x->wm->n + 1, sizeof *s->tensors);
  if (!s->entries || !s->tensors) return glq_error(GLQ_ENOMEM, "%s: out of memory", index);
  for (size_t k = 0; k < x->wm->n; k++) {
    const glq_json *v = &x->wm->items[k];
    const char *file = v->str;
    const char **fp = bsearch(&file, x->files, x->nfiles, sizeof *x->files, cmp_str);
    size_t f = (size_t)(fp - x->files);
    glq_st_entry key = {.name = (char *)v->key};
    const glq_st_entry *kp = &key;
    const glq_st_entry **hit = bsearch(&kp, x->by_name[f], x->shards[f]->n, sizeof kp, cmp_entry_name);
    if (!hit)
      return glq_error(GLQ_EFORMAT, "%s: tensor '%s' listed in weight_map is not in shard '%s'", index, v->key, file);
    size_t i = (size_t)(*hit - x->shards[f]->entries);
    s->entries[k] = **hit;
    if (!(s->entries[k].name = strdup(v->key))) return glq_error(GLQ_ENOMEM, "%s: out of memory", index);
    s->n = k + 1;
    s->tensors[k] = x->shards[f]->tensors[i];
    glq_tensor_retain(&s->tensors[k]);
  }
  return 0;
}

int glq_safetensors_load_index(const char *path, glq_safetensors **out) {
  *out = NULL;
  struct stat sb;
  int is_dir = stat(path, &sb) == 0 && S_ISDIR(sb.st_mode);
  char *index = is_dir ? join_path(path, INDEX_NAME) : strdup(path);
  const char *slash = strrchr(path, '/');
  char *dir = is_dir ? strdup(path) : slash ? dup_bytes(path, (size_t)(slash - path) + (slash == path)) : strdup(".");
  char *text = NULL;
  size_t len = 0;
  glq_json_doc *doc = NULL;
  index_set x = {0};
  glq_safetensors *s = calloc(1, sizeof *s);
  int rc = !index || !dir || !s ? glq_error(GLQ_ENOMEM, "%s: out of memory", path) : 0;
  if (!rc) rc = read_whole(index, &text, &len);
  if (!rc && (rc = glq_json_parse(text, len, HEADER_DEPTH, &doc))) glq_error_prefix("%s: malformed JSON", index);
  if (!rc) {
    const glq_json *root = glq_json_root(doc);
    x.wm = glq_json_get(root, "weight_map");
    if (root->type != GLQ_JSON_OBJ) rc = glq_error(GLQ_EFORMAT, "%s: index is a JSON %s, not an object", index,
                                                    glq_json_type_name(root->type));
    else if (!x.wm || x.wm->type != GLQ_JSON_OBJ)
      rc = glq_error(GLQ_EFORMAT, "%s: missing \"weight_map\" object (tensor name -> shard file)", index);
    for (size_t k = 0; !rc && k < x.wm->n; k++) rc = check_shard_name(&x.wm->items[k], index);
    if (!rc) rc = index_metadata(glq_json_get(root, "metadata"), index, s);
  }
  if (!rc) rc = open_shards(&x, dir, index);
  if (!rc) rc = collect(&x, index, s);
  for (size_t f = 0; f < x.nfiles; f++) {
    glq_safetensors_free(x.shards ? x.shards[f] : NULL);
    free(x.by_name ? x.by_name[f] : NULL);
  }
  free(x.shards);
  free(x.by_name);
  free(x.files);
  glq_json_free(doc);
  free(text);
  free(index);
  free(dir);
  if (rc) {
    glq_safetensors_free(s);
    return rc;
  }
  *out = s;
  return 0;
}

/* ---- writing ---- */

typedef struct {
  const char *name;
  const glq_tensor *t;
  size_t esize;
  uint64_t nbytes;
} save_item;

static int cmp_item_name(const void *a, const void *b) {
  return strcmp(((const save_item *)a)->name, ((const save_item *)b)->name);
}

static int cmp_item_layout(const void *a, const void *b) {
  const save_item *x = a, *y = b;
  if (x->esize != y->esize) return x->esize > y->esize ? -1 : 1;
  return strcmp(x->name, y->name);
}

static int check_items(const char *path, save_item *it, size_t n, const char *const *names, const glq_tensor *tensors) {
  for (size_t i = 0; i < n; i++) {
    const glq_tensor *t = &tensors[i];
    if (!names[i]) return glq_error(GLQ_EINVAL, "%s: tensor %zu has no name", path, i);
    if (strcmp(names[i], "__metadata__") == 0)
      return glq_error(GLQ_EINVAL, "%s: '__metadata__' is reserved and cannot name a tensor", path);
    if (!t->st || (unsigned)t->dtype >= GLQ_NDTYPES || t->ndim < 0 || t->ndim > GLQ_MAX_DIMS)
      return glq_error(GLQ_EINVAL, "%s: tensor '%s' is empty or invalid", path, names[i]);
    if (t->st->kind == GLQ_STORAGE_CUDA)
      return glq_error(GLQ_EINVAL, "%s: tensor '%s' is on the GPU; copy it to the CPU before saving", path, names[i]);
    it[i] = (save_item){names[i], t, glq_dtype_size(t->dtype), tensor_bytes(t->dtype, t->ndim, t->shape)};
  }
  qsort(it, n, sizeof *it, cmp_item_name);
  for (size_t i = 1; i < n; i++)
    if (strcmp(it[i - 1].name, it[i].name) == 0)
      return glq_error(GLQ_EINVAL, "%s: duplicate tensor name '%s'", path, it[i].name);
  qsort(it, n, sizeof *it, cmp_item_layout);
  return 0;
}

static int cmp_pair_key(const void *a, const void *b) {
  return strcmp((*(const char *const *const *)a)[0], (*(const char *const *const *)b)[0]);
}

/* Metadata goes out sorted by key so that the same inputs always give the same bytes. */
static int build_header(const char *path, const save_item *it, size_t n, size_t n_meta, const char *const *meta,
                        glq_json_out *o) {
  const char *const **pairs = malloc((n_meta + 1) * sizeof *pairs);
  if (!pairs) return glq_error(GLQ_ENOMEM, "%s: out of memory", path);
  int rc = 0;
  for (size_t k = 0; k < n_meta && !rc; k++) {
    if (!meta[2 * k] || !meta[2 * k + 1]) rc = glq_error(GLQ_EINVAL, "%s: metadata pair %zu has a NULL key or value", path, k);
    pairs[k] = meta + 2 * k;
  }
  if (!rc) {
    qsort(pairs, n_meta, sizeof *pairs, cmp_pair_key);
    for (size_t k = 1; k < n_meta && !rc; k++)
      if (strcmp(pairs[k - 1][0], pairs[k][0]) == 0) rc = glq_error(GLQ_EINVAL, "%s: duplicate metadata key '%s'", path, pairs[k][0]);
  }
  glq_json_out_raw(o, "{", 1);
  if (n_meta && !rc) {
    glq_json_out_raw(o, "\"__metadata__\":{", 16);
    for (size_t k = 0; k < n_meta; k++) {
      if (k) glq_json_out_raw(o, ",", 1);
      glq_json_out_str(o, pairs[k][0], strlen(pairs[k][0]));
      glq_json_out_raw(o, ":", 1);
      glq_json_out_str(o, pairs[k][1], strlen(pairs[k][1]));
    }
    glq_json_out_raw(o, "}", 1);
  }
  free(pairs);
  if (rc) return rc;
  uint64_t pos = 0;
  for (size_t i = 0; i < n; i++) {
    const glq_tensor *t = it[i].t;
    if (n_meta || i) glq_json_out_raw(o, ",", 1);
    glq_json_out_str(o, it[i].name, strlen(it[i].name));
    glq_json_out_fmt(o, ":{\"dtype\":\"%s\",\"shape\":[", st_dtype_names[t->dtype]);
    for (int d = 0; d < t->ndim; d++) glq_json_out_fmt(o, d ? ",%" PRId64 : "%" PRId64, t->shape[d]);
    glq_json_out_fmt(o, "],\"data_offsets\":[%" PRIu64 ",%" PRIu64 "]}", pos, pos + it[i].nbytes);
    pos += it[i].nbytes;
  }
  glq_json_out_raw(o, "}", 1);
  while (!o->status && o->len % 8) glq_json_out_raw(o, " ", 1);
  if (o->status) glq_error_prefix("%s: header", path);
  return o->status;
}

static int write_items(glq_atomic_file *f, const save_item *it, size_t n, const char *path) {
  for (size_t i = 0; i < n; i++) {
    if (it[i].nbytes == 0) continue;
    glq_tensor c;
    int rc = glq_tensor_contiguous(it[i].t, &c);
    if (!rc) {
      rc = glq_atomic_write(f, glq_tensor_data(&c), (size_t)it[i].nbytes);
      glq_tensor_release(&c);
    }
    if (rc) {
      glq_error_prefix("%s: tensor '%s'", path, it[i].name);
      return rc;
    }
  }
  return 0;
}

int glq_safetensors_save(const char *path, size_t n, const char *const *names, const glq_tensor *tensors,
                         size_t n_meta, const char *const *meta) {
  save_item *it = malloc((n + 1) * sizeof *it);
  glq_json_out o = {0};
  if (!it) return glq_error(GLQ_ENOMEM, "%s: out of memory", path);
  int rc = check_items(path, it, n, names, tensors);
  if (!rc) rc = build_header(path, it, n, n_meta, meta, &o);
  glq_atomic_file *f = NULL;
  if (!rc) rc = glq_atomic_open(path, &f);
  if (!rc) {
    unsigned char b8[8];
    for (int i = 0; i < 8; i++) b8[i] = (unsigned char)((uint64_t)o.len >> (8 * i));
    rc = glq_atomic_write(f, b8, 8);
    if (!rc) rc = glq_atomic_write(f, o.data, o.len);
    if (!rc) rc = write_items(f, it, n, path);
    if (rc) glq_atomic_abort(f);
    else rc = glq_atomic_commit(f);
  }
  glq_json_out_free(&o);
  free(it);
  return rc;
}
