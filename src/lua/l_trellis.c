/* l_trellis.c - glq.trellis: the QTIP trellis codec (src/quant/trellis.h) and trellis-quantized layers.
 *   glq.trellis.lut(variant, K [, tlut]) -> f32 (2^16, V): decoded value(s) of every state ("3inst"; "hyb" from
 *     a (512, 2) tlut)
 *   glq.trellis.viterbi(lut (2^L, V), L, K, x (steps·V) [, {start_ov=, end_ov=}]) -> i32 states, f32 cost
 *   glq.trellis.quantize_seq(lut, L, K, x) -> i32 states (glq's two-pass tail-biting)
 *   glq.trellis.pack(lut, L, K, states) -> i16 words; glq.trellis.unpack(lut, L, K, words, steps) -> i32 states
 *   glq.trellis.decode_layer(packed, m, n, {variant=, K=, tlut=, layout = "kernel"|"natural"}) -> f32 (m, n)
 *   glq.trellis.dequantize_linear(artifacts) -> f32 W;  glq.trellis.linear(artifacts [, bias]) -> glq.linear
 * (glq.trellis.quantize_linear is one of l_quant.c's quantization jobs.) */
#include <string.h>
#include "lglq.h"
#include "../quant/trellis.h"
#include "../layers/trellis_linear.h"

/* the code arguments (lut (2^L, V) f32, L, K) at stack indices i, i+1, i+2, checked without allocating */
typedef struct {
  glq_tensor *lut;
  int L, K, V;
} code_args;

static const lglq_enum variants[] = {{"3inst", GLQ_TRELLIS_3INST}, {"hyb", GLQ_TRELLIS_HYB}, {NULL, 0}};

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
  const char *fn = "glq.trellis.lut";
  int hyb = lglq_checkenum(L, 1, "variant", variants, fn) == GLQ_TRELLIS_HYB, K = (int)luaL_checkinteger(L, 2);
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

static int l_decode_layer(lua_State *L) {
  const char *fn = "glq.trellis.decode_layer";
  lua_settop(L, 4);
  glq_tensor *p = lglq_checktensor_tmp(L, 1, GLQ_I16, fn);
  int64_t m = luaL_checkinteger(L, 2), n = luaL_checkinteger(L, 3);
  luaL_checktype(L, 4, LUA_TTABLE);
  glq_trellis_variant v = lglq_optenum(L, 4, "variant", variants, GLQ_TRELLIS_3INST, fn);
  int K = (int)lglq_optinteger(L, 4, "K", 2);
  static const lglq_enum layouts[] = {{"kernel", 1}, {"natural", 0}, {NULL, 0}};
  int kernel = lglq_optenum(L, 4, "layout", layouts, 1, fn);
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
  rc = glq_trellis_decode_layer(&c, glq_tensor_data(p), m, n, kernel, glq_tensor_data(out));
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
  a->variant = lglq_optenum(L, idx, "variant", variants, GLQ_TRELLIS_3INST, fn);
  if (a->packed.ndim != 2) lglq_raisef(L, "%s: artifacts.trellis_packed must be 2-D", fn);
  a->K = (int)lglq_optinteger(L, idx, "bits", a->packed.shape[1] / 16);
  a->m = (int64_t)lglq_optnumber(L, idx, "out_features", (lua_Number)glq_tensor_numel(&a->su));
  a->n = (int64_t)lglq_optnumber(L, idx, "in_features", (lua_Number)glq_tensor_numel(&a->sv));
  a->transform = lglq_opttransform(L, idx, "transform", GLQ_HADAMARD_GLQ_BLOCKDIAG, fn, NULL);
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
