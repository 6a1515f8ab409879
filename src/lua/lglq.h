/* lglq.h - helpers shared by the Lua bindings (the only headers that include lua.h).
 * Tensors are full userdata of metatable "glq.tensor" holding a glq_tensor; linear layers are
 * userdata of metatable "glq.linear" holding a glq_linear* (src/layers/linear.h). */
#ifndef LGLQ_H
#define LGLQ_H
#include <lauxlib.h>
#include <lua.h>
#include "../core/tensor.h"
#include "../layers/linear.h"
#include "../quant/ldlq.h"

#define LGLQ_TENSOR "glq.tensor"
#define LGLQ_LINEAR "glq.linear"
#define LGLQ_GGUF "glq.gguf"     /* holds a glq_gguf* (l_gguf.c); the tokenizer binding reads it too */

/* tensors */
glq_tensor *lglq_checktensor(lua_State *L, int idx);         /* raises "bad argument #idx (tensor expected, got X)" */
glq_tensor *lglq_totensor(lua_State *L, int idx);            /* NULL if not a tensor */
void lglq_pushtensor(lua_State *L, glq_tensor *t);           /* moves t's reference into a new userdata; clears *t */
/* Pushes the tensor a call writes its f32 result into and returns its data: the table at opts'
 * field `out` when given (a writable contiguous f32 tensor of exactly this shape, so loops reuse
 * one buffer and make no garbage), else a new tensor. */
float *lglq_push_out(lua_State *L, int opts, int ndim, const int64_t *shape, const char *what);
/* a contiguous tensor of dtype dt from argument idx (converting/copying if needed); release it after use,
 * and call nothing that can raise before that (else use lglq_checktensor_tmp) */
void lglq_checktensor_as(lua_State *L, int idx, glq_dtype dt, const char *what, glq_tensor *out);
/* Temporaries that cannot leak when the call raises: the tensor lives in a userdata pushed on the stack
 * (the collector frees it); never release it. lglq_checktensor_tmp: as lglq_checktensor_as;
 * lglq_newtensor: a new zero-filled tensor (push it as the result with lua_pushvalue). */
glq_tensor *lglq_checktensor_tmp(lua_State *L, int idx, glq_dtype dt, const char *what);
glq_tensor *lglq_newtensor(lua_State *L, glq_dtype dt, int ndim, const int64_t *shape, const char *what);
int lglq_checkshape(lua_State *L, int idx, int64_t *shape);  /* Lua table of sizes -> ndim */
void lglq_pushshape(lua_State *L, const glq_tensor *t);      /* push {d1, d2, ...} */
glq_dtype lglq_checkdtype(lua_State *L, int idx);            /* dtype name string */
glq_dtype lglq_optdtype(lua_State *L, int idx, glq_dtype def);

/* errors: raise "<context>: <glq_errmsg()>" (context printf-style; NULL for none). Never returns. */
int lglq_error(lua_State *L, const char *fmt, ...);
/* raise a message formatted with C printf rules (%lld, %zu, %g work, unlike lua_pushfstring). Never returns. */
int lglq_raisef(lua_State *L, const char *fmt, ...)
#if defined(__GNUC__)
  __attribute__((format(printf, 2, 3)))
#endif
  ;
/* if rc != GLQ_OK raise like lglq_error; otherwise return 0 */
int lglq_check(lua_State *L, int rc, const char *fmt, ...);

/* option tables: read field `name` of the table at idx (absent/nil -> default; wrong type -> error naming it) */
lua_Number lglq_optnumber(lua_State *L, int idx, const char *name, lua_Number def);
lua_Integer lglq_optinteger(lua_State *L, int idx, const char *name, lua_Integer def);
int lglq_optboolean(lua_State *L, int idx, const char *name, int def);
const char *lglq_optstring(lua_State *L, int idx, const char *name, const char *def);

/* enumerations (luaL_checkoption for option tables): the value of the name in field `name` of the option
 * table at idx (absent/nil -> def); any other string raises '<fn>: <name> must be "a", "b" or "c", got "x"'
 * (each value listed by its first name: later entries of the same value are aliases). names ends with {NULL}. */
typedef struct {
  const char *name;
  int value;
} lglq_enum;
int lglq_optenum(lua_State *L, int idx, const char *name, const lglq_enum *names, int def, const char *fn);
/* the same for the string argument at arg (what names it in the message) */
int lglq_checkenum(lua_State *L, int arg, const char *what, const lglq_enum *names, const char *fn);
/* the RHT's Hadamard kind, the one parser of transform names: "glq-hadamard-v1" (alias "default"),
 * "block-diagonal", or "pow2-padded" (glq 0.2.7's layout: our default plans, stored sizes powers of two; *pow2
 * says so when pow2 is not NULL); and the name a result reports */
glq_hadamard_kind lglq_opttransform(lua_State *L, int idx, const char *name, glq_hadamard_kind def, const char *fn,
                                    int *pow2);
const char *lglq_transform_name(glq_hadamard_kind k);

/* classes: metatable `name` (luaL_newmetatable) with the metamethods of meta (__gc, __tostring, ...; NULL: none),
 * __name, and __index = a table of methods; leaves the stack as it was. */
void lglq_newclass(lua_State *L, const char *name, const luaL_Reg *meta, const luaL_Reg *methods);

/* linear layers: push takes ownership of l; if anchor != 0 the value at that index is kept alive
 * as long as the layer (for layers that borrow tensor memory). */
void lglq_pushlinear(lua_State *L, glq_linear *l, int anchor);
glq_linear *lglq_checklinear(lua_State *L, int idx);

/* models (l_model.c): a glq.llama userdata's model; token ids (tensor (T)/(B, T), flat or nested table)
 * as an i32 (B × T) tensor pushed on the stack (it owns the returned data) */
struct glq_llama *lglq_checkllama(lua_State *L, int idx);
const int32_t *lglq_checktokens(lua_State *L, int idx, int *B, int *T);

/* device tensors (l_cuda.c; metatable "glq.cuda.tensor"): glq_tensors with GLQ_STORAGE_CUDA storage.
 * push moves t's reference into a new userdata (raises in a build without CUDA); to: NULL if not one */
void lglq_pushdevtensor(lua_State *L, glq_tensor *t);
glq_tensor *lglq_todevtensor(lua_State *L, int idx);

/* registration: set fns into the table on top of the stack, or into its subtable `sub` (created if absent) */
void lglq_register(lua_State *L, const char *sub, const luaL_Reg *fns);

/* module openers, each called by luaopen_glq_core with the core table on top of the stack */
void lglq_open_tensor(lua_State *L);
void lglq_open_linear(lua_State *L);
void lglq_open_io(lua_State *L);
void lglq_open_gguf(lua_State *L);
void lglq_open_tokenizer(lua_State *L);
void lglq_open_e8(lua_State *L);
void lglq_open_e8p(lua_State *L);
void lglq_open_trellis(lua_State *L);
/* codebook "trellis" (l_trellis.c): whether the table at idx has codebook = "trellis"; glq.dequantize_linear
 * hands such calls to glq.trellis.dequantize_linear (quantization: l_quant.c's jobs, one path for every codebook) */
int lglq_trellis_wants(lua_State *L, int idx);
int lglq_trellis_dequantize(lua_State *L);
void lglq_open_quant(lua_State *L);
void lglq_open_hif4(lua_State *L);
void lglq_open_model(lua_State *L);
void lglq_open_cuda(lua_State *L);
void lglq_open_eval(lua_State *L);
void lglq_open_scalefit(lua_State *L);

int luaopen_glq_core(lua_State *L);

#endif
