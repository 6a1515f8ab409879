/* l_quant.c - Lua binding of Hadamard/RHT, Hessian linear algebra and layer quantization (E8/E8P and trellis
 * jobs, src/layers/jobs.h): glq.hadamard, glq.hadamard_info, glq.hessian_accumulate, glq.cholesky, glq.block_ldl,
 * glq.quantize_linear, glq.quantize_linears (several layers side by side), glq.trellis.quantize_linear,
 * glq.dequantize_linear, and glq.rht.{signs, weight, weight_inverse, hessian}. */
#include <string.h>
#include "lglq.h"
#include "../core/pool.h"
#include "../linalg/linalg.h"
#include "../layers/jobs.h"
#include "../quant/hadamard.h"
#include "../quant/ldlq.h"
#include "../quant/rht.h"
#ifdef GLQ_HAVE_CUDA
#include "../../cuda/glq_cuda.h"
static const glq_ldlq_backend_source cuda_backends = {glq_cuda_ldlq_backend_take, glq_cuda_ldlq_backend_give};
#define BACKENDS (&cuda_backends)
#else
#define BACKENDS NULL
#endif

/* a 2-D tensor's shape, or a raised error naming the argument */
static void check2d(lua_State *L, const glq_tensor *t, const char *fn, const char *what, int64_t rows, int64_t cols) {
  if (t->ndim != 2) lglq_raisef(L, "%s: %s must be a 2-D matrix, got %d dimensions", fn, what, t->ndim);
  if ((rows >= 0 && t->shape[0] != rows) || (cols >= 0 && t->shape[1] != cols))
    lglq_raisef(L, "%s: %s must be a %lld x %lld matrix", fn, what, (long long)rows, (long long)cols);
}

/* glq.hadamard(x [, {transpose=bool, kind="glq-hadamard-v1"|"block-diagonal"}]) -> new f32 tensor,
 * transform along the last dimension */
static int l_hadamard(lua_State *L) {
  glq_tensor *x = lglq_checktensor(L, 1), y;
  int tr = lglq_optboolean(L, 2, "transpose", 0);
  glq_hadamard_kind kind = lglq_opttransform(L, 2, "kind", GLQ_HADAMARD_DEFAULT, "glq.hadamard", NULL);
  if (x->ndim < 1) return lglq_raisef(L, "glq.hadamard: x must have at least one dimension");
  lglq_check(L, glq_tensor_to(x, GLQ_F32, &y), "glq.hadamard", NULL);
  int64_t n = y.shape[y.ndim - 1], rows = n ? glq_tensor_numel(&y) / n : 0;
  int rc = glq_hadamard_transform(glq_tensor_data(&y), rows, n, kind, tr);
  if (rc) glq_tensor_release(&y);
  lglq_check(L, rc, "glq.hadamard", NULL);
  lglq_pushtensor(L, &y);
  return 1;
}

/* glq.hadamard_info(n [, {kind=}]) -> {description=, symmetric=, coherence=} */
static int l_hadamard_info(lua_State *L) {
  const glq_hadamard *h;
  glq_hadamard_kind kind = lglq_opttransform(L, 2, "kind", GLQ_HADAMARD_DEFAULT, "glq.hadamard_info", NULL);
  lglq_check(L, glq_hadamard_plan((int64_t)luaL_checknumber(L, 1), kind, &h), "glq.hadamard_info", NULL);
  lua_createtable(L, 0, 3);
  lua_pushstring(L, glq_hadamard_describe(h));
  lua_setfield(L, -2, "description");
  lua_pushboolean(L, glq_hadamard_is_symmetric(h));
  lua_setfield(L, -2, "symmetric");
  lua_pushnumber(L, glq_hadamard_coherence(h));
  lua_setfield(L, -2, "coherence");
  return 1;
}

/* glq.hessian_accumulate(H, X): H (n x n contiguous f64) += Xᵀ·X, X (..., n) any float dtype; returns H */
static int l_hessian_accumulate(lua_State *L) {
  glq_tensor *h = lglq_checktensor(L, 1), *x = lglq_checktensor(L, 2), xf;
  if (h->dtype != GLQ_F64 || h->ndim != 2 || h->shape[0] != h->shape[1] || !glq_tensor_is_contiguous(h))
    return lglq_raisef(L, "glq.hessian_accumulate: H must be a contiguous square f64 matrix");
  int64_t n = h->shape[0];
  if (x->ndim < 1 || x->shape[x->ndim - 1] != n)
    return lglq_raisef(L, "glq.hessian_accumulate: X's last dimension must be %lld", (long long)n);
  lglq_checktensor_as(L, 2, GLQ_F32, "glq.hessian_accumulate X", &xf);
  int rc = glq_hessian_accumulate(glq_tensor_data(h), n, glq_tensor_data(&xf), glq_tensor_numel(&xf) / n);
  glq_tensor_release(&xf);
  lglq_check(L, rc, "glq.hessian_accumulate");
  lua_pushvalue(L, 1);
  return 1;
}

/* a square matrix argument as a new f64 copy */
static int64_t square_f64(lua_State *L, int idx, const char *fn, glq_tensor *out) {
  glq_tensor *a = lglq_checktensor(L, idx);
  check2d(L, a, fn, "A", -1, -1);
  check2d(L, a, fn, "A", a->shape[0], a->shape[0]);
  lglq_check(L, glq_tensor_to(a, GLQ_F64, out), "%s", fn);
  return a->shape[0];
}

/* glq.cholesky(A) -> lower factor C (f64) with A = C·Cᵀ; error if A is not positive definite */
static int l_cholesky(lua_State *L) {
  glq_tensor c;
  int64_t n = square_f64(L, 1, "glq.cholesky", &c);
  int rc = glq_cholesky(glq_tensor_data(&c), n);
  if (rc) glq_tensor_release(&c);
  lglq_check(L, rc, "glq.cholesky");
  lglq_pushtensor(L, &c);
  return 1;
}

/* glq.block_ldl(A [, b=8]) -> L (f32 n x n), D (f32 n/b x b x b) with A = L·blkdiag(D)·Lᵀ */
static int l_block_ldl(lua_State *L) {
  glq_tensor c, l, d;
  int b = (int)luaL_optinteger(L, 2, 8);
  int64_t n = square_f64(L, 1, "glq.block_ldl", &c);
  int64_t ls[2] = {n, n}, ds[3] = {b > 0 ? n / b : 0, b, b};
  int rc = (b < 1 || b > 64 || n % b) ? glq_error(GLQ_EINVAL, "size %lld is not a multiple of the block size %d (1..64)", (long long)n, b)
                                      : glq_cholesky(glq_tensor_data(&c), n);
  if (!rc && !(rc = glq_tensor_new(GLQ_F32, 2, ls, &l)) && (rc = glq_tensor_new(GLQ_F32, 3, ds, &d))) glq_tensor_release(&l);
  if (!rc && (rc = glq_block_ldl(glq_tensor_data(&c), n, b, glq_tensor_data(&l), glq_tensor_data(&d))))
    glq_tensor_release(&l), glq_tensor_release(&d);
  glq_tensor_release(&c);
  lglq_check(L, rc, "glq.block_ldl");
  lglq_pushtensor(L, &l);
  lglq_pushtensor(L, &d);
  return 2;
}

/* ---- layer quantization: jobs of src/layers/jobs.h ---- */

static void push_field(lua_State *L, const char *name, glq_tensor *t) {
  if (!t->st) return;
  lglq_pushtensor(L, t);
  lua_setfield(L, -2, name);
}

static void set_number(lua_State *L, const char *name, double v) {
  lua_pushnumber(L, v);
  lua_setfield(L, -2, name);
}

static void set_string(lua_State *L, const char *name, const char *v) {
  lua_pushstring(L, v);
  lua_setfield(L, -2, name);
}

static const lglq_enum devices[] = {{"cpu", 0}, {"cuda", 1}, {NULL, 0}};

/* Check one job's W (wi), H (hi) and options table (oi) into j, W as f32 and H as f64 anchored on the stack
 * (two values pushed). The kind: the trellis when `trellis` or opts.codebook = "trellis", else E8/E8P. */
static void job_check(lua_State *L, int wi, int hi, int oi, const char *fn, int trellis, glq_quant_job *j) {
  glq_tensor *w0 = lglq_checktensor(L, wi);
  check2d(L, w0, fn, "W", -1, -1);
  j->m = w0->shape[0];
  j->n = w0->shape[1];
  if (!lua_isnoneornil(L, hi)) check2d(L, lglq_checktensor(L, hi), fn, "H", j->n, j->n);
  glq_quant_opts *o = &j->o;
  glq_quant_opts_default(o);
  if (!lua_isnoneornil(L, oi)) luaL_checktype(L, oi, LUA_TTABLE);
  const char *cb = lglq_optstring(L, oi, "codebook", "e8");
  j->kind = trellis || !strcmp(cb, "trellis") ? GLQ_JOB_TRELLIS : GLQ_JOB_E8;
  o->bits = (int)lglq_optinteger(L, oi, "bpw", lglq_optinteger(L, oi, "bits", 2));
  o->seed = (uint64_t)lglq_optinteger(L, oi, "seed", 42);
  o->damp = lglq_optnumber(L, oi, "damp", 0.01);
  o->name = lglq_optstring(L, oi, "name", "");
  o->input_name = lglq_optstring(L, oi, "input_name", NULL);
  o->scale_search = lglq_optboolean(L, oi, "scale_search", 1);
  o->feedback = lglq_optboolean(L, oi, "feedback", 1);
  if (j->kind == GLQ_JOB_E8) {
    o->tune_iters = (int)lglq_optinteger(L, oi, "tune_iters", 0);
    o->resid_scale = lglq_optnumber(L, oi, "resid_scale", 0);
    if ((o->codebook = glq_codebook_from_name(cb)) < 0)
      lglq_raisef(L, "%s: unknown codebook '%s' (expected e8, e8p or trellis)", fn, cb);
  }
  /* glq 0.8.16's trellis layers use block-diagonal Hadamards */
  o->transform = lglq_opttransform(L, oi, "transform", j->kind == GLQ_JOB_TRELLIS ? GLQ_HADAMARD_GLQ_BLOCKDIAG : GLQ_HADAMARD_DEFAULT, fn, NULL);
  j->use_backend = lglq_optenum(L, oi, "device", devices, 0, fn);
#ifndef GLQ_HAVE_CUDA
  if (j->use_backend) lglq_raisef(L, "%s: device \"cuda\": this build has no CUDA backend (nvcc was not found at build time)", fn);
#endif
  j->w = glq_tensor_data(lglq_checktensor_tmp(L, wi, GLQ_F32, fn));
  if (lua_isnoneornil(L, hi)) lua_pushnil(L);
  else j->h = glq_tensor_data(lglq_checktensor_tmp(L, hi, GLQ_F64, fn));
}

/* the statistics table of a quantization (resid_scale: E8's residual scale too) */
static void push_stats(lua_State *L, const glq_quant_stats *st, int resid_scale) {
  lua_createtable(L, 0, 13);
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
  if (resid_scale) set_number(L, "resid_scale", st->resid_scale);
}

/* Push a finished job's result table (moves the artifacts into it). */
static void job_push(lua_State *L, glq_quant_job *j) {
  lua_createtable(L, 0, 12);
  if (j->kind == GLQ_JOB_TRELLIS) {
    glq_trellis_artifacts *a = &j->trellis;
    push_field(L, "trellis_packed", &a->packed);
    push_field(L, "SU", &a->su);
    push_field(L, "SV", &a->sv);
    push_field(L, "Wscale", &a->wscale);
    push_field(L, "tlut", &a->tlut);
    set_string(L, "codebook", "trellis");
    set_string(L, "variant", a->variant == GLQ_TRELLIS_HYB ? "hyb" : "3inst");
    set_string(L, "transform", lglq_transform_name(a->transform));
    set_number(L, "bits", a->K);
  } else {
    glq_quant_artifacts *a = &j->e8;
    push_field(L, "Qidxs", &a->qidxs);
    push_field(L, "Qidxs2", &a->qidxs2);
    push_field(L, "SU", &a->su);
    push_field(L, "SV", &a->sv);
    push_field(L, "Wscale", &a->wscale);
    push_field(L, "inv_resid_scale", &a->inv_resid_scale);
    set_number(L, "bits", j->o.bits);
    /* codebook and transform only when not the defaults, so default results keep their exact fields */
    if (a->codebook == GLQ_CODEBOOK_E8P) set_string(L, "codebook", "e8p");
    if (j->o.transform != GLQ_HADAMARD_DEFAULT) set_string(L, "transform", lglq_transform_name(j->o.transform));
  }
  set_number(L, "out_features", (double)j->m);
  set_number(L, "in_features", (double)j->n);
  push_stats(L, &j->st, j->kind == GLQ_JOB_E8);
  lua_setfield(L, -2, "stats");
}

/* one job from arguments 1-3 */
static int quantize_one(lua_State *L, const char *fn, int trellis) {
  lua_settop(L, 3);
  glq_quant_job j;
  memset(&j, 0, sizeof j);
  job_check(L, 1, 2, 3, fn, trellis, &j);
  if (glq_quantize_linears(&j, 1, glq_num_threads(), BACKENDS) >= 0) {
    glq_quant_job_free(&j);
    return lglq_check(L, glq_error(j.rc, "%s", j.msg), "%s", fn);
  }
  job_push(L, &j);
  return 1;
}

/* glq.quantize_linear(W, H|nil, opts) with opts {bpw (or bits) = 2|3|4, tune_iters = 0, seed = 42,
 * damp = 0.01, name, input_name, scale_search = true, feedback = true, resid_scale (0 = default),
 * codebook = "e8" | "e8p" | "trellis" (as glq.trellis.quantize_linear),
 * transform = "glq-hadamard-v1" | "block-diagonal", device = "cpu" | "cuda" (LDLQ sweeps on the GPU: the
 * same search and per-row arithmetic, group updates summed in cuBLAS's order)}
 * -> {Qidxs, [Qidxs2], SU, SV, Wscale, [inv_resid_scale], bits, [transform = "block-diagonal"],
 * out_features, in_features, stats = {sqnr_db, proxy_loss, proxy_loss_orig, bpw, seconds (and its parts
 * seconds_prepare, seconds_search, seconds_sweep, seconds_stats), damp_used, fallback, wscale_rel, resid_scale}} */
static int l_quantize_linear(lua_State *L) { return quantize_one(L, "glq.quantize_linear", 0); }

/* glq.trellis.quantize_linear(W, H|nil, opts): opts {bpw (or bits) = 2|3|4, seed = 42, damp = 0.01, name,
 * input_name, feedback = true, scale_search = true (Wscale: glq's rule, 0.95x or 1.05x, on a sample of 256 rows),
 * transform = "block-diagonal" (glq 0.8.16's) | "glq-hadamard-v1", device = "cpu" | "cuda" (the Viterbi searches
 * on the GPU, same states)} -> {trellis_packed, SU, SV, Wscale, [tlut], codebook = "trellis", variant, transform,
 * bits, out_features, in_features, stats (as glq.quantize_linear's, without resid_scale)} */
static int l_trellis_quantize_linear(lua_State *L) { return quantize_one(L, "glq.trellis.quantize_linear", 1); }

/* glq.quantize_linears({{W, H|nil, opts}, ...}) -> {result, ...}: glq.quantize_linear on every job (E8, E8P and
 * trellis alike), the results in order and byte-identical to one call each. Small layers (SmolLM2's) run side by
 * side, largest first, which keeps many threads busy where one layer's 8-column sweep cannot. The first
 * failing job's error is raised after all have finished. */
static int l_quantize_linears(lua_State *L) {
  const char *fn = "glq.quantize_linears";
  luaL_checktype(L, 1, LUA_TTABLE);
  lua_settop(L, 1);
  int nj = (int)lua_objlen(L, 1);
  luaL_checkstack(L, 5 * nj + 8, fn); /* per job: W, H, opts and the two anchored inputs */
  glq_quant_job *jobs = lua_newuserdata(L, sizeof(glq_quant_job) * (size_t)(nj > 0 ? nj : 1));
  memset(jobs, 0, sizeof(glq_quant_job) * (size_t)(nj > 0 ? nj : 1));
  const int base = lua_gettop(L);
  for (int i = 0; i < nj; i++) { /* job i's W, H, opts at base + 3i + 1.. (kept on the stack) */
    lua_rawgeti(L, 1, i + 1);
    if (!lua_istable(L, -1)) return lglq_raisef(L, "%s: job %d must be a table {W, H, opts}", fn, i + 1);
    int t = lua_gettop(L);
    lua_rawgeti(L, t, 1);
    lua_rawgeti(L, t, 2);
    lua_rawgeti(L, t, 3);
    lua_remove(L, t);
  }
  for (int i = 0; i < nj; i++) job_check(L, base + 3 * i + 1, base + 3 * i + 2, base + 3 * i + 3, fn, 0, &jobs[i]);
  int bad = glq_quantize_linears(jobs, nj, glq_num_threads(), BACKENDS);
  if (bad >= 0) {
    for (int i = 0; i < nj; i++) glq_quant_job_free(&jobs[i]);
    return lglq_check(L, glq_error(jobs[bad].rc, "%s", jobs[bad].msg), "%s: job %d", fn, bad + 1);
  }
  lua_createtable(L, nj, 0);
  for (int i = 0; i < nj; i++) {
    job_push(L, &jobs[i]);
    lua_rawseti(L, -2, i + 1);
  }
  return 1;
}

/* the tensor in field `name` of the table at idx (borrowed; NULL if absent and optional) */
static const glq_tensor *art_field(lua_State *L, int idx, const char *name, int required) {
  lua_getfield(L, idx, name);
  glq_tensor *t = lglq_totensor(L, -1);
  int bad = !t && (required || !lua_isnil(L, -1));
  lua_pop(L, 1); /* the table keeps it alive */
  if (bad) lglq_raisef(L, "glq.dequantize_linear: artifacts.%s must be a tensor", name);
  return t;
}

/* glq.dequantize_linear(artifacts [, {transform=}]) -> W (out_features x in_features f32); the transform
 * comes from the options, else artifacts.transform, else "glq-hadamard-v1" */
static int l_dequantize_linear(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  if (!lua_isnoneornil(L, 2)) luaL_checktype(L, 2, LUA_TTABLE);
  if (lglq_trellis_wants(L, 1)) return lglq_trellis_dequantize(L); /* codebook "trellis": l_trellis.c */
  glq_quant_artifacts a;
  memset(&a, 0, sizeof a);
  const char *fn = "glq.dequantize_linear";
  int from_opts = lglq_optstring(L, 2, "transform", NULL) != NULL; /* the options' transform, else the artifacts' */
  a.transform = lglq_opttransform(L, from_opts ? 2 : 1, "transform", GLQ_HADAMARD_DEFAULT, fn, NULL);
  const glq_tensor *q2 = art_field(L, 1, "Qidxs2", 0), *irs = art_field(L, 1, "inv_resid_scale", 0);
  a.qidxs = *art_field(L, 1, "Qidxs", 1);
  a.su = *art_field(L, 1, "SU", 1);
  a.sv = *art_field(L, 1, "SV", 1);
  a.wscale = *art_field(L, 1, "Wscale", 1);
  if (q2) a.qidxs2 = *q2;
  if (irs) a.inv_resid_scale = *irs;
  a.bits = q2 ? 4 : 2;
  const char *cb = lglq_optstring(L, 1, "codebook", "e8");
  if ((a.codebook = glq_codebook_from_name(cb)) < 0)
    lglq_raisef(L, "glq.dequantize_linear: unknown codebook '%s' (expected e8, e8p or trellis)", cb);
  if (a.codebook == GLQ_CODEBOOK_E8P && q2) { /* stage 2 is E81B at 3 bits, E8P at 4: bits says which */
    a.bits = (int)lglq_optinteger(L, 1, "bits", 0);
    if (a.bits != 3 && a.bits != 4) lglq_raisef(L, "glq.dequantize_linear: an E8P layer with Qidxs2 needs bits = 3 or 4, got %d", a.bits);
  }
  a.m = (int64_t)lglq_optnumber(L, 1, "out_features", (lua_Number)glq_tensor_numel(&a.su));
  a.n = (int64_t)lglq_optnumber(L, 1, "in_features", (lua_Number)glq_tensor_numel(&a.sv));
  int64_t shape[2] = {a.m, a.n};
  glq_tensor *out = lglq_newtensor(L, GLQ_F32, 2, shape, "glq.dequantize_linear");
  lglq_check(L, glq_dequantize_linear(&a, glq_tensor_data(out)), "glq.dequantize_linear");
  return 1;
}

/* ---- glq.rht: the transforms themselves (tests, analysis, other modules' Lua code) ---- */

/* glq.rht.signs(seed, name, tag, len) -> f32 +-1 tensor */
static int l_rht_signs(lua_State *L) {
  uint64_t seed = (uint64_t)luaL_checkinteger(L, 1);
  const char *name = luaL_checkstring(L, 2), *tag = luaL_checkstring(L, 3);
  int64_t len = (int64_t)luaL_checkinteger(L, 4);
  if (len < 0) return lglq_raisef(L, "glq.rht.signs: negative length");
  glq_tensor *t = lglq_newtensor(L, GLQ_F32, 1, &len, "glq.rht.signs");
  glq_rht_signs(seed, name, tag, len, glq_tensor_data(t));
  return 1;
}

/* a 1-D sign tensor argument of length len as f32, anchored on the stack (see lglq_checktensor_tmp) */
static glq_tensor *signs_arg(lua_State *L, int idx, int64_t len, const char *fn, const char *what) {
  glq_tensor *t = lglq_checktensor(L, idx);
  if (t->ndim != 1 || t->shape[0] != len) lglq_raisef(L, "%s: %s must have length %lld", fn, what, (long long)len);
  return lglq_checktensor_tmp(L, idx, GLQ_F32, fn);
}

/* glq.rht.weight(W, SU, SV) -> W̃ (m_pad x n_pad f32) */
static int l_rht_weight(lua_State *L) {
  const char *fn = "glq.rht.weight";
  glq_tensor *w0 = lglq_checktensor(L, 1);
  check2d(L, w0, fn, "W", -1, -1);
  int64_t m = w0->shape[0], n = w0->shape[1], shape[2] = {glq_rht_pad(m), glq_rht_pad(n)};
  glq_tensor *su = signs_arg(L, 2, shape[0], fn, "SU"), *sv = signs_arg(L, 3, shape[1], fn, "SV");
  glq_tensor *w = lglq_checktensor_tmp(L, 1, GLQ_F32, fn), *out = lglq_newtensor(L, GLQ_F32, 2, shape, fn);
  lglq_check(L, glq_rht_weight(glq_tensor_data(w), m, n, glq_tensor_data(su), glq_tensor_data(sv), GLQ_HADAMARD_DEFAULT, glq_tensor_data(out)), "%s", fn);
  return 1;
}

/* glq.rht.weight_inverse(W̃, SU, SV, m, n) -> W (m x n f32) */
static int l_rht_weight_inverse(lua_State *L) {
  const char *fn = "glq.rht.weight_inverse";
  int64_t m = (int64_t)luaL_checkinteger(L, 4), n = (int64_t)luaL_checkinteger(L, 5), shape[2] = {m, n};
  if (m < 1 || n < 1) return lglq_raisef(L, "%s: m and n must be positive", fn);
  check2d(L, lglq_checktensor(L, 1), fn, "W̃", glq_rht_pad(m), glq_rht_pad(n));
  glq_tensor *su = signs_arg(L, 2, glq_rht_pad(m), fn, "SU"), *sv = signs_arg(L, 3, glq_rht_pad(n), fn, "SV");
  glq_tensor *wt = lglq_checktensor_tmp(L, 1, GLQ_F32, fn), *out = lglq_newtensor(L, GLQ_F32, 2, shape, fn);
  lglq_check(L, glq_rht_weight_inverse(glq_tensor_data(wt), m, n, glq_tensor_data(su), glq_tensor_data(sv),
                                       GLQ_HADAMARD_DEFAULT, glq_tensor_data(out)), "%s", fn);
  return 1;
}

/* glq.rht.hessian(H|nil, SV [, n]) -> H̃ (n_pad x n_pad f32); n is needed when H is nil */
static int l_rht_hessian(lua_State *L) {
  const char *fn = "glq.rht.hessian";
  int64_t n = lua_isnoneornil(L, 1) ? (int64_t)luaL_checkinteger(L, 3) : -1;
  if (n < 0) {
    glq_tensor *h0 = lglq_checktensor(L, 1);
    check2d(L, h0, fn, "H", -1, -1);
    check2d(L, h0, fn, "H", h0->shape[0], h0->shape[0]);
    n = h0->shape[0];
  }
  if (n < 1) return lglq_raisef(L, "%s: n must be positive", fn);
  int64_t np = glq_rht_pad(n), shape[2] = {np, np};
  glq_tensor *sv = signs_arg(L, 2, np, fn, "SV");
  glq_tensor *h = lua_isnoneornil(L, 1) ? NULL : lglq_checktensor_tmp(L, 1, GLQ_F64, fn);
  glq_tensor *out = lglq_newtensor(L, GLQ_F32, 2, shape, fn);
  lglq_check(L, glq_rht_hessian(h ? glq_tensor_data(h) : NULL, n, 0.0, glq_tensor_data(sv), GLQ_HADAMARD_DEFAULT, glq_tensor_data(out)), "%s", fn);
  return 1;
}

void lglq_open_quant(lua_State *L) {
  static const luaL_Reg fns[] = {{"hadamard", l_hadamard},
                                 {"hadamard_info", l_hadamard_info},
                                 {"hessian_accumulate", l_hessian_accumulate},
                                 {"cholesky", l_cholesky},
                                 {"block_ldl", l_block_ldl},
                                 {"quantize_linear", l_quantize_linear},
                                 {"quantize_linears", l_quantize_linears},
                                 {"dequantize_linear", l_dequantize_linear},
                                 {NULL, NULL}};
  static const luaL_Reg rht[] = {{"signs", l_rht_signs},
                                 {"weight", l_rht_weight},
                                 {"weight_inverse", l_rht_weight_inverse},
                                 {"hessian", l_rht_hessian},
                                 {NULL, NULL}};
  static const luaL_Reg trellis[] = {{"quantize_linear", l_trellis_quantize_linear}, {NULL, NULL}};
  lglq_register(L, NULL, fns);
  lglq_register(L, "rht", rht);
  lglq_register(L, "trellis", trellis);
}
