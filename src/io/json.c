#include "json.h"
#include "core/error.h"
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* All values and strings of a document live in a chain of arena blocks, freed together. */
typedef struct arena_block {
  struct arena_block *next;
  size_t used, cap;
  max_align_t data[];
} arena_block;

struct glq_json_doc {
  arena_block *blocks;
  glq_json root;
};

typedef struct {
  const char *s;
  size_t len, pos;
  int depth, max_depth;
  glq_json_doc *doc;
  glq_json *stack;      /* children of the open arrays/objects, innermost last */
  size_t sn, scap;
} parser;

enum { ARENA_BLOCK = 64 * 1024, MAX_DEPTH_LIMIT = 1024 };

static void *arena_alloc(glq_json_doc *doc, size_t n) {
  const size_t align = sizeof(max_align_t);
  n = n ? (n + align - 1) / align * align : align;
  arena_block *b = doc->blocks;
  if (!b || b->cap - b->used < n) {
    size_t cap = n > ARENA_BLOCK ? n : ARENA_BLOCK;
    b = malloc(sizeof *b + cap);
    if (!b) {
      glq_error(GLQ_ENOMEM, "JSON: out of memory (%zu bytes)", cap);
      return NULL;
    }
    b->used = 0;
    b->cap = cap;
    b->next = doc->blocks;
    doc->blocks = b;
  }
  void *p = (char *)b->data + b->used;
  b->used += n;
  return p;
}

static int fail(size_t at, const char *what) {
  return glq_error(GLQ_EFORMAT, "at byte %zu: %s", at, what);
}

/* Length of the valid UTF-8 sequence starting at s (n bytes available), 0 if invalid. */
static size_t utf8_seq_len(const unsigned char *s, size_t n) {
  unsigned c = s[0];
  if (c < 0x80) return 1;
  if (c < 0xC2 || c > 0xF4) return 0;
  size_t k = c < 0xE0 ? 2 : c < 0xF0 ? 3 : 4;
  if (n < k) return 0;
  for (size_t i = 1; i < k; i++)
    if ((s[i] & 0xC0) != 0x80) return 0;
  if (c == 0xE0 && s[1] < 0xA0) return 0;  /* overlong */
  if (c == 0xED && s[1] >= 0xA0) return 0; /* UTF-16 surrogate */
  if (c == 0xF0 && s[1] < 0x90) return 0;  /* overlong */
  if (c == 0xF4 && s[1] >= 0x90) return 0; /* above U+10FFFF */
  return k;
}

static void skip_ws(parser *p) {
  while (p->pos < p->len) {
    char c = p->s[p->pos];
    if (c != ' ' && c != '\t' && c != '\n' && c != '\r') break;
    p->pos++;
  }
}

static int hex4(const char *s, unsigned *out) {
  unsigned v = 0;
  for (int i = 0; i < 4; i++) {
    char c = s[i];
    unsigned d;
    if (c >= '0' && c <= '9') d = (unsigned)(c - '0');
    else if (c >= 'a' && c <= 'f') d = (unsigned)(c - 'a' + 10);
    else if (c >= 'A' && c <= 'F') d = (unsigned)(c - 'A' + 10);
    else return -1;
    v = v * 16 + d;
  }
  *out = v;
  return 0;
}

static size_t put_utf8(char *d, unsigned cp) {
  if (cp < 0x80) { d[0] = (char)cp; return 1; }
  if (cp < 0x800) {
    d[0] = (char)(0xC0 | (cp >> 6));
    d[1] = (char)(0x80 | (cp & 0x3F));
    return 2;
  }
  if (cp < 0x10000) {
    d[0] = (char)(0xE0 | (cp >> 12));
    d[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
    d[2] = (char)(0x80 | (cp & 0x3F));
    return 3;
  }
  d[0] = (char)(0xF0 | (cp >> 18));
  d[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
  d[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
  d[3] = (char)(0x80 | (cp & 0x3F));
  return 4;
}

/* Decode the \uXXXX escape (possibly a surrogate pair) at s[i] ('\\'); end is the closing quote. */
static int unicode_escape(const parser *p, size_t *i, size_t end, unsigned *cp) {
  const char *s = p->s;
  unsigned hi, lo;
  if (*i + 6 > end || hex4(s + *i + 2, &hi)) return fail(*i, "bad \\u escape (need 4 hex digits)");
  if (hi >= 0xDC00 && hi <= 0xDFFF) return fail(*i, "unpaired UTF-16 low surrogate in \\u escape");
  if (hi < 0xD800 || hi > 0xDBFF) {
    *cp = hi;
    *i += 6;
    return 0;
  }
  if (*i + 12 > end || s[*i + 6] != '\\' || s[*i + 7] != 'u' || hex4(s + *i + 8, &lo) ||
      lo < 0xDC00 || lo > 0xDFFF)
    return fail(*i, "unpaired UTF-16 high surrogate in \\u escape");
  *cp = 0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00);
  *i += 12;
  return 0;
}

/* p->pos is at the opening quote. */
static int parse_string(parser *p, const char **out, size_t *outlen) {
  const char *s = p->s;
  size_t start = p->pos, end = start + 1;
  while (end < p->len && s[end] != '"') end += s[end] == '\\' ? 2 : 1;
  if (end >= p->len) return fail(start, "unterminated string");
  char *d = arena_alloc(p->doc, end - start);  /* decoded text is never longer than raw */
  if (!d) return GLQ_ENOMEM;
  size_t n = 0, i = start + 1;
  while (i < end) {
    unsigned char c = (unsigned char)s[i];
    if (c < 0x20) return fail(i, "unescaped control character in string");
    if (c >= 0x80) {
      size_t k = utf8_seq_len((const unsigned char *)s + i, end - i);
      if (!k) return fail(i, "invalid UTF-8 in string");
      memcpy(d + n, s + i, k);
      n += k;
      i += k;
      continue;
    }
    if (c != '\\') {
      d[n++] = (char)c;
      i++;
      continue;
    }
    char e = s[i + 1];  /* exists: the scan above never ends right after a backslash */
    char r = e == '"' || e == '\\' || e == '/' ? e : e == 'b' ? '\b' : e == 'f' ? '\f'
           : e == 'n' ? '\n' : e == 'r' ? '\r' : e == 't' ? '\t' : 0;
    if (r) {
      d[n++] = r;
      i += 2;
    } else if (e == 'u') {
      unsigned cp = 0;
      int rc = unicode_escape(p, &i, end, &cp);
      if (rc) return rc;
      n += put_utf8(d + n, cp);
    } else {
      return fail(i, "invalid escape sequence in string");
    }
  }
  d[n] = 0;
  *out = d;
  *outlen = n;
  p->pos = end + 1;
  return 0;
}

static int is_digit(char c) { return c >= '0' && c <= '9'; }

static int parse_number(parser *p, glq_json *v) {
  const char *s = p->s;
  size_t start = p->pos, i = start;
  int neg = 0, is_int = 1;
  if (s[i] == '-') { neg = 1; i++; }
  if (i >= p->len || !is_digit(s[i])) return fail(start, "invalid number");
  if (s[i] == '0') i++;
  else while (i < p->len && is_digit(s[i])) i++;
  if (i < p->len && s[i] == '.') {
    is_int = 0;
    if (++i >= p->len || !is_digit(s[i])) return fail(start, "invalid number (digit expected after '.')");
    while (i < p->len && is_digit(s[i])) i++;
  }
  if (i < p->len && (s[i] == 'e' || s[i] == 'E')) {
    is_int = 0;
    i++;
    if (i < p->len && (s[i] == '+' || s[i] == '-')) i++;
    if (i >= p->len || !is_digit(s[i])) return fail(start, "invalid number (digit expected in exponent)");
    while (i < p->len && is_digit(s[i])) i++;
  }
  p->pos = i;
  if (is_int) {
    uint64_t acc = 0, lim = neg ? (uint64_t)INT64_MAX + 1 : (uint64_t)INT64_MAX;
    size_t k = start + (size_t)neg;
    for (; k < i; k++) {
      unsigned d = (unsigned)(s[k] - '0');
      if (acc > (lim - d) / 10) break;
      acc = acc * 10 + d;
    }
    if (k == i) {  /* fits int64: keep it exact */
      v->type = GLQ_JSON_INT;
      v->i = neg ? (acc == (uint64_t)INT64_MAX + 1 ? INT64_MIN : -(int64_t)acc) : (int64_t)acc;
      return 0;
    }
  }
  /* strtod needs a NUL-terminated copy; it is correctly rounded in glibc */
  char *tmp = malloc(i - start + 1);
  if (!tmp) return glq_error(GLQ_ENOMEM, "JSON: out of memory");
  memcpy(tmp, s + start, i - start);
  tmp[i - start] = 0;
  char *endp;
  errno = 0;
  double d = strtod(tmp, &endp);
  int ok = endp == tmp + (i - start);
  free(tmp);
  if (!ok) return fail(start, "number not understood by strtod (check the C locale)");
  if (isinf(d)) return fail(start, "number out of the range of a double");
  v->type = GLQ_JSON_NUM;
  v->num = d;
  return 0;
}

static int literal(parser *p, const char *word, glq_json_type t, int64_t val, glq_json *v) {
  size_t n = strlen(word);
  if (p->len - p->pos < n || memcmp(p->s + p->pos, word, n) != 0)
    return fail(p->pos, "invalid literal (expected a value)");
  p->pos += n;
  v->type = t;
  v->i = val;
  return 0;
}

static int push_child(parser *p, const glq_json *v) {
  if (p->sn == p->scap) {
    size_t cap = p->scap ? p->scap * 2 : 64;
    glq_json *ns = realloc(p->stack, cap * sizeof *ns);
    if (!ns) return glq_error(GLQ_ENOMEM, "JSON: out of memory");
    p->stack = ns;
    p->scap = cap;
  }
  p->stack[p->sn++] = *v;
  return 0;
}

static int key_cmp(const void *a, const void *b) {
  const glq_json *x = *(const glq_json *const *)a, *y = *(const glq_json *const *)b;
  size_t n = x->keylen < y->keylen ? x->keylen : y->keylen;
  int c = memcmp(x->key, y->key, n);
  if (c) return c;
  return x->keylen < y->keylen ? -1 : x->keylen > y->keylen;
}

/* Ambiguous documents are refused: with duplicate keys, readers disagree on which value wins. */
static int check_duplicates(const glq_json *items, size_t n) {
  if (n < 2) return 0;
  const glq_json **sorted = malloc(n * sizeof *sorted);
  if (!sorted) return glq_error(GLQ_ENOMEM, "JSON: out of memory");
  for (size_t i = 0; i < n; i++) sorted[i] = &items[i];
  qsort(sorted, n, sizeof *sorted, key_cmp);
  int rc = 0;
  for (size_t i = 1; i < n && !rc; i++) {
    if (key_cmp(&sorted[i - 1], &sorted[i]) == 0) {
      const glq_json *dup = sorted[i - 1]->offset > sorted[i]->offset ? sorted[i - 1] : sorted[i];
      rc = glq_error(GLQ_EFORMAT, "at byte %zu: duplicate object key \"%.*s\"", dup->offset,
                     (int)(dup->keylen > 80 ? 80 : dup->keylen), dup->key);
    }
  }
  free(sorted);
  return rc;
}

static int parse_value(parser *p, glq_json *v);

/* p->pos is at '[' or '{'. */
static int parse_container(parser *p, glq_json *v) {
  int is_obj = p->s[p->pos] == '{';
  char close = is_obj ? '}' : ']';
  size_t base = p->sn;
  int rc = 0;
  if (++p->depth > p->max_depth) {
    char msg[64];
    snprintf(msg, sizeof msg, "nesting deeper than %d levels", p->max_depth);
    return fail(p->pos, msg);
  }
  p->pos++;
  skip_ws(p);
  if (p->pos < p->len && p->s[p->pos] == close) {
    p->pos++;
  } else {
    for (;;) {
      glq_json child;
      memset(&child, 0, sizeof child);
      if (is_obj) {
        skip_ws(p);
        if (p->pos >= p->len || p->s[p->pos] != '"') { rc = fail(p->pos, "expected a string key"); break; }
        if ((rc = parse_string(p, &child.key, &child.keylen))) break;
        skip_ws(p);
        if (p->pos >= p->len || p->s[p->pos] != ':') { rc = fail(p->pos, "expected ':' after object key"); break; }
        p->pos++;
      }
      const char *key = child.key;
      size_t keylen = child.keylen;
      if ((rc = parse_value(p, &child))) break;
      child.key = key;
      child.keylen = keylen;
      if ((rc = push_child(p, &child))) break;
      skip_ws(p);
      if (p->pos < p->len && p->s[p->pos] == ',') { p->pos++; continue; }
      if (p->pos < p->len && p->s[p->pos] == close) { p->pos++; break; }
      rc = fail(p->pos, is_obj ? "expected ',' or '}' in object" : "expected ',' or ']' in array");
      break;
    }
  }
  if (!rc) {
    size_t n = p->sn - base;
    glq_json *items = n ? arena_alloc(p->doc, n * sizeof *items) : NULL;
    if (n && !items) rc = GLQ_ENOMEM;
    else {
      if (n) memcpy(items, p->stack + base, n * sizeof *items);
      v->type = is_obj ? GLQ_JSON_OBJ : GLQ_JSON_ARR;
      v->items = items;
      v->n = n;
      if (is_obj) rc = check_duplicates(items, n);
    }
  }
  p->sn = base;
  p->depth--;
  return rc;
}

static int parse_value(parser *p, glq_json *v) {
  skip_ws(p);
  if (p->pos >= p->len) return fail(p->pos, "unexpected end of text (expected a value)");
  v->offset = p->pos;
  v->key = NULL;
  v->keylen = 0;
  switch (p->s[p->pos]) {
  case '{': case '[': return parse_container(p, v);
  case '"': v->type = GLQ_JSON_STR; return parse_string(p, &v->str, &v->len);
  case 't': return literal(p, "true", GLQ_JSON_BOOL, 1, v);
  case 'f': return literal(p, "false", GLQ_JSON_BOOL, 0, v);
  case 'n': return literal(p, "null", GLQ_JSON_NULL, 0, v);
  default:
    if (p->s[p->pos] == '-' || is_digit(p->s[p->pos])) return parse_number(p, v);
    return fail(p->pos, "expected a value");
  }
}

int glq_json_parse(const char *text, size_t len, int max_depth, glq_json_doc **out) {
  *out = NULL;
  if (!text && len) return glq_error(GLQ_EINVAL, "glq_json_parse: NULL text");
  if (max_depth < 1 || max_depth > MAX_DEPTH_LIMIT)
    return glq_error(GLQ_EINVAL, "glq_json_parse: max_depth %d outside 1..%d", max_depth, MAX_DEPTH_LIMIT);
  glq_json_doc *doc = calloc(1, sizeof *doc);
  if (!doc) return glq_error(GLQ_ENOMEM, "JSON: out of memory");
  parser p = {.s = text, .len = len, .max_depth = max_depth, .doc = doc};
  int rc = parse_value(&p, &doc->root);
  if (!rc) {
    skip_ws(&p);
    if (p.pos != len) rc = fail(p.pos, "unexpected text after the top-level value");
  }
  free(p.stack);
  if (rc) {
    glq_json_free(doc);
    return rc;
  }
  *out = doc;
  return 0;
}

const glq_json *glq_json_root(const glq_json_doc *doc) { return &doc->root; }

void glq_json_free(glq_json_doc *doc) {
  if (!doc) return;
  for (arena_block *b = doc->blocks, *next; b; b = next) {
    next = b->next;
    free(b);
  }
  free(doc);
}

const glq_json *glq_json_get(const glq_json *obj, const char *key) {
  if (!obj || obj->type != GLQ_JSON_OBJ) return NULL;
  size_t n = strlen(key);
  for (size_t i = 0; i < obj->n; i++)
    if (obj->items[i].keylen == n && memcmp(obj->items[i].key, key, n) == 0) return &obj->items[i];
  return NULL;
}

const char *glq_json_type_name(glq_json_type t) {
  static const char *names[] = {"null", "boolean", "integer", "number", "string", "array", "object"};
  return (unsigned)t < sizeof names / sizeof names[0] ? names[t] : "?";
}

/* ---- writing ---- */

static int out_reserve(glq_json_out *o, size_t extra) {
  if (o->status) return o->status;
  if (extra > SIZE_MAX - o->len - 1) return o->status = glq_error(GLQ_ENOMEM, "JSON output too large");
  size_t need = o->len + extra + 1;
  if (need <= o->cap) return 0;
  size_t cap = o->cap ? o->cap : 256;
  while (cap < need) cap = cap > SIZE_MAX / 2 ? need : cap * 2;
  char *d = realloc(o->data, cap);
  if (!d) return o->status = glq_error(GLQ_ENOMEM, "JSON output: out of memory (%zu bytes)", cap);
  o->data = d;
  o->cap = cap;
  return 0;
}

void glq_json_out_raw(glq_json_out *o, const char *s, size_t n) {
  if (out_reserve(o, n)) return;
  if (n) memcpy(o->data + o->len, s, n);
  o->len += n;
  o->data[o->len] = 0;
}

void glq_json_out_fmt(glq_json_out *o, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(NULL, 0, fmt, ap);
  va_end(ap);
  if (n < 0) {
    if (!o->status) o->status = glq_error(GLQ_EINVAL, "JSON output: bad format \"%s\"", fmt);
    return;
  }
  if (out_reserve(o, (size_t)n)) return;
  va_start(ap, fmt);
  vsnprintf(o->data + o->len, (size_t)n + 1, fmt, ap);
  va_end(ap);
  o->len += (size_t)n;
}

void glq_json_out_str(glq_json_out *o, const char *s, size_t n) {
  if (o->status) return;
  const unsigned char *u = (const unsigned char *)s;
  for (size_t i = 0; i < n;) {
    size_t k = utf8_seq_len(u + i, n - i);
    if (!k) {
      o->status = glq_error(GLQ_EINVAL, "string \"%.*s\" is not valid UTF-8 (byte %zu)", (int)(n > 80 ? 80 : n), s, i);
      return;
    }
    i += k;
  }
  glq_json_out_raw(o, "\"", 1);
  size_t run = 0;  /* start of the pending run of bytes that need no escaping */
  for (size_t i = 0; i < n; i++) {
    unsigned char c = u[i];
    if (c >= 0x20 && c != '"' && c != '\\') continue;
    glq_json_out_raw(o, s + run, i - run);
    run = i + 1;
    switch (c) {
    case '"': glq_json_out_raw(o, "\\\"", 2); break;
    case '\\': glq_json_out_raw(o, "\\\\", 2); break;
    case '\n': glq_json_out_raw(o, "\\n", 2); break;
    case '\r': glq_json_out_raw(o, "\\r", 2); break;
    case '\t': glq_json_out_raw(o, "\\t", 2); break;
    case '\b': glq_json_out_raw(o, "\\b", 2); break;
    case '\f': glq_json_out_raw(o, "\\f", 2); break;
    default: glq_json_out_fmt(o, "\\u%04x", c); break;
    }
  }
  glq_json_out_raw(o, s + run, n - run);
  glq_json_out_raw(o, "\"", 1);
}

void glq_json_out_free(glq_json_out *o) {
  free(o->data);
  o->data = NULL;
  o->len = o->cap = 0;
  o->status = 0;
}
