/* l_tokenizer.c - Lua binding of the tokenizers (lua/glq/tokenizer.lua builds on it).
 *   core.tokenizer.new(spec) -> tok     spec: {kind = "spm"|"bpe", tokens = {...} (id = index - 1),
 *       scores?, types?, merges?, patterns?, bos?, eos?, unk?, add_bos?, add_eos?,
 *       add_space_prefix?, ignore_merges?}
 *   core.tokenizer.from_gguf(g)         g from glq.gguf.open
 *   core.tokenizer.load_llama2c(path)   llama2.c tokenizer.bin
 *   core.tokenizer.pre_patterns(name) -> list of regexes, ignore_merges; or nil
 *   tok:encode(text, {add_special = true, parse_special = true}) -> {ids...}
 *   tok:decode(ids, {skip_special = false}) -> string
 *   tok:pre_tokenize(text) -> {pieces...} (the pre-tokenizer's split; special tokens not split out)
 *   tok:n_vocab(), tok:bos(), tok:eos() (nil if none), tok:kind(), tok:token(id), tok:find(text) */
#include <stdlib.h>
#include <string.h>
#include "lglq.h"
#include "../model/tokenizer.h"

#define LGLQ_TOKENIZER "glq.tokenizer"

static glq_tokenizer *check_tok(lua_State *L, int idx) {
  return *(glq_tokenizer **)luaL_checkudata(L, idx, LGLQ_TOKENIZER);
}

/* A new empty tokenizer userdata on the stack; fill *slot. */
static glq_tokenizer **new_tok(lua_State *L) {
  glq_tokenizer **p = lua_newuserdata(L, sizeof *p);
  *p = NULL;
  luaL_getmetatable(L, LGLQ_TOKENIZER);
  lua_setmetatable(L, -2);
  return p;
}

/* Length of the list field `name` of the spec table at idx (0 if absent). */
static size_t list_len(lua_State *L, int idx, const char *name) {
  lua_getfield(L, idx, name);
  size_t n = 0;
  if (!lua_isnil(L, -1)) {
    if (!lua_istable(L, -1)) luaL_error(L, "tokenizer spec: '%s' must be a list", name);
    n = lua_objlen(L, -1);
  }
  lua_pop(L, 1);
  return n;
}

/* Strings of list field `name` into s/len (the spec table keeps the strings alive). */
static void read_strings(lua_State *L, int idx, const char *name, size_t n, const char **s, size_t *len) {
  lua_getfield(L, idx, name);
  for (size_t i = 0; i < n; i++) {
    lua_rawgeti(L, -1, (int)i + 1);
    if (lua_type(L, -1) != LUA_TSTRING) luaL_error(L, "tokenizer spec: %s[%d] is not a string", name, (int)i + 1);
    s[i] = lua_tolstring(L, -1, &len[i]);
    lua_pop(L, 1);
  }
  lua_pop(L, 1);
}

/* Numbers of list field `name` (exactly n of them) into f or k. */
static void read_numbers(lua_State *L, int idx, const char *name, size_t n, float *f, int32_t *k) {
  if (list_len(L, idx, name) != n) luaL_error(L, "tokenizer spec: '%s' must have one entry per token", name);
  lua_getfield(L, idx, name);
  for (size_t i = 0; i < n; i++) {
    lua_rawgeti(L, -1, (int)i + 1);
    if (!lua_isnumber(L, -1)) luaL_error(L, "tokenizer spec: %s[%d] is not a number", name, (int)i + 1);
    if (f) f[i] = (float)lua_tonumber(L, -1);
    else k[i] = (int32_t)lua_tointeger(L, -1);
    lua_pop(L, 1);
  }
  lua_pop(L, 1);
}

static int opt_id(lua_State *L, const char *name) {
  lua_Integer v = lglq_optinteger(L, 1, name, -1);
  if (v < -1 || v > 0x7fffffff) luaL_error(L, "tokenizer spec: '%s' = %d is not a token id", name, (int)v);
  return (int)v;
}

static int l_new(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  glq_tokenizer_spec sp = {0};
  static const lglq_enum kinds[] = {{"spm", GLQ_TOK_SPM}, {"bpe", GLQ_TOK_BPE}, {NULL, 0}};
  int kind = lglq_optenum(L, 1, "kind", kinds, -1, "tokenizer spec");
  if (kind < 0) return luaL_error(L, "tokenizer spec: kind must be \"spm\" or \"bpe\"");
  sp.kind = kind;
  size_t nt = list_len(L, 1, "tokens"), nm = list_len(L, 1, "merges"), np = list_len(L, 1, "patterns");
  if (nt == 0 || nt > 0x7fffffff) return luaL_error(L, "tokenizer spec: 'tokens' must be a non-empty list");
  int has_scores = list_len(L, 1, "scores") > 0, has_types = list_len(L, 1, "types") > 0;
  /* one Lua-owned scratch block, freed by the GC even if an error is raised below */
  size_t bytes = (nt + nm + np) * (sizeof(char *) + sizeof(size_t)) + nt * (sizeof(float) + sizeof(int32_t));
  char *mem = lua_newuserdata(L, bytes);
  const char **tok = (const char **)mem, **mrg = tok + nt, **pat = mrg + nm;
  size_t *tok_l = (size_t *)(pat + np), *mrg_l = tok_l + nt, *pat_l = mrg_l + nm;
  float *scores = (float *)(pat_l + np);
  int32_t *types = (int32_t *)(scores + nt);
  read_strings(L, 1, "tokens", nt, tok, tok_l);
  read_strings(L, 1, "merges", nm, mrg, mrg_l);
  read_strings(L, 1, "patterns", np, pat, pat_l);
  for (size_t i = 0; i < np; i++)
    if (strlen(pat[i]) != pat_l[i]) return luaL_error(L, "tokenizer spec: patterns[%d] contains a NUL byte", (int)i + 1);
  if (has_scores) read_numbers(L, 1, "scores", nt, scores, NULL);
  if (has_types) read_numbers(L, 1, "types", nt, NULL, types);
  sp.n_vocab = (int32_t)nt;
  sp.tokens = tok;
  sp.token_lens = tok_l;
  sp.scores = has_scores ? scores : NULL;
  sp.types = has_types ? types : NULL;
  sp.n_merges = (int32_t)nm;
  sp.merges = mrg;
  sp.merge_lens = mrg_l;
  sp.n_patterns = (int)np;
  sp.patterns = pat;
  sp.bos = opt_id(L, "bos");
  sp.eos = opt_id(L, "eos");
  sp.unk = opt_id(L, "unk");
  sp.add_bos = lglq_optboolean(L, 1, "add_bos", 0);
  sp.add_eos = lglq_optboolean(L, 1, "add_eos", 0);
  sp.add_space_prefix = lglq_optboolean(L, 1, "add_space_prefix", sp.kind == GLQ_TOK_SPM);
  sp.ignore_merges = lglq_optboolean(L, 1, "ignore_merges", 0);
  glq_tokenizer **p = new_tok(L);
  lglq_check(L, glq_tokenizer_new(&sp, p), "glq.tokenizer.new");
  return 1;
}

static int l_from_gguf(lua_State *L) {
  glq_gguf **g = luaL_checkudata(L, 1, LGLQ_GGUF);
  if (!*g) return luaL_error(L, "gguf file is closed");
  glq_tokenizer **p = new_tok(L);
  lglq_check(L, glq_tokenizer_from_gguf(*g, p), "glq.tokenizer.from_gguf");
  return 1;
}

static int l_load_llama2c(lua_State *L) {
  const char *path = luaL_checkstring(L, 1);
  glq_tokenizer **p = new_tok(L);
  lglq_check(L, glq_tokenizer_load_llama2c(path, p), "glq.tokenizer.load_llama2c");
  return 1;
}

static int l_pre_patterns(lua_State *L) {
  int n;
  const char *const *re = glq_tokenizer_pre_patterns(luaL_checkstring(L, 1), &n);
  if (!re) return 0;
  lua_createtable(L, n, 0);
  for (int i = 0; i < n; i++) {
    lua_pushstring(L, re[i]);
    lua_rawseti(L, -2, i + 1);
  }
  lua_pushboolean(L, glq_tokenizer_pre_ignore_merges(luaL_checkstring(L, 1)));
  return 2;
}

static int m_encode(lua_State *L) {
  glq_tokenizer *t = check_tok(L, 1);
  size_t len, n;
  const char *text = luaL_checklstring(L, 2, &len);
  int flags = (lglq_optboolean(L, 3, "add_special", 1) ? 0 : GLQ_TOK_NO_ADD_SPECIAL) |
              (lglq_optboolean(L, 3, "parse_special", 1) ? 0 : GLQ_TOK_NO_PARSE_SPECIAL);
  int32_t *ids;
  lglq_check(L, glq_tokenizer_encode(t, text, len, flags, &ids, &n), "encode");
  if (n > 0x7fffffff || !lua_checkstack(L, 2)) {
    free(ids);
    return luaL_error(L, "encode: too many tokens");
  }
  lua_createtable(L, (int)n, 0);
  for (size_t i = 0; i < n; i++) {
    lua_pushinteger(L, ids[i]);
    lua_rawseti(L, -2, (int)i + 1);
  }
  free(ids);
  return 1;
}

static int m_decode(lua_State *L) {
  glq_tokenizer *t = check_tok(L, 1);
  luaL_checktype(L, 2, LUA_TTABLE);
  int flags = lglq_optboolean(L, 3, "skip_special", 0) ? GLQ_TOK_SKIP_SPECIAL : 0;
  size_t n = lua_objlen(L, 2), len;
  int32_t *ids = lua_newuserdata(L, (n + 1) * sizeof *ids); /* GC-owned: safe if an error is raised */
  for (size_t i = 0; i < n; i++) {
    lua_rawgeti(L, 2, (int)i + 1);
    if (!lua_isnumber(L, -1)) return luaL_error(L, "decode: ids[%d] is not a number", (int)i + 1);
    lua_Number v = lua_tonumber(L, -1);
    ids[i] = v >= -1 && v < 2147483647.0 && v == (lua_Number)(int32_t)v ? (int32_t)v : -1;
    lua_pop(L, 1);
  }
  char *text;
  lglq_check(L, glq_tokenizer_decode(t, ids, n, flags, &text, &len), "decode");
  lua_pushlstring(L, text, len);
  free(text);
  return 1;
}

static int m_pre_tokenize(lua_State *L) {
  glq_tokenizer *t = check_tok(L, 1);
  size_t len, n, *spans;
  const char *text = luaL_checklstring(L, 2, &len);
  lglq_check(L, glq_tokenizer_pre_tokenize(t, text, len, &spans, &n), "pre_tokenize");
  lua_createtable(L, n > 0x7fffffff ? 0 : (int)n, 0);
  for (size_t i = 0; i < n; i++) {
    lua_pushlstring(L, text + spans[2 * i], spans[2 * i + 1]);
    lua_rawseti(L, -2, (int)i + 1);
  }
  free(spans);
  return 1;
}

static int push_id_or_nil(lua_State *L, int32_t id) {
  if (id < 0) lua_pushnil(L);
  else lua_pushinteger(L, id);
  return 1;
}

static int m_n_vocab(lua_State *L) { return push_id_or_nil(L, glq_tokenizer_n_vocab(check_tok(L, 1))); }
static int m_bos(lua_State *L) { return push_id_or_nil(L, glq_tokenizer_bos(check_tok(L, 1))); }
static int m_eos(lua_State *L) { return push_id_or_nil(L, glq_tokenizer_eos(check_tok(L, 1))); }

static int m_kind(lua_State *L) {
  lua_pushstring(L, glq_tokenizer_kind(check_tok(L, 1)) == GLQ_TOK_SPM ? "spm" : "bpe");
  return 1;
}

static int m_token(lua_State *L) {
  size_t len;
  const char *s = glq_tokenizer_token(check_tok(L, 1), (int32_t)luaL_checkinteger(L, 2), &len);
  if (s) lua_pushlstring(L, s, len);
  else lua_pushnil(L);
  return 1;
}

static int m_find(lua_State *L) {
  size_t len;
  const char *s = luaL_checklstring(L, 2, &len);
  return push_id_or_nil(L, glq_tokenizer_find(check_tok(L, 1), s, len));
}

static int m_gc(lua_State *L) {
  glq_tokenizer **p = luaL_checkudata(L, 1, LGLQ_TOKENIZER);
  glq_tokenizer_free(*p);
  *p = NULL;
  return 0;
}

static const luaL_Reg methods[] = {
  {"encode", m_encode}, {"decode", m_decode}, {"pre_tokenize", m_pre_tokenize}, {"n_vocab", m_n_vocab}, {"bos", m_bos}, {"eos", m_eos},
  {"kind", m_kind}, {"token", m_token}, {"find", m_find}, {NULL, NULL}};

static const luaL_Reg funcs[] = {
  {"new", l_new}, {"from_gguf", l_from_gguf}, {"load_llama2c", l_load_llama2c},
  {"pre_patterns", l_pre_patterns}, {NULL, NULL}};

void lglq_open_tokenizer(lua_State *L) {
  static const luaL_Reg meta[] = {{"__gc", m_gc}, {NULL, NULL}};
  lglq_newclass(L, LGLQ_TOKENIZER, meta, methods);
  lglq_register(L, "tokenizer", funcs);
}
