/* l_trellis.c - glq.trellis: the QTIP trellis codec (src/quant/trellis.h) and trellis-quantized layers.
 *   glq.trellis.lut(variant, K [, tlut]) -> f32 (2^16, V): decoded value(s) of every state ("3inst"; "hyb" from
 *     a (512, 2) tlut)
 *   glq.trellis.viterbi(lut (2^L, V), L, K, x (steps·V) [, {start_ov=, end_ov=}]) -> i32 states, f32 cost
 *   glq.trellis.quantize_seq(lut, L, K, x) -> i32 states (glq's two-pass tail-biting)
 *   glq.trellis.pack(lut, L, K, states) -> i16 words; glq.trellis.unpack(lut, L, K, words, steps) -> i32 states
 *   glq.trellis.decode_layer(packed, m, n, {variant=, K=, tlut=, layout = "kernel"|"natural"}) -> f32 (m, n)
 *   glq.trellis.quantize_linear(W, H|nil, opts) -> artifacts (as glq.quantize_linear with codebook "trellis")
 *   glq.trellis.dequantize_linear(artifacts) -> f32 W;  glq.trellis.linear(artifacts [, bias]) -> glq.linear */
#include <string.h>
#include "lglq.h"
#include "../quant/trellis.h"
#include "../layers/trellis_linear.h"

/* the code arguments (lut (2^L, V) f32, L, K) at stack indices i, i+1, i+2, checked without allocating */
typedef struct {
  glq_tensor *lut;
  int L, K, V;
} code_args;

static void check_code_args(lua_State *L, int i, const char *fn, code_args *a) {
  a->lut = lglq_checktensor_tmp(L, i, GLQ_F32, fn);
  a->L = (int)luaL_checkinteger(L, i + 1), a->K = (int)luaL_checkinteger(L, i + 2);
  if (a->L < 1 || a->L > 16) lglq_raisef(L, "%s: L must be 1..16, got %d", fn, a->L);
  if (a->lut->ndim != 2 || a->lut->shape[0] != ((int64_t)1 << a->L) || a->lut->shape[1] < 1 || a->lut->shape[1] > 2)
    lglq_raisef(L, "%s: lut must be (2^L, V) with V 1 or 2", fn);
  a->V = (int)a->lut->shape[1];
  if (a->K < 1 || a->K * a->V >= a->L) lglq_raisef(L, "%s: need K >= 1 and K·V < L", fn);
}

/* the code of checked arguments (free with glq_trellis_code_free; call nothing that raises in between) */
static int make_code(const code_args *a, glq_trellis_code *c) {
  return glq_trellis_code_lut(c, a->L, a->K, a->V, glq_tensor_data(a->lut));
}

static int l_lut(lua_State *L) {
  const char *fn = "glq.trellis.lut", *v = luaL_checkstring(L, 1);
  int K = (int)luaL_checkinteger(L, 2), hyb = !strcmp(v, "hyb");
  if (!hyb && strcmp(v, "3inst")) return lglq_raisef(L, "%s: unknown variant '%s' (expected 3inst or hyb)", fn, v);
  glq_tensor *t = NULL;
  if (hyb) {
    t = lglq_checktensor_tmp(L, 3, GLQ_F32, fn);
    if (glq_tensor_numel(t) != 2 * GLQ_TRELLIS_HYB_TLUT) lglq_raisef(L, "%s: tlut must have 512 x 2 values", fn);
  }
  int64_t shape[2] = {65536, hyb ? 2 : 1};
  glq_tensor *out = lglq_newtensor(L, GLQ_F32, 2, shape, fn);
  glq_trellis_code c;
  lglq_check(L, hyb ? glq_trellis_code_hyb(&c, K, glq_tensor_data(t)) : glq_trellis_code_3inst(&c, K), "%s", fn);
  memcpy(glq_tensor_data(out), c.lut, sizeof(float) * (size_t)(shape[0] * shape[1]));
  glq_trellis_code_free(&c);
  return 1;
}

/* x at index i as f32 holding steps·V values; returns steps */
static int64_t check_seq(lua_State *L, int i, int V, const char *fn, glq_tensor **x) {
  *x = lglq_checktensor_tmp(L, i, GLQ_F32, fn);
  int64_t nx = glq_tensor_numel(*x);
  if (nx < V || nx % V || nx / V > 1 << 20) lglq_raisef(L, "%s: x must hold a positive multiple of V values", fn);
  return nx / V;
}

/* i32 tensor (pushed) from n 16-bit states */
static void states_out(glq_tensor *t, const uint16_t *s, int64_t n) {
  int32_t *o = glq_tensor_data(t);
  for (int64_t i = 0; i < n; i++) o[i] = s[i];
}

static int l_viterbi(lua_State *L) {
  const char *fn = "glq.trellis.viterbi";
  lua_settop(L, 5);
  code_args ca;
  glq_tensor *x;
  check_code_args(L, 1, fn, &ca);
  int64_t steps = check_seq(L, 4, ca.V, fn, &x);
  int start = (int)lglq_optinteger(L, 5, "start_ov", -1), end = (int)lglq_optinteger(L, 5, "end_ov", -1);
  glq_tensor *st = lglq_newtensor(L, GLQ_I32, 1, &steps, fn);
  uint16_t *s16 = lua_newuserdata(L, sizeof(uint16_t) * (size_t)steps);
  float cost = 0;
  glq_trellis_code c;
  int rc = make_code(&ca, &c);
  if (!rc) {
    rc = glq_trellis_viterbi(&c, glq_tensor_data(x), (int)steps, start, end, s16, &cost);
    glq_trellis_code_free(&c);
  }
  lglq_check(L, rc, "%s", fn);
  states_out(st, s16, steps);
  lua_pushvalue(L, -2);
  lua_pushnumber(L, cost);
  return 2;
}

static int l_quantize_seq(lua_State *L) {
  const char *fn = "glq.trellis.quantize_seq";
  lua_settop(L, 4);
  code_args ca;
  glq_tensor *x;
  check_code_args(L, 1, fn, &ca);
  int64_t steps = check_seq(L, 4, ca.V, fn, &x);
  glq_tensor *st = lglq_newtensor(L, GLQ_I32, 1, &steps, fn);
  uint16_t *s16 = lua_newuserdata(L, sizeof(uint16_t) * (size_t)steps);
  glq_trellis_code c;
  int rc = make_code(&ca, &c);
  if (!rc) {
    rc = glq_trellis_quantize_seq(&c, glq_tensor_data(x), (int)steps, s16);
    glq_trellis_code_free(&c);
  }
  lglq_check(L, rc, "%s", fn);
  states_out(st, s16, steps);
  lua_pushvalue(L, -2);
  return 1;
}

static int l_pack(lua_State *L) {
  const char *fn = "glq.trellis.pack";
  lua_settop(L, 4);
  code_args ca;
  check_code_args(L, 1, fn, &ca);
  glq_tensor *st = lglq_checktensor_tmp(L, 4, GLQ_I32, fn);
  int64_t steps = glq_tensor_numel(st);
  if (steps < 1 || steps > 1 << 20) lglq_raisef(L, "%s: bad number of states", fn);
  uint16_t *s16 = lua_newuserdata(L, sizeof(uint16_t) * (size_t)steps);
  const int32_t *si = glq_tensor_data(st);
  for (int64_t i = 0; i < steps; i++) {
    if (si[i] < 0 || si[i] >= (1 << ca.L)) lglq_raisef(L, "%s: state %lld out of range", fn, (long long)i);
    s16[i] = (uint16_t)si[i];
  }
  int64_t nw = ((int64_t)steps * ca.K * ca.V + 15) / 16;
  glq_tensor *w = lglq_newtensor(L, GLQ_I16, 1, &nw, fn);
  glq_trellis_code c;
  int rc = make_code(&ca, &c);
  if (!rc) {
    rc = glq_trellis_pack(&c, s16, (int)steps, glq_tensor_data(w));
    glq_trellis_code_free(&c);
  }
  lglq_check(L, rc, "%s", fn);
  (void)w;
  return 1;
}

static int l_unpack(lua_State *L) {
  const char *fn = "glq.trellis.unpack";
  lua_settop(L, 5);
  code_args ca;
  check_code_args(L, 1, fn, &ca);
  glq_tensor *w = lglq_checktensor_tmp(L, 4, GLQ_I16, fn);
  int64_t steps = luaL_checkinteger(L, 5);
  if (steps < 1 || steps > 1 << 20) lglq_raisef(L, "%s: bad step count", fn);
  if (glq_tensor_numel(w) != (steps * ca.K * ca.V + 15) / 16) lglq_raisef(L, "%s: %lld steps need %lld words", fn, (long long)steps, (long long)((steps * ca.K * ca.V + 15) / 16));
  glq_tensor *st = lglq_newtensor(L, GLQ_I32, 1, &steps, fn);
  uint16_t *s16 = lua_newuserdata(L, sizeof(uint16_t) * (size_t)steps);
  glq_trellis_code c;
  int rc = make_code(&ca, &c);
  if (!rc) {
    glq_trellis_unpack(&c, glq_tensor_data(w), (int)steps, s16);
    glq_trellis_code_free(&c);
  }
  lglq_check(L, rc, "%s", fn);
  states_out(st, s16, steps);
  lua_pushvalue(L, -2);
  return 1;
}

/* the variant named by a string */
static glq_trellis_variant variant_of(lua_State *L, const char *fn, const char *v) {
  if (!strcmp(v, "3inst")) return GLQ_TRELLIS_3INST;
  if (!strcmp(v, "hyb")) return GLQ_TRELLIS_HYB;
  lglq_raisef(L, "%s: unknown trellis variant '%s' (expected 3inst or hyb)", fn, v);
  return GLQ_TRELLIS_3INST;
}

static int l_decode_layer(lua_State *L) {
  const char *fn = "glq.trellis.decode_layer";
  lua_settop(L, 4);
  glq_tensor *p = lglq_checktensor_tmp(L, 1, GLQ_I16, fn);
  int64_t m = luaL_checkinteger(L, 2), n = luaL_checkinteger(L, 3);
  luaL_checktype(L, 4, LUA_TTABLE);
  glq_trellis_variant v = variant_of(L, fn, lglq_optstring(L, 4, "variant", "3inst"));
  int K = (int)lglq_optinteger(L, 4, "K", 2);
  const char *layout = lglq_optstring(L, 4, "layout", "kernel");
  if (strcmp(layout, "kernel") && strcmp(layout, "natural")) lglq_raisef(L, "%s: layout must be kernel or natural", fn);
  if (m < 16 || n < 16 || m % 16 || n % 16) lglq_raisef(L, "%s: m and n must be positive multiples of 16", fn);
  if (glq_tensor_numel(p) != m * n * K / 16) lglq_raisef(L, "%s: packed must hold m·n·K/16 int16 values", fn);
  glq_tensor *t = NULL;
  if (v == GLQ_TRELLIS_HYB) {
    lua_getfield(L, 4, "tlut");
    t = lglq_checktensor_tmp(L, lua_gettop(L), GLQ_F32, fn);
    if (glq_tensor_numel(t) != 2 * GLQ_TRELLIS_HYB_TLUT) lglq_raisef(L, "%s: tlut must have 512 x 2 values", fn);
  }
  int64_t shape[2] = {m, n};
  glq_tensor *out = lglq_newtensor(L, GLQ_F32, 2, shape, fn);
  glq_trellis_code c;
  int rc = v == GLQ_TRELLIS_HYB ? glq_trellis_code_hyb(&c, K, glq_tensor_data(t)) : glq_trellis_code_3inst(&c, K);
  lglq_check(L, rc, "%s", fn);
  rc = glq_trellis_decode_layer(&c, glq_tensor_data(p), m, n, !strcmp(layout, "kernel"), glq_tensor_data(out));
  glq_trellis_code_free(&c);
  lglq_check(L, rc, "%s", fn);
  return 1;
}

/* ---- layers ---- */

/* artifacts from the table at idx: borrowed tensors (the table keeps them alive) */
static void check_artifacts(lua_State *L, int idx, const char *fn, glq_trellis_artifacts *a) {
  luaL_checktype(L, idx, LUA_TTABLE);
  memset(a, 0, sizeof *a);
  const char *names[] = {"trellis_packed", "SU", "SV", "Wscale", "tlut"};
  glq_tensor *ts[] = {&a->packed, &a->su, &a->sv, &a->wscale, &a->tlut};
  for (int i = 0; i < 5; i++) {
    lua_getfield(L, idx, names[i]);
    glq_tensor *t = lglq_totensor(L, -1);
    if (!t && (i < 4 || !lua_isnil(L, -1))) lglq_raisef(L, "%s: artifacts.%s must be a tensor", fn, names[i]);
    if (t) *ts[i] = *t;
    lua_pop(L, 1);
  }
  a->variant = variant_of(L, fn, lglq_optstring(L, idx, "variant", "3inst"));
  if (a->packed.ndim != 2) lglq_raisef(L, "%s: artifacts.trellis_packed must be 2-D", fn);
  a->K = (int)lglq_optinteger(L, idx, "bits", a->packed.shape[1] / 16);
  a->m = (int64_t)lglq_optnumber(L, idx, "out_features", (lua_Number)glq_tensor_numel(&a->su));
  a->n = (int64_t)lglq_optnumber(L, idx, "in_features", (lua_Number)glq_tensor_numel(&a->sv));
  const char *tr = lglq_optstring(L, idx, "transform", "block-diagonal");
  if (!strcmp(tr, "block-diagonal")) a->transform = GLQ_HADAMARD_GLQ_BLOCKDIAG;
  else if (!strcmp(tr, "glq-hadamard-v1") || !strcmp(tr, "default")) a->transform = GLQ_HADAMARD_DEFAULT;
  else lglq_raisef(L, "%s: unknown transform '%s'", fn, tr);
}

static void set_number(lua_State *L, const char *name, double v) {
  lua_pushnumber(L, v);
  lua_setfield(L, -2, name);
}

static void push_field(lua_State *L, const char *name, glq_tensor *t) {
  if (!t->st) return;
  lglq_pushtensor(L, t);
  lua_setfield(L, -2, name);
}

/* pushes the result table of a finished trellis quantization (moves the artifacts' tensors into it) */
void lglq_trellis_push(lua_State *L, glq_trellis_artifacts *a, const glq_quant_stats *st) {
  lua_createtable(L, 0, 12);
  push_field(L, "trellis_packed", &a->packed);
  push_field(L, "SU", &a->su);
  push_field(L, "SV", &a->sv);
  push_field(L, "Wscale", &a->wscale);
  push_field(L, "tlut", &a->tlut);
  lua_pushstring(L, "trellis");
  lua_setfield(L, -2, "codebook");
  lua_pushstring(L, a->variant == GLQ_TRELLIS_HYB ? "hyb" : "3inst");
  lua_setfield(L, -2, "variant");
  lua_pushstring(L, a->transform == GLQ_HADAMARD_GLQ_BLOCKDIAG ? "block-diagonal" : "glq-hadamard-v1");
  lua_setfield(L, -2, "transform");
  set_number(L, "bits", a->K);
  set_number(L, "out_features", (double)a->m);
  set_number(L, "in_features", (double)a->n);
  if (!st) return;
  lua_createtable(L, 0, 12);
  set_number(L, "sqnr_db", st->sqnr_db);
  set_number(L, "proxy_loss", st->proxy_loss);
  set_number(L, "proxy_loss_orig", st->proxy_loss_orig);
  set_number(L, "bpw", st->bpw);
  set_number(L, "seconds", st->seconds);
  set_number(L, "seconds_prepare", st->seconds_prepare);
  set_number(L, "seconds_search", st->seconds_search);
  set_number(L, "seconds_sweep", st->seconds_sweep);
  set_number(L, "seconds_stats", st->seconds_stats);
  set_number(L, "damp_used", st->damp_used);
  set_number(L, "fallback", st->fallback);
  set_number(L, "wscale_rel", st->wscale_rel);
  lua_setfield(L, -2, "stats");
}

/* glq.trellis.quantize_linear(W, H|nil, opts): opts {bpw (or bits) = 2|3|4, seed = 42, damp = 0.01, name,
 * input_name, feedback = true, scale_search = true (Wscale: glq's rule, 0.95x or 1.05x, on a sample of 256 rows),
 * transform = "block-diagonal" (glq 0.8.16's) | "glq-hadamard-v1", device = "cpu" | "cuda" (the Viterbi searches
 * on the GPU, same states)} */
int lglq_trellis_quantize(lua_State *L) {
  const char *fn = "glq.trellis.quantize_linear";
  lua_settop(L, 3);
  glq_tensor *w = lglq_checktensor_tmp(L, 1, GLQ_F32, fn);
  if (w->ndim != 2) lglq_raisef(L, "%s: W must be a 2-D matrix", fn);
  const int64_t m = w->shape[0], n = w->shape[1];
  glq_tensor *h = NULL;
  if (!lua_isnil(L, 2)) {
    h = lglq_checktensor_tmp(L, 2, GLQ_F64, fn);
    if (h->ndim != 2 || h->shape[0] != n || h->shape[1] != n) lglq_raisef(L, "%s: H must be a %lld x %lld matrix", fn, (long long)n, (long long)n);
  }
  if (!lua_isnil(L, 3)) luaL_checktype(L, 3, LUA_TTABLE);
  glq_quant_opts o;
  glq_quant_opts_default(&o);
  o.bits = (int)lglq_optinteger(L, 3, "bpw", lglq_optinteger(L, 3, "bits", 2));
  o.seed = (uint64_t)lglq_optinteger(L, 3, "seed", 42);
  o.damp = lglq_optnumber(L, 3, "damp", 0.01);
  o.name = lglq_optstring(L, 3, "name", "");
  o.input_name = lglq_optstring(L, 3, "input_name", NULL);
  o.feedback = lglq_optboolean(L, 3, "feedback", 1);
  o.scale_search = lglq_optboolean(L, 3, "scale_search", 1);
  const char *tr = lglq_optstring(L, 3, "transform", "block-diagonal");
  if (!strcmp(tr, "block-diagonal")) o.transform = GLQ_HADAMARD_GLQ_BLOCKDIAG;
  else if (!strcmp(tr, "glq-hadamard-v1") || !strcmp(tr, "default")) o.transform = GLQ_HADAMARD_DEFAULT;
  else lglq_raisef(L, "%s: unknown transform '%s'", fn, tr);
  const char *dev = lglq_optstring(L, 3, "device", "cpu");
  if (strcmp(dev, "cpu") && strcmp(dev, "cuda")) lglq_raisef(L, "%s: device must be \"cpu\" or \"cuda\", got \"%s\"", fn, dev);
  glq_trellis_artifacts a;
  glq_quant_stats st;
  glq_ldlq_backend be = {0}; /* device "cuda": the tiles' Viterbi searches on the GPU (the CPU's states) */
  int rc = !strcmp(dev, "cuda") ? lglq_ldlq_backend_take(&be) : GLQ_OK;
  if (be.ctx) o.backend = &be;
  if (!rc) rc = glq_trellis_quantize_linear(glq_tensor_data(w), m, n, h ? glq_tensor_data(h) : NULL, &o, &a, &st);
  lglq_ldlq_backend_give(&be);
  lglq_check(L, rc, "%s", fn);
  lglq_trellis_push(L, &a, &st); /* moves every tensor: nothing left to leak */
  return 1;
}

int lglq_trellis_dequantize(lua_State *L) {
  const char *fn = "glq.trellis.dequantize_linear";
  glq_trellis_artifacts a;
  check_artifacts(L, 1, fn, &a);
  int64_t shape[2] = {a.m, a.n};
  if (a.m < 1 || a.n < 1) lglq_raisef(L, "%s: bad shape", fn);
  glq_tensor *out = lglq_newtensor(L, GLQ_F32, 2, shape, fn);
  lglq_check(L, glq_trellis_dequantize_linear(&a, glq_tensor_data(out)), "%s", fn);
  return 1;
}

static int l_linear(lua_State *L) {
  const char *fn = "glq.trellis.linear";
  lua_settop(L, 2);
  glq_trellis_artifacts a;
  check_artifacts(L, 1, fn, &a);
  glq_tensor *b = NULL;
  if (!lua_isnil(L, 2)) {
    b = lglq_checktensor_tmp(L, 2, GLQ_F32, fn);
    if (glq_tensor_numel(b) != a.m) lglq_raisef(L, "%s: bias must have %lld entries", fn, (long long)a.m);
  }
  glq_linear *l;
  lglq_check(L, glq_trellis_linear_new(&a, b ? glq_tensor_data(b) : NULL, &l), "%s", fn);
  lglq_pushlinear(L, l, 0);
  return 1;
}

static const luaL_Reg fns[] = {{"lut", l_lut},
                               {"viterbi", l_viterbi},
                               {"quantize_seq", l_quantize_seq},
                               {"pack", l_pack},
                               {"unpack", l_unpack},
                               {"decode_layer", l_decode_layer},
                               {"quantize_linear", lglq_trellis_quantize},
                               {"dequantize_linear", lglq_trellis_dequantize},
                               {"linear", l_linear},
                               {NULL, NULL}};

int lglq_trellis_wants(lua_State *L, int idx) {
  if (!lua_istable(L, idx)) return 0;
  lua_getfield(L, idx, "codebook");
  int yes = lua_type(L, -1) == LUA_TSTRING && !strcmp(lua_tostring(L, -1), "trellis");
  lua_pop(L, 1);
  return yes;
}

void lglq_open_trellis(lua_State *L) { lglq_register(L, "trellis", fns); }
