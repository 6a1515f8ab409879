/* l_scalefit.c - glq.fit_scales(W, What, H|nil [, {iters = 2, damp = 0.01, max_cols = 16384}]) -> s (m), u (n), info
 * The closed-form refit of a quantized layer's row and column scales (src/quant/scalefit.h): the
 * proxy loss of diag(s)·What·diag(u) against W is minimal along the alternations; info holds
 * loss0 and loss1, tr(dW H dWᵀ) before and after on H damped by damp * mean(diag H) (as LDLQ damps it).
 * W, What: (m, n) float tensors; H: (n, n) f64. */
#include "lglq.h"
#include "../quant/scalefit.h"

static int l_fit_scales(lua_State *L) {
  const char *fn = "fit_scales";
  glq_tensor *w = lglq_checktensor_tmp(L, 1, GLQ_F32, fn);
  glq_tensor *q = lglq_checktensor_tmp(L, 2, GLQ_F32, fn);
  if (w->ndim != 2 || q->ndim != 2 || w->shape[0] != q->shape[0] || w->shape[1] != q->shape[1])
    return lglq_raisef(L, "%s: W and What must be 2-d tensors of one shape", fn);
  const int64_t m = w->shape[0], n = w->shape[1];
  const double *h = NULL;
  if (!lua_isnoneornil(L, 3)) {
    glq_tensor *ht = lglq_checktensor_tmp(L, 3, GLQ_F64, fn);
    if (ht->ndim != 2 || ht->shape[0] != n || ht->shape[1] != n)
      return lglq_raisef(L, "%s: H must be (%lld, %lld) for a weight with %lld columns", fn, (long long)n, (long long)n,
                         (long long)n);
    h = glq_tensor_data(ht);
  }
  lua_Integer iters = 2, max_cols = 16384;
  lua_Number damp = 0.01;
  if (lua_istable(L, 4)) {
    iters = lglq_optinteger(L, 4, "iters", 2);
    damp = lglq_optnumber(L, 4, "damp", 0.01);
    max_cols = lglq_optinteger(L, 4, "max_cols", 16384);
  }
  if (iters < 1 || iters > 100) return lglq_raisef(L, "%s: iters must be 1..100, got %lld", fn, (long long)iters);
  if (!(damp >= 0)) return lglq_raisef(L, "%s: damp must be >= 0, got %g", fn, (double)damp);
  if (max_cols < 0) return lglq_raisef(L, "%s: max_cols must be >= 0, got %lld", fn, (long long)max_cols);
  glq_tensor *s = lglq_newtensor(L, GLQ_F32, 1, &w->shape[0], fn);
  int top_s = lua_gettop(L);
  glq_tensor *u = lglq_newtensor(L, GLQ_F32, 1, &w->shape[1], fn);
  int top_u = lua_gettop(L);
  double l0 = 0, l1 = 0;
  lglq_check(L, glq_fit_scales(glq_tensor_data(w), glq_tensor_data(q), m, n, h, (double)damp, (int)iters, (int64_t)max_cols,
                               glq_tensor_data(s), glq_tensor_data(u), &l0, &l1), "%s", fn);
  lua_pushvalue(L, top_s);
  lua_pushvalue(L, top_u);
  lua_createtable(L, 0, 2);
  lua_pushnumber(L, l0);
  lua_setfield(L, -2, "loss0");
  lua_pushnumber(L, l1);
  lua_setfield(L, -2, "loss1");
  return 3;
}

void lglq_open_scalefit(lua_State *L) {
  static const luaL_Reg fns[] = {{"fit_scales", l_fit_scales}, {NULL, NULL}};
  lglq_register(L, NULL, fns);
}
