#define PCRE2_CODE_UNIT_WIDTH 8
#include "tokenizer.h"
#include <pcre2.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include "../core/error.h"

/* ---- a string -> int32 hash map over keys owned elsewhere ---- */

typedef struct {
  const char *key;
  uint32_t len;
  int32_t val;
} slot;

typedef struct {
  slot *slots;
  size_t mask;
} strmap;

static uint64_t hash_bytes(const char *p, size_t n) {
  uint64_t h = 1469598103934665603ull; /* FNV-1a */
  for (size_t i = 0; i < n; i++) h = (h ^ (uint8_t)p[i]) * 1099511628211ull;
  return h;
}

static int map_init(strmap *m, size_t n) {
  size_t cap = 16;
  while (cap < 2 * n) cap *= 2;
  m->slots = calloc(cap, sizeof *m->slots);
  m->mask = cap - 1;
  return m->slots ? GLQ_OK : glq_error(GLQ_ENOMEM, "tokenizer: out of memory");
}

static slot *map_find(const strmap *m, const char *k, size_t n) {
  for (size_t i = hash_bytes(k, n) & m->mask;; i = (i + 1) & m->mask) {
    slot *s = &m->slots[i];
    if (!s->key || (s->len == n && memcmp(s->key, k, n) == 0)) return s;
  }
}

static int32_t map_get(const strmap *m, const char *k, size_t n) {
  const slot *s = map_find(m, k, n);
  return s->key ? s->val : -1;
}

/* later entries replace earlier ones with the same key (as llama.cpp's token_to_id does) */
static void map_put(strmap *m, const char *k, size_t n, int32_t val) {
  slot *s = map_find(m, k, n);
  s->key = k;
  s->len = (uint32_t)n;
  s->val = val;
}

/* ---- the tokenizer ---- */

struct glq_tokenizer {
  glq_tok_kind kind;
  int32_t n_vocab;
  char *text;        /* all token texts, back to back */
  size_t *off;       /* token i is text[off[i] .. off[i+1]) */
  float *scores;     /* NULL: merge by rank */
  int32_t *types;
  strmap vocab;
  int32_t n_merges;
  int32_t *merge_pair;   /* 2 per merge: left id, right id (the map's keys) */
  int32_t *merge_result; /* id of the merged token */
  strmap merges;         /* pair -> rank */
  int32_t *specials;     /* ids of special tokens, by first byte then longest first */
  int32_t special_start[257];
  int32_t byte_token[256];
  pcre2_code **re;
  int n_re;
  uint8_t bl_utf8[256][2]; /* GPT-2 byte-level alphabet: byte -> UTF-8 of its character */
  uint8_t bl_len[256];
  int16_t bl_byte[324];    /* character (< 324) -> byte, or -1 */
  int32_t bos, eos, unk;
  int add_bos, add_eos, add_space_prefix, ignore_merges;
};

static size_t tok_len(const glq_tokenizer *t, int32_t id) { return t->off[id + 1] - t->off[id]; }
static const char *tok_text(const glq_tokenizer *t, int32_t id) { return t->text + t->off[id]; }

/* Length of the UTF-8 character at p (at most n bytes); 1 for an invalid byte. */
static size_t utf8_len(const uint8_t *p, size_t n) {
  size_t len = p[0] < 0x80 ? 1 : (p[0] & 0xE0) == 0xC0 ? 2 : (p[0] & 0xF0) == 0xE0 ? 3 : (p[0] & 0xF8) == 0xF0 ? 4 : 1;
  if (len > n) return 1;
  for (size_t i = 1; i < len; i++)
    if ((p[i] & 0xC0) != 0x80) return 1;
  return len;
}

/* GPT-2's bytes_to_unicode: printable Latin-1 bytes stand for themselves, the other 68 bytes
 * take the characters 256, 257, ... in byte order, so every byte is a visible character. */
static void init_byte_level(glq_tokenizer *t) {
  int next = 256;
  for (int i = 0; i < 324; i++) t->bl_byte[i] = -1;
  for (int b = 0; b < 256; b++) {
    int printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
    int cp = printable ? b : next++;
    t->bl_byte[cp] = (int16_t)b;
    if (cp < 0x80) {
      t->bl_utf8[b][0] = (uint8_t)cp;
      t->bl_len[b] = 1;
    } else {
      t->bl_utf8[b][0] = (uint8_t)(0xC0 | (cp >> 6));
      t->bl_utf8[b][1] = (uint8_t)(0x80 | (cp & 0x3F));
      t->bl_len[b] = 2;
    }
  }
}

void glq_tokenizer_free(glq_tokenizer *t) {
  if (!t) return;
  for (int i = 0; i < t->n_re; i++) pcre2_code_free(t->re[i]);
  free(t->re);
  free(t->text);
  free(t->off);
  free(t->scores);
  free(t->types);
  free(t->vocab.slots);
  free(t->merge_pair);
  free(t->merge_result);
  free(t->merges.slots);
  free(t->specials);
  free(t);
}

static int is_special_type(int32_t type) {
  return type == GLQ_TOKEN_CONTROL || type == GLQ_TOKEN_USER_DEFINED || type == GLQ_TOKEN_UNKNOWN;
}

static int hex_digit(char c) {
  return c >= '0' && c <= '9' ? c - '0' : c >= 'A' && c <= 'F' ? c - 'A' + 10 : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

/* "<0xAB>" -> 0xAB, else -1 */
static int byte_token_value(const char *s, size_t n) {
  if (n != 6 || memcmp(s, "<0x", 3) != 0 || s[5] != '>' || hex_digit(s[3]) < 0 || hex_digit(s[4]) < 0) return -1;
  return hex_digit(s[3]) * 16 + hex_digit(s[4]);
}

static int copy_vocab(glq_tokenizer *t, const glq_tokenizer_spec *sp) {
  size_t total = 0;
  t->off = malloc(((size_t)sp->n_vocab + 1) * sizeof *t->off);
  t->types = malloc((size_t)sp->n_vocab * sizeof *t->types);
  if (!t->off || !t->types) return glq_error(GLQ_ENOMEM, "tokenizer: out of memory");
  for (int32_t i = 0; i < sp->n_vocab; i++) {
    if (!sp->tokens[i]) return glq_error(GLQ_EINVAL, "tokenizer: token %d has no text", i);
    t->off[i] = total;
    total += sp->token_lens ? sp->token_lens[i] : strlen(sp->tokens[i]);
    if (total > UINT32_MAX) return glq_error(GLQ_EINVAL, "tokenizer: token texts exceed 4 GiB");
    int32_t ty = sp->types ? sp->types[i] : GLQ_TOKEN_NORMAL;
    if (ty < GLQ_TOKEN_NORMAL || ty > GLQ_TOKEN_BYTE) return glq_error(GLQ_EINVAL, "tokenizer: token %d has unknown type %d", i, ty);
    t->types[i] = ty;
  }
  t->off[sp->n_vocab] = total;
  if (!(t->text = malloc(total + 1))) return glq_error(GLQ_ENOMEM, "tokenizer: out of memory");
  for (int32_t i = 0; i < sp->n_vocab; i++) memcpy(t->text + t->off[i], sp->tokens[i], tok_len(t, i));
  int rc = map_init(&t->vocab, (size_t)sp->n_vocab);
  if (rc) return rc;
  for (int b = 0; b < 256; b++) t->byte_token[b] = -1;
  for (int32_t i = 0; i < sp->n_vocab; i++) {
    map_put(&t->vocab, tok_text(t, i), tok_len(t, i), i);
    int v = t->types[i] == GLQ_TOKEN_BYTE ? byte_token_value(tok_text(t, i), tok_len(t, i)) : -1;
    if (v >= 0 && t->byte_token[v] < 0) t->byte_token[v] = i;
  }
  if (sp->scores) {
    if (!(t->scores = malloc((size_t)sp->n_vocab * sizeof *t->scores))) return glq_error(GLQ_ENOMEM, "tokenizer: out of memory");
    memcpy(t->scores, sp->scores, (size_t)sp->n_vocab * sizeof *t->scores);
  }
  return GLQ_OK;
}

static int copy_merges(glq_tokenizer *t, const glq_tokenizer_spec *sp) {
  t->merge_pair = malloc(2 * ((size_t)sp->n_merges + 1) * sizeof *t->merge_pair);
  t->merge_result = malloc(((size_t)sp->n_merges + 1) * sizeof *t->merge_result);
  int rc = map_init(&t->merges, (size_t)sp->n_merges);
  if (rc) return rc;
  if (!t->merge_pair || !t->merge_result) return glq_error(GLQ_ENOMEM, "tokenizer: out of memory");
  char *cat = NULL;
  size_t cat_cap = 0;
  for (int32_t r = 0; r < sp->n_merges; r++) {
    const char *m = sp->merges[r];
    size_t n = sp->merge_lens ? sp->merge_lens[r] : strlen(m);
    const char *sp1 = n > 1 ? memchr(m + 1, ' ', n - 1) : NULL;
    if (!sp1) {
      free(cat);
      return glq_error(GLQ_EINVAL, "tokenizer: merge %d ('%.*s') is not two tokens separated by a space", r, (int)(n > 64 ? 64 : n), m);
    }
    size_t ln = (size_t)(sp1 - m), rn = n - ln - 1;
    int32_t a = map_get(&t->vocab, m, ln), b = map_get(&t->vocab, sp1 + 1, rn);
    if (ln + rn > cat_cap) {
      char *c = realloc(cat, ln + rn);
      if (!c) {
        free(cat);
        return glq_error(GLQ_ENOMEM, "tokenizer: out of memory");
      }
      cat = c;
      cat_cap = ln + rn;
    }
    memcpy(cat, m, ln);
    memcpy(cat + ln, sp1 + 1, rn);
    int32_t c = map_get(&t->vocab, cat, ln + rn);
    /* merges whose parts or result are not tokens can never apply */
    if (a < 0 || b < 0 || c < 0) continue;
    int32_t k = t->n_merges++;
    t->merge_pair[2 * k] = a;
    t->merge_pair[2 * k + 1] = b;
    t->merge_result[k] = c;
    slot *s = map_find(&t->merges, (const char *)&t->merge_pair[2 * k], 8);
    if (!s->key) map_put(&t->merges, (const char *)&t->merge_pair[2 * k], 8, k); /* first (best) rank wins */
  }
  free(cat);
  return GLQ_OK;
}

typedef struct {
  uint8_t first;
  size_t len;
  int32_t id;
} special_key;

/* special tokens grouped by first byte, longest first, so the first match is the longest */
static int special_order(const void *pa, const void *pb) {
  const special_key *a = pa, *b = pb;
  if (a->first != b->first) return a->first < b->first ? -1 : 1;
  if (a->len != b->len) return a->len > b->len ? -1 : 1;
  return a->id < b->id ? -1 : a->id > b->id;
}

static int index_specials(glq_tokenizer *t) {
  int32_t n = 0;
  for (int32_t i = 0; i < t->n_vocab; i++) n += is_special_type(t->types[i]) && tok_len(t, i) > 0;
  special_key *keys = malloc(((size_t)n + 1) * sizeof *keys);
  t->specials = malloc(((size_t)n + 1) * sizeof *t->specials);
  if (!keys || !t->specials) {
    free(keys);
    return glq_error(GLQ_ENOMEM, "tokenizer: out of memory");
  }
  n = 0;
  for (int32_t i = 0; i < t->n_vocab; i++)
    if (is_special_type(t->types[i]) && tok_len(t, i) > 0) keys[n++] = (special_key){(uint8_t)tok_text(t, i)[0], tok_len(t, i), i};
  qsort(keys, (size_t)n, sizeof *keys, special_order);
  for (int32_t k = 0, b = 0; b <= 256; b++) {
    while (k < n && b < 256 && keys[k].first < b) k++;
    t->special_start[b] = b < 256 ? k : n;
  }
  for (int32_t k = 0; k < n; k++) t->specials[k] = keys[k].id;
  free(keys);
  return GLQ_OK;
}

static int compile_patterns(glq_tokenizer *t, const glq_tokenizer_spec *sp) {
  if (!(t->re = calloc((size_t)sp->n_patterns + 1, sizeof *t->re))) return glq_error(GLQ_ENOMEM, "tokenizer: out of memory");
  for (int i = 0; i < sp->n_patterns; i++) {
    int err;
    PCRE2_SIZE at;
    t->re[i] = pcre2_compile((PCRE2_SPTR)sp->patterns[i], PCRE2_ZERO_TERMINATED,
                             PCRE2_UTF | PCRE2_UCP | PCRE2_MATCH_INVALID_UTF, &err, &at, NULL);
    if (!t->re[i]) {
      PCRE2_UCHAR msg[256];
      pcre2_get_error_message(err, msg, sizeof msg);
      return glq_error(GLQ_EINVAL, "tokenizer: pre-tokenizer regex %d at offset %zu: %s", i + 1, (size_t)at, (const char *)msg);
    }
    t->n_re = i + 1;
    pcre2_jit_compile(t->re[i], PCRE2_JIT_COMPLETE); /* optional speed-up; the interpreter is the fallback */
  }
  return GLQ_OK;
}

static int check_id(const glq_tokenizer_spec *sp, int32_t id, const char *what) {
  if (id < -1 || id >= sp->n_vocab) return glq_error(GLQ_EINVAL, "tokenizer: %s id %d is outside the vocabulary (%d tokens)", what, id, sp->n_vocab);
  return GLQ_OK;
}

int glq_tokenizer_new(const glq_tokenizer_spec *sp, glq_tokenizer **out) {
  *out = NULL;
  int rc;
  if (sp->kind != GLQ_TOK_SPM && sp->kind != GLQ_TOK_BPE) return glq_error(GLQ_EINVAL, "tokenizer: unknown kind %d", (int)sp->kind);
  if (sp->n_vocab <= 0 || !sp->tokens) return glq_error(GLQ_EINVAL, "tokenizer: empty vocabulary");
  if (sp->n_merges < 0 || sp->n_patterns < 0) return glq_error(GLQ_EINVAL, "tokenizer: negative merge or pattern count");
  if (sp->kind == GLQ_TOK_SPM && !sp->scores && sp->n_merges == 0) return glq_error(GLQ_EINVAL, "tokenizer: SPM needs scores or merges");
  if (sp->kind == GLQ_TOK_BPE && sp->n_merges == 0) return glq_error(GLQ_EINVAL, "tokenizer: BPE needs merges");
  if ((rc = check_id(sp, sp->bos, "BOS")) || (rc = check_id(sp, sp->eos, "EOS")) || (rc = check_id(sp, sp->unk, "unknown-token")))
    return rc;
  if (sp->add_bos && sp->bos < 0) return glq_error(GLQ_EINVAL, "tokenizer: add_bos is set but there is no BOS token");
  if (sp->add_eos && sp->eos < 0) return glq_error(GLQ_EINVAL, "tokenizer: add_eos is set but there is no EOS token");
  glq_tokenizer *t = calloc(1, sizeof *t);
  if (!t) return glq_error(GLQ_ENOMEM, "tokenizer: out of memory");
  t->kind = sp->kind;
  t->n_vocab = sp->n_vocab;
  t->bos = sp->bos;
  t->eos = sp->eos;
  t->unk = sp->unk;
  t->add_bos = !!sp->add_bos;
  t->add_eos = !!sp->add_eos;
  t->add_space_prefix = sp->kind == GLQ_TOK_SPM && sp->add_space_prefix;
  t->ignore_merges = sp->kind == GLQ_TOK_BPE && sp->ignore_merges;
  init_byte_level(t);
  if ((rc = copy_vocab(t, sp)) || (!sp->scores && (rc = copy_merges(t, sp))) || (rc = index_specials(t)) ||
      (sp->kind == GLQ_TOK_BPE && (rc = compile_patterns(t, sp)))) {
    glq_tokenizer_free(t);
    return rc;
  }
  *out = t;
  return GLQ_OK;
}

/* ---- encoding ---- */

typedef struct {
  int32_t prev, next;
  uint32_t off, n; /* text is the session buffer [off, off + n); n == 0 once merged away */
  int32_t id;      /* token of the text, or -1 */
} sym;

typedef struct {
  double prio; /* higher merges first */
  int32_t left, right, merged;
  uint32_t size; /* left.n + right.n when queued: a mismatch means the pair is stale */
} bigram;

typedef struct {
  size_t off, len;
} range;

typedef struct {
  const glq_tokenizer *t;
  int32_t *ids;
  size_t n_ids, cap_ids;
  char *buf;
  size_t n_buf, cap_buf;
  sym *syms;
  size_t cap_syms;
  bigram *heap;
  size_t n_heap, cap_heap;
  range *pieces[2];
  size_t n_pieces[2], cap_pieces[2];
  pcre2_match_data *md;
} session;

static int grow(void **p, size_t *cap, size_t need, size_t elem) {
  if (need <= *cap) return GLQ_OK;
  size_t c = *cap ? *cap : 64;
  while (c < need) {
    if (c > SIZE_MAX / 2 / elem) return glq_error(GLQ_ENOMEM, "tokenizer: text too large");
    c *= 2;
  }
  void *q = realloc(*p, c * elem);
  if (!q) return glq_error(GLQ_ENOMEM, "tokenizer: out of memory");
  *p = q;
  *cap = c;
  return GLQ_OK;
}

static int push_id(session *s, int32_t id) {
  int rc = grow((void **)&s->ids, &s->cap_ids, s->n_ids + 1, sizeof *s->ids);
  if (!rc) s->ids[s->n_ids++] = id;
  return rc;
}

static int push_bytes(session *s, const void *p, size_t n) {
  int rc = grow((void **)&s->buf, &s->cap_buf, s->n_buf + n, 1);
  if (!rc) {
    memcpy(s->buf + s->n_buf, p, n);
    s->n_buf += n;
  }
  return rc;
}

static int better(const bigram *a, const bigram *b) {
  return a->prio > b->prio || (a->prio == b->prio && a->left < b->left);
}

static int heap_push(session *s, bigram g) {
  int rc = grow((void **)&s->heap, &s->cap_heap, s->n_heap + 1, sizeof *s->heap);
  if (rc) return rc;
  size_t i = s->n_heap++;
  for (; i > 0 && better(&g, &s->heap[(i - 1) / 2]); i = (i - 1) / 2) s->heap[i] = s->heap[(i - 1) / 2];
  s->heap[i] = g;
  return GLQ_OK;
}

static bigram heap_pop(session *s) {
  bigram top = s->heap[0], last = s->heap[--s->n_heap];
  size_t i = 0, n = s->n_heap;
  for (;;) {
    size_t c = 2 * i + 1;
    if (c >= n) break;
    if (c + 1 < n && better(&s->heap[c + 1], &s->heap[c])) c++;
    if (!better(&s->heap[c], &last)) break;
    s->heap[i] = s->heap[c];
    i = c;
  }
  if (n > 0) s->heap[i] = last;
  return top;
}

/* Queue the merge of adjacent symbols l and r if the vocabulary has one. */
static int try_bigram(session *s, int32_t l, int32_t r) {
  if (l < 0 || r < 0) return GLQ_OK;
  const glq_tokenizer *t = s->t;
  const sym *a = &s->syms[l], *b = &s->syms[r];
  bigram g = {0, l, r, -1, a->n + b->n};
  if (t->scores) {
    g.merged = map_get(&t->vocab, s->buf + a->off, g.size); /* a and b are adjacent in buf */
    if (g.merged < 0) return GLQ_OK;
    g.prio = t->scores[g.merged];
  } else {
    if (a->id < 0 || b->id < 0) return GLQ_OK;
    int32_t key[2] = {a->id, b->id};
    int32_t rank = map_get(&t->merges, (const char *)key, sizeof key);
    if (rank < 0) return GLQ_OK;
    g.merged = t->merge_result[rank];
    g.prio = -(double)rank;
  }
  return heap_push(s, g);
}

/* Tokenize the session buffer as one word: split into characters, merge, emit ids. */
static int merge_word(session *s) {
  const glq_tokenizer *t = s->t;
  const uint8_t *p = (const uint8_t *)s->buf;
  size_t n = s->n_buf, nsym = 0;
  int rc;
  if (n == 0) return GLQ_OK;
  if (n > INT32_MAX) return glq_error(GLQ_EINVAL, "tokenizer: a piece of %zu bytes is too long (at most 2 GiB)", n);
  if (t->ignore_merges) {
    int32_t id = map_get(&t->vocab, s->buf, n);
    if (id >= 0) return push_id(s, id);
  }
  if ((rc = grow((void **)&s->syms, &s->cap_syms, n, sizeof *s->syms))) return rc;
  for (size_t off = 0; off < n; nsym++) {
    uint32_t len = (uint32_t)utf8_len(p + off, n - off);
    s->syms[nsym] = (sym){(int32_t)nsym - 1, off + len < n ? (int32_t)nsym + 1 : -1, (uint32_t)off, len,
                          map_get(&t->vocab, s->buf + off, len)};
    off += len;
  }
  s->n_heap = 0;
  for (size_t i = 1; i < nsym; i++)
    if ((rc = try_bigram(s, (int32_t)i - 1, (int32_t)i))) return rc;
  while (s->n_heap > 0) {
    bigram g = heap_pop(s);
    sym *a = &s->syms[g.left], *b = &s->syms[g.right];
    if (a->n == 0 || b->n == 0 || a->n + b->n != g.size) continue;
    a->n += b->n;
    a->id = g.merged;
    b->n = 0;
    a->next = b->next;
    if (b->next >= 0) s->syms[b->next].prev = g.left;
    if ((rc = try_bigram(s, a->prev, g.left)) || (rc = try_bigram(s, g.left, a->next))) return rc;
  }
  for (int32_t i = 0; i >= 0; i = s->syms[i].next) {
    const sym *y = &s->syms[i];
    if (y->id >= 0) {
      if ((rc = push_id(s, y->id))) return rc;
      continue;
    }
    /* no token for this character: its bytes as byte tokens (SPM byte fallback), else unk */
    for (uint32_t k = 0; k < y->n; k++) {
      int32_t id = t->kind == GLQ_TOK_SPM ? t->byte_token[p[y->off + k]] : -1;
      if (id < 0) id = t->unk;
      if (id < 0) return glq_error(GLQ_EINVAL, "tokenizer: no token for the text '%.*s' and no byte or unknown token", (int)y->n, s->buf + y->off);
      if ((rc = push_id(s, id))) return rc;
      if (id == t->unk) break;
    }
  }
  return GLQ_OK;
}

static int encode_spm(session *s, const char *text, size_t len, int prefix) {
  static const char space[] = "\xE2\x96\x81"; /* U+2581 */
  int rc = GLQ_OK;
  s->n_buf = 0;
  if (prefix) rc = push_bytes(s, space, 3);
  for (size_t i = 0; i < len && !rc; i++) rc = text[i] == ' ' ? push_bytes(s, space, 3) : push_bytes(s, text + i, 1);
  return rc ? rc : merge_word(s);
}

static int add_piece(session *s, int k, size_t off, size_t len) {
  int rc = grow((void **)&s->pieces[k], &s->cap_pieces[k], s->n_pieces[k] + 1, sizeof(range));
  if (!rc) s->pieces[k][s->n_pieces[k]++] = (range){off, len};
  return rc;
}

/* Split every piece of list `from` with regex re into list 1 - from: matches and gaps both kept. */
static int split_pieces(session *s, const pcre2_code *re, const char *text, int from) {
  int to = 1 - from, rc;
  s->n_pieces[to] = 0;
  for (size_t k = 0; k < s->n_pieces[from]; k++) {
    range r = s->pieces[from][k];
    PCRE2_SPTR subj = (PCRE2_SPTR)(text + r.off);
    size_t pos = 0, start = 0;
    while (start < r.len) {
      int m = pcre2_match(re, subj, r.len, start, 0, s->md, NULL);
      if (m == PCRE2_ERROR_JIT_STACKLIMIT) m = pcre2_match(re, subj, r.len, start, PCRE2_NO_JIT, s->md, NULL);
      if (m == PCRE2_ERROR_NOMATCH) break;
      if (m < 0) {
        PCRE2_UCHAR msg[256];
        pcre2_get_error_message(m, msg, sizeof msg);
        return glq_error(GLQ_EINVAL, "tokenizer: pre-tokenizer regex failed: %s", (const char *)msg);
      }
      PCRE2_SIZE *ov = pcre2_get_ovector_pointer(s->md);
      if (ov[1] == ov[0]) { /* an empty match splits nothing; move on one character */
        start = ov[0] + utf8_len(subj + ov[0], r.len - ov[0]);
        continue;
      }
      if (ov[0] > pos && (rc = add_piece(s, to, r.off + pos, ov[0] - pos))) return rc;
      if ((rc = add_piece(s, to, r.off + ov[0], ov[1] - ov[0]))) return rc;
      pos = start = ov[1];
    }
    if (pos < r.len && (rc = add_piece(s, to, r.off + pos, r.len - pos))) return rc;
  }
  return GLQ_OK;
}

/* Apply the pre-tokenizer regexes to text; the pieces end up in s->pieces[*cur]. */
static int pre_split(session *s, const char *text, size_t len, int *cur) {
  int rc;
  *cur = 0;
  s->n_pieces[0] = 0;
  if (len > 0 && (rc = add_piece(s, 0, 0, len))) return rc;
  for (int i = 0; i < s->t->n_re; i++, *cur = 1 - *cur)
    if ((rc = split_pieces(s, s->t->re[i], text, *cur))) return rc;
  return GLQ_OK;
}

static int encode_bpe(session *s, const char *text, size_t len) {
  const glq_tokenizer *t = s->t;
  int rc, cur;
  if ((rc = pre_split(s, text, len, &cur))) return rc;
  for (size_t k = 0; k < s->n_pieces[cur]; k++) {
    range r = s->pieces[cur][k];
    s->n_buf = 0;
    for (size_t i = 0; i < r.len; i++) {
      uint8_t b = (uint8_t)text[r.off + i];
      if ((rc = push_bytes(s, t->bl_utf8[b], t->bl_len[b]))) return rc;
    }
    if ((rc = merge_word(s))) return rc;
  }
  return GLQ_OK;
}

/* The longest special token at text[0..n), or -1. */
static int32_t match_special(const glq_tokenizer *t, const char *text, size_t n, size_t *len) {
  uint8_t c = (uint8_t)text[0];
  for (int32_t k = t->special_start[c]; k < t->special_start[c + 1]; k++) {
    int32_t id = t->specials[k];
    size_t l = tok_len(t, id);
    if (l <= n && memcmp(tok_text(t, id), text, l) == 0) {
      *len = l;
      return id;
    }
  }
  return -1;
}

static int encode_fragment(session *s, const char *text, size_t len, int after_special) {
  if (s->t->kind == GLQ_TOK_SPM) return encode_spm(s, text, len, s->t->add_space_prefix && after_special);
  return encode_bpe(s, text, len);
}

static int encode_all(session *s, const char *text, size_t len, int flags) {
  const glq_tokenizer *t = s->t;
  int rc, add = !(flags & GLQ_TOK_NO_ADD_SPECIAL), after_special = 1;
  if (add && t->add_bos && (rc = push_id(s, t->bos))) return rc;
  size_t frag = 0;
  for (size_t pos = 0; pos <= len; pos++) {
    size_t slen = 0;
    int32_t id = pos < len && !(flags & GLQ_TOK_NO_PARSE_SPECIAL) ? match_special(t, text + pos, len - pos, &slen) : -1;
    if (id < 0 && pos < len) continue;
    if (pos > frag) {
      if ((rc = encode_fragment(s, text + frag, pos - frag, after_special))) return rc;
      after_special = 0;
    }
    if (id < 0) break;
    if ((rc = push_id(s, id))) return rc;
    after_special = 1;
    pos += slen - 1;
    frag = pos + 1;
  }
  if (add && t->add_eos && (rc = push_id(s, t->eos))) return rc;
  return GLQ_OK;
}

static int session_start(session *s, const glq_tokenizer *t) {
  memset(s, 0, sizeof *s);
  s->t = t;
  if (t->n_re > 0 && !(s->md = pcre2_match_data_create(1, NULL))) return glq_error(GLQ_ENOMEM, "tokenizer: out of memory");
  return GLQ_OK;
}

/* Free the scratch buffers (not s->ids, which may be handed to the caller). */
static void session_end(session *s) {
  pcre2_match_data_free(s->md);
  free(s->buf);
  free(s->syms);
  free(s->heap);
  free(s->pieces[0]);
  free(s->pieces[1]);
}

int glq_tokenizer_encode(const glq_tokenizer *t, const char *text, size_t len, int flags, int32_t **ids, size_t *n) {
  session s;
  *ids = NULL;
  *n = 0;
  int rc = session_start(&s, t);
  if (!rc) rc = encode_all(&s, text, len, flags);
  session_end(&s);
  if (rc) {
    free(s.ids);
    return rc;
  }
  *ids = s.ids ? s.ids : malloc(sizeof(int32_t)); /* non-NULL even when empty */
  *n = s.n_ids;
  return *ids ? GLQ_OK : glq_error(GLQ_ENOMEM, "tokenizer: out of memory");
}

int glq_tokenizer_pre_tokenize(const glq_tokenizer *t, const char *text, size_t len, size_t **spans, size_t *n) {
  session s;
  int cur = 0;
  *spans = NULL;
  *n = 0;
  int rc = session_start(&s, t);
  if (!rc) rc = pre_split(&s, text, len, &cur);
  if (!rc && !(*spans = malloc((2 * s.n_pieces[cur] + 1) * sizeof **spans))) rc = glq_error(GLQ_ENOMEM, "tokenizer: out of memory");
  for (size_t k = 0; !rc && k < s.n_pieces[cur]; k++) {
    (*spans)[2 * k] = s.pieces[cur][k].off;
    (*spans)[2 * k + 1] = s.pieces[cur][k].len;
  }
  if (!rc) *n = s.n_pieces[cur];
  session_end(&s);
  return rc;
}

/* ---- decoding ---- */

/* Append a normal token: SPM turns "▁" into spaces; BPE maps byte-level characters to bytes. */
static int decode_normal(session *s, int32_t id, int strip_space) {
  const glq_tokenizer *t = s->t;
  const uint8_t *p = (const uint8_t *)tok_text(t, id);
  size_t n = tok_len(t, id), start = s->n_buf;
  int rc = GLQ_OK;
  for (size_t i = 0; i < n && !rc;) {
    size_t l = utf8_len(p + i, n - i);
    if (t->kind == GLQ_TOK_SPM) {
      if (l == 3 && memcmp(p + i, "\xE2\x96\x81", 3) == 0) rc = push_bytes(s, " ", 1);
      else rc = push_bytes(s, p + i, l);
    } else {
      int cp = l == 1 ? p[i] : l == 2 ? ((p[i] & 0x1F) << 6) | (p[i + 1] & 0x3F) : 324;
      int b = cp < 324 ? t->bl_byte[cp] : -1;
      uint8_t byte = (uint8_t)b;
      rc = b >= 0 ? push_bytes(s, &byte, 1) : push_bytes(s, p + i, l); /* not byte-level: keep as is */
    }
    i += l;
  }
  if (!rc && strip_space && s->n_buf > start && s->buf[start] == ' ') {
    memmove(s->buf + start, s->buf + start + 1, s->n_buf - start - 1);
    s->n_buf--;
  }
  return rc;
}

static int decode_all(session *s, const int32_t *ids, size_t n, int flags) {
  const glq_tokenizer *t = s->t;
  int rc = GLQ_OK, after_special = 1;
  for (size_t i = 0; i < n && !rc; i++) {
    int32_t id = ids[i];
    if (id < 0 || id >= t->n_vocab)
      return glq_error(GLQ_EINVAL, "tokenizer: decode: id %d at position %zu is outside the vocabulary (%d tokens)", id, i, t->n_vocab);
    if ((i == 0 && t->add_bos && id == t->bos) || (i == n - 1 && t->add_eos && id == t->eos)) continue; /* encode added it */
    int32_t ty = t->types[id];
    if (ty == GLQ_TOKEN_BYTE && byte_token_value(tok_text(t, id), tok_len(t, id)) >= 0) {
      uint8_t b = (uint8_t)byte_token_value(tok_text(t, id), tok_len(t, id));
      rc = push_bytes(s, &b, 1);
      after_special = 0;
    } else if (is_special_type(ty)) {
      if (!(ty == GLQ_TOKEN_CONTROL && (flags & GLQ_TOK_SKIP_SPECIAL))) rc = push_bytes(s, tok_text(t, id), tok_len(t, id));
      after_special = 1;
    } else {
      rc = decode_normal(s, id, after_special && t->add_space_prefix);
      after_special = 0;
    }
  }
  return rc;
}

int glq_tokenizer_decode(const glq_tokenizer *t, const int32_t *ids, size_t n, int flags, char **text, size_t *len) {
  session s = {0};
  s.t = t;
  *text = NULL;
  *len = 0;
  int rc = decode_all(&s, ids, n, flags); /* only s.buf is used */
  if (!rc) rc = push_bytes(&s, "", 1);
  if (rc) {
    free(s.buf);
    return rc;
  }
  *text = s.buf;
  *len = s.n_buf - 1;
  return GLQ_OK;
}

/* ---- facts ---- */

int32_t glq_tokenizer_n_vocab(const glq_tokenizer *t) { return t->n_vocab; }
int32_t glq_tokenizer_bos(const glq_tokenizer *t) { return t->bos; }
int32_t glq_tokenizer_eos(const glq_tokenizer *t) { return t->eos; }
glq_tok_kind glq_tokenizer_kind(const glq_tokenizer *t) { return t->kind; }

const char *glq_tokenizer_token(const glq_tokenizer *t, int32_t id, size_t *len) {
  if (id < 0 || id >= t->n_vocab) return NULL;
  *len = tok_len(t, id);
  return tok_text(t, id);
}

int32_t glq_tokenizer_find(const glq_tokenizer *t, const char *text, size_t len) { return map_get(&t->vocab, text, len); }

/* ---- construction from files ---- */

#define GPT2_RE "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+"
#define LLAMA3_RE                                                                                           \
  "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?" \
  "[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"
#define QWEN2_RE                                                                                       \
  "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?" \
  "[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"

static const char *const re_gpt2[] = {GPT2_RE};
/* llama.cpp's fallback for files that name no pre-tokenizer */
static const char *const re_default[] = {"[\\p{P}\\$\\+<=>\\^~\\|]+", GPT2_RE, "\\p{N}+", "[0-9][0-9][0-9]"};
static const char *const re_digits_gpt2[] = {"\\p{N}", GPT2_RE}; /* digits isolated, then GPT-2 */
static const char *const re_llama3[] = {LLAMA3_RE};
static const char *const re_qwen2[] = {QWEN2_RE};

/* tokenizer.ggml.pre names (as llama.cpp groups them) -> regexes; ignore_merges for llama-3 */
static const struct {
  const char *name;
  const char *const *re;
  int n, ignore_merges;
} pre_table[] = {
  {"default", re_default, 4, 0},    {"gpt2", re_gpt2, 1, 0},          {"gpt-2", re_gpt2, 1, 0},        {"mpt", re_gpt2, 1, 0},
  {"olmo", re_gpt2, 1, 0},          {"jais", re_gpt2, 1, 0},         {"smollm", re_digits_gpt2, 2, 0},
  {"starcoder", re_digits_gpt2, 2, 0}, {"refact", re_digits_gpt2, 2, 0}, {"command-r", re_digits_gpt2, 2, 0},
  {"codeshell", re_digits_gpt2, 2, 0}, {"exaone", re_digits_gpt2, 2, 0}, {"minerva-7b", re_digits_gpt2, 2, 0},
  {"llama3", re_llama3, 1, 1},      {"llama-v3", re_llama3, 1, 1},   {"llama-bpe", re_llama3, 1, 1},
  {"falcon3", re_llama3, 1, 1},     {"dbrx", re_llama3, 1, 0},       {"smaug-bpe", re_llama3, 1, 0},
  {"qwen2", re_qwen2, 1, 0},        {"stablelm2", re_qwen2, 1, 0},   {"hunyuan", re_qwen2, 1, 0},
};

static int pre_index(const char *pre) {
  for (size_t i = 0; i < sizeof pre_table / sizeof pre_table[0]; i++)
    if (strcmp(pre, pre_table[i].name) == 0) return (int)i;
  return -1;
}

const char *const *glq_tokenizer_pre_patterns(const char *pre, int *n) {
  int i = pre_index(pre);
  *n = i < 0 ? 0 : pre_table[i].n;
  return i < 0 ? NULL : pre_table[i].re;
}

int glq_tokenizer_pre_ignore_merges(const char *pre) {
  int i = pre_index(pre);
  return i < 0 ? 0 : pre_table[i].ignore_merges;
}

/* Optional integer key: *out keeps its default when absent. */
static int meta_int(const glq_gguf *g, const char *key, int64_t *out) {
  const glq_gguf_value *v = glq_gguf_get(g, key);
  if (v && (v->type == GLQ_GGUF_ARRAY || glq_gguf_value_int(v, 0, out)))
    return glq_error(GLQ_EFORMAT, "gguf '%s': %s is not an integer", g->path, key);
  return GLQ_OK;
}

/* Optional boolean (or integer) key with a default. */
static int meta_flag(const glq_gguf *g, const char *key, int dflt, int *out) {
  int64_t v = dflt;
  int rc = meta_int(g, key, &v);
  *out = v != 0;
  return rc;
}

static int meta_id(const glq_gguf *g, const char *key, int32_t n_vocab, int32_t *out) {
  int64_t v = *out;
  int rc = meta_int(g, key, &v);
  if (rc) return rc;
  if (v < -1 || v >= n_vocab) return glq_error(GLQ_EFORMAT, "gguf '%s': %s = %lld is outside the vocabulary", g->path, key, (long long)v);
  *out = (int32_t)v;
  return GLQ_OK;
}

/* A string array's elements as pointer/length arrays (pointing into the file). */
static int meta_strings(const glq_gguf *g, const char *key, uint64_t *n, const char ***s, size_t **len) {
  const glq_gguf_value *v = glq_gguf_get(g, key);
  *n = 0;
  if (!v) return GLQ_OK;
  if (v->type != GLQ_GGUF_ARRAY || (v->elem_type != GLQ_GGUF_STRING && v->len > 0))
    return glq_error(GLQ_EFORMAT, "gguf '%s': %s is not an array of strings", g->path, key);
  if (v->len > INT32_MAX) return glq_error(GLQ_EFORMAT, "gguf '%s': %s is too long", g->path, key);
  *s = malloc((v->len + 1) * sizeof **s);
  *len = malloc((v->len + 1) * sizeof **len);
  if (!*s || !*len) return glq_error(GLQ_ENOMEM, "gguf '%s': out of memory for %s", g->path, key);
  for (uint64_t i = 0; i < v->len; i++) glq_gguf_value_str(v, i, &(*s)[i], &(*len)[i]);
  *n = v->len;
  return GLQ_OK;
}

/* A numeric array of exactly n elements as floats (f) or int32s (k); left NULL when absent. */
static int meta_numbers(const glq_gguf *g, const char *key, uint64_t n, float **f, int32_t **k) {
  const glq_gguf_value *v = glq_gguf_get(g, key);
  if (!v) return GLQ_OK;
  if (v->type != GLQ_GGUF_ARRAY || v->len != n)
    return glq_error(GLQ_EFORMAT, "gguf '%s': %s is not an array of %llu numbers", g->path, key, (unsigned long long)n);
  void *p = malloc((n + 1) * (f ? sizeof **f : sizeof **k));
  if (!p) return glq_error(GLQ_ENOMEM, "gguf '%s': out of memory for %s", g->path, key);
  if (f) *f = p;
  else *k = p;
  for (uint64_t i = 0; i < n; i++) {
    double d;
    int64_t x;
    if (f ? glq_gguf_value_num(v, i, &d) : glq_gguf_value_int(v, i, &x))
      return glq_error(GLQ_EFORMAT, "gguf '%s': %s element %llu is not a number", g->path, key, (unsigned long long)i);
    if (f) (*f)[i] = (float)d;
    else (*k)[i] = x < INT32_MIN || x > INT32_MAX ? 0 : (int32_t)x;
  }
  return GLQ_OK;
}

static int meta_str(const glq_gguf *g, const char *key, char *buf, size_t cap) {
  const glq_gguf_value *v = glq_gguf_get(g, key);
  const char *s;
  size_t n;
  if (!v) return GLQ_OK;
  if (glq_gguf_value_str(v, 0, &s, &n) || v->type != GLQ_GGUF_STRING) return glq_error(GLQ_EFORMAT, "gguf '%s': %s is not a string", g->path, key);
  snprintf(buf, cap, "%.*s", (int)(n < cap ? n : cap - 1), s);
  return GLQ_OK;
}

int glq_tokenizer_from_gguf(const glq_gguf *g, glq_tokenizer **out) {
  char model[32] = "", pre[64] = "default";
  glq_tokenizer_spec sp = {0};
  uint64_t n_tok = 0, n_merge = 0;
  const char **tok = NULL, **mrg = NULL;
  size_t *tok_l = NULL, *mrg_l = NULL;
  float *scores = NULL;
  int32_t *types = NULL;
  *out = NULL;
  int rc = meta_str(g, "tokenizer.ggml.model", model, sizeof model);
  if (!rc && !model[0]) rc = glq_error(GLQ_EFORMAT, "gguf '%s': no tokenizer.ggml.model", g->path);
  int spm = strcmp(model, "llama") == 0;
  if (!rc && !spm && strcmp(model, "gpt2") != 0)
    rc = glq_error(GLQ_EUNSUPPORTED, "gguf '%s': tokenizer model '%s' is not supported (only llama and gpt2)", g->path, model);
  if (!rc) rc = meta_strings(g, "tokenizer.ggml.tokens", &n_tok, &tok, &tok_l);
  if (!rc && n_tok == 0) rc = glq_error(GLQ_EFORMAT, "gguf '%s': no tokenizer.ggml.tokens", g->path);
  if (!rc) rc = meta_numbers(g, "tokenizer.ggml.token_type", n_tok, NULL, &types);
  if (!rc && spm) rc = meta_numbers(g, "tokenizer.ggml.scores", n_tok, &scores, NULL);
  if (!rc && spm && !scores && (scores = calloc(n_tok, sizeof *scores)) == NULL) rc = glq_error(GLQ_ENOMEM, "out of memory");
  if (!rc && !spm) rc = meta_strings(g, "tokenizer.ggml.merges", &n_merge, &mrg, &mrg_l);
  if (!rc && !spm) rc = meta_str(g, "tokenizer.ggml.pre", pre, sizeof pre);
  int pi = spm ? -1 : pre_index(pre);
  if (!rc && !spm && pi < 0) rc = glq_error(GLQ_EUNSUPPORTED, "gguf '%s': pre-tokenizer '%s' is not supported", g->path, pre);
  sp.kind = spm ? GLQ_TOK_SPM : GLQ_TOK_BPE;
  sp.n_vocab = (int32_t)n_tok;
  sp.bos = spm ? 1 : -1;
  sp.eos = spm ? 2 : -1;
  sp.unk = spm ? 0 : -1;
  if (!rc) rc = meta_id(g, "tokenizer.ggml.bos_token_id", sp.n_vocab, &sp.bos);
  if (!rc) rc = meta_id(g, "tokenizer.ggml.eos_token_id", sp.n_vocab, &sp.eos);
  if (!rc) rc = meta_id(g, "tokenizer.ggml.unknown_token_id", sp.n_vocab, &sp.unk);
  if (!rc) rc = meta_flag(g, "tokenizer.ggml.add_bos_token", spm, &sp.add_bos);
  if (!rc) rc = meta_flag(g, "tokenizer.ggml.add_eos_token", 0, &sp.add_eos);
  if (!rc) rc = meta_flag(g, "tokenizer.ggml.add_space_prefix", spm, &sp.add_space_prefix);
  if (!rc) {
    sp.tokens = tok;
    sp.token_lens = tok_l;
    sp.scores = scores;
    sp.types = types;
    sp.n_merges = (int32_t)n_merge;
    sp.merges = mrg;
    sp.merge_lens = mrg_l;
    if (!spm) {
      sp.patterns = pre_table[pi].re;
      sp.n_patterns = pre_table[pi].n;
      sp.ignore_merges = pre_table[pi].ignore_merges;
    }
    if ((rc = glq_tokenizer_new(&sp, out))) glq_error_prefix("gguf '%s'", g->path);
  }
  free(tok);
  free(tok_l);
  free(mrg);
  free(mrg_l);
  free(scores);
  free(types);
  return rc;
}

/* Read a whole file into a malloc'd buffer. */
static int read_file(const char *path, char **data, size_t *n) {
  int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC); /* a FIFO is refused below, not waited on */
  FILE *f = fd >= 0 ? fdopen(fd, "rb") : NULL;
  if (fd >= 0 && !f) close(fd);
  size_t cap = 0;
  int rc = GLQ_OK;
  *data = NULL;
  *n = 0;
  if (!f) return glq_error(GLQ_EIO, "tokenizer '%s': cannot open: %s", path, strerror(errno));
  /* only a regular file of sane size: /dev/zero or a pipe would be read until memory runs out */
  struct stat sb;
  if (fstat(fileno(f), &sb) != 0 || !S_ISREG(sb.st_mode)) rc = glq_error(GLQ_EIO, "tokenizer '%s': not a regular file", path);
  else if (sb.st_size > (off_t)1 << 30) rc = glq_error(GLQ_EFORMAT, "tokenizer '%s': %lld bytes is too large for a tokenizer file", path, (long long)sb.st_size);
  if (rc) { fclose(f); return rc; }
  for (size_t got = 1; got > 0 && !rc;) {
    if (!(rc = grow((void **)data, &cap, *n + 65536, 1))) {
      got = fread(*data + *n, 1, cap - *n, f);
      *n += got;
    }
  }
  if (!rc && ferror(f)) rc = glq_error(GLQ_EIO, "tokenizer '%s': read error", path);
  fclose(f);
  return rc;
}

/* Walk llama2.c's token records from data[4..n); with out arrays NULL it only validates and counts. */
static int llama2c_records(const char *path, const char *data, size_t n, size_t *ntok, float *scores,
                           const char **tok, size_t *len) {
  size_t pos = 4, k = 0;
  while (pos < n) {
    int32_t l;
    if (n - pos < 8) return glq_error(GLQ_EFORMAT, "tokenizer '%s': truncated at token %zu", path, k);
    memcpy(&l, data + pos + 4, 4);
    if (l < 0 || (size_t)l > n - pos - 8)
      return glq_error(GLQ_EFORMAT, "tokenizer '%s': token %zu has length %d beyond the end of the file", path, k, l);
    if (scores) {
      memcpy(&scores[k], data + pos, 4);
      tok[k] = data + pos + 8;
      len[k] = (size_t)l;
    }
    pos += 8 + (size_t)l;
    k++;
  }
  if (k == 0 || k > INT32_MAX) return glq_error(GLQ_EFORMAT, "tokenizer '%s': %zu tokens", path, k);
  *ntok = k;
  return GLQ_OK;
}

/* llama2.c's tokenizer.bin: i32 max_token_length, then per token f32 score, i32 length, bytes.
 * Its texts have plain spaces where SentencePiece has "▁"; they are mapped back here.
 * Token 0 is <unk>, 1 BOS, 2 EOS; "<0xXX>" are byte tokens. */
int glq_tokenizer_load_llama2c(const char *path, glq_tokenizer **out) {
  char *data, *text = NULL;
  size_t n, ntok = 0, *len = NULL;
  const char **tok = NULL;
  float *scores = NULL;
  int32_t *types = NULL;
  *out = NULL;
  int rc = read_file(path, &data, &n);
  if (!rc && n < 4) rc = glq_error(GLQ_EFORMAT, "tokenizer '%s': file too short", path);
  if (!rc) rc = llama2c_records(path, data, n, &ntok, NULL, NULL, NULL);
  if (!rc) {
    tok = malloc(ntok * sizeof *tok);
    len = malloc(ntok * sizeof *len);
    scores = malloc(ntok * sizeof *scores);
    types = malloc(ntok * sizeof *types);
    text = malloc(3 * n);
    if (!tok || !len || !scores || !types || !text) rc = glq_error(GLQ_ENOMEM, "tokenizer '%s': out of memory", path);
  }
  if (!rc) rc = llama2c_records(path, data, n, &ntok, scores, tok, len);
  for (size_t k = 0, used = 0; !rc && k < ntok; k++) {
    char *dst = text + used;
    size_t m = 0;
    for (size_t i = 0; i < len[k]; i++) {
      if (tok[k][i] == ' ') {
        memcpy(dst + m, "\xE2\x96\x81", 3);
        m += 3;
      } else {
        dst[m++] = tok[k][i];
      }
    }
    types[k] = k == 0 ? GLQ_TOKEN_UNKNOWN : k <= 2 ? GLQ_TOKEN_CONTROL : byte_token_value(dst, m) >= 0 ? GLQ_TOKEN_BYTE : GLQ_TOKEN_NORMAL;
    tok[k] = dst;
    len[k] = m;
    used += m;
  }
  if (!rc && ntok < 3) rc = glq_error(GLQ_EFORMAT, "tokenizer '%s': only %zu tokens (need <unk>, BOS, EOS)", path, ntok);
  if (!rc) {
    glq_tokenizer_spec sp = {.kind = GLQ_TOK_SPM, .n_vocab = (int32_t)ntok, .tokens = tok, .token_lens = len,
                             .scores = scores, .types = types, .bos = 1, .eos = 2, .unk = 0,
                             .add_bos = 1, .add_space_prefix = 1};
    if ((rc = glq_tokenizer_new(&sp, out))) glq_error_prefix("tokenizer '%s'", path);
  }
  free(data);
  free(text);
  free(tok);
  free(len);
  free(scores);
  free(types);
  return rc;
}
