/* l_eval.c - evaluation statistics: glq.nll_rows(logits, targets), glq.kl_rows(p, q). */
#include "../model/evalops.h"
#include "lglq.h"

/* logits (n, vocab) f32, targets: i32 tensor (n) -> f64 tensor (n) of negative log-likelihoods */
static int l_nll_rows(lua_State *L) {
  glq_tensor *lg = lglq_checktensor_tmp(L, 1, GLQ_F32, "nll_rows logits");
  glq_tensor *tg = lglq_checktensor_tmp(L, 2, GLQ_I32, "nll_rows targets");
  if (lg->ndim != 2 || tg->ndim != 1 || tg->shape[0] != lg->shape[0])
    return lglq_raisef(L, "nll_rows: need logits (n, vocab) and targets (n)");
  int64_t n = lg->shape[0];
  glq_tensor *out = lglq_newtensor(L, GLQ_F64, 1, &n, "nll_rows");
  lglq_check(L, glq_nll_rows(glq_tensor_data(lg), n, lg->shape[1], glq_tensor_data(tg), glq_tensor_data(out)), "nll_rows");
  return 1;
}

/* p, q (n, vocab) f32 -> kl f64 (n), agree u8 (n) */
static int l_kl_rows(lua_State *L) {
  glq_tensor *p = lglq_checktensor_tmp(L, 1, GLQ_F32, "kl_rows p"), *q = lglq_checktensor_tmp(L, 2, GLQ_F32, "kl_rows q");
  if (p->ndim != 2 || q->ndim != 2 || p->shape[0] != q->shape[0] || p->shape[1] != q->shape[1])
    return lglq_raisef(L, "kl_rows: p and q must both be (n, vocab) with equal shapes");
  int64_t n = p->shape[0];
  glq_tensor *kl = lglq_newtensor(L, GLQ_F64, 1, &n, "kl_rows"), *ag = lglq_newtensor(L, GLQ_U8, 1, &n, "kl_rows");
  lglq_check(L, glq_kl_rows(glq_tensor_data(p), glq_tensor_data(q), n, p->shape[1], glq_tensor_data(kl), glq_tensor_data(ag)), "kl_rows");
  return 2;
}

static const luaL_Reg funcs[] = {{"nll_rows", l_nll_rows}, {"kl_rows", l_kl_rows}, {NULL, NULL}};

void lglq_open_eval(lua_State *L) { lglq_register(L, NULL, funcs); }
