/* l_core.c - luaopen_glq_core and the helpers of lglq.h shared by every binding. */
#include <dlfcn.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include "lglq.h"

/* the one place a C status becomes a Lua error: "<CODE>: [context: ]message" (see docs/reliability.md) */
static int raise_status(lua_State *L, int code, const char *ctx) {
  const char *name = glq_status_name(code ? code : GLQ_EINVAL);
  if (ctx[0]) lua_pushfstring(L, "%s: %s: %s", name, ctx, glq_errmsg());
  else lua_pushfstring(L, "%s: %s", name, glq_errmsg());
  return lua_error(L);
}

int lglq_error(lua_State *L, const char *fmt, ...) {
  char ctx[512] = "";
  if (fmt) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(ctx, sizeof ctx, fmt, ap);
    va_end(ap);
  }
  return raise_status(L, glq_errcode(), ctx);
}

int lglq_raisef(lua_State *L, const char *fmt, ...) {
  char msg[1024];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  luaL_where(L, 1);
  lua_pushstring(L, msg);
  lua_concat(L, 2);
  return lua_error(L);
}

int lglq_check(lua_State *L, int rc, const char *fmt, ...) {
  if (rc == GLQ_OK) return 0;
  char ctx[512] = "";
  if (fmt) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(ctx, sizeof ctx, fmt, ap);
    va_end(ap);
  }
  return raise_status(L, rc, ctx);
}

static int opt_field(lua_State *L, int idx, const char *name, int type, const char *tname) {
  if (lua_isnoneornil(L, idx)) return 0;
  luaL_checktype(L, idx, LUA_TTABLE);
  lua_getfield(L, idx, name);
  if (lua_isnil(L, -1)) { lua_pop(L, 1); return 0; }
  if (lua_type(L, -1) != type && !(type == LUA_TNUMBER && lua_isnumber(L, -1)))
    return luaL_error(L, "option '%s' must be a %s, got %s", name, tname, luaL_typename(L, -1));
  return 1;
}

lua_Number lglq_optnumber(lua_State *L, int idx, const char *name, lua_Number def) {
  if (!opt_field(L, idx, name, LUA_TNUMBER, "number")) return def;
  lua_Number v = lua_tonumber(L, -1);
  lua_pop(L, 1);
  return v;
}

lua_Integer lglq_optinteger(lua_State *L, int idx, const char *name, lua_Integer def) {
  if (!opt_field(L, idx, name, LUA_TNUMBER, "number")) return def;
  lua_Number v = lua_tonumber(L, -1);
  lua_pop(L, 1);
  if (v != (lua_Number)(lua_Integer)v) return luaL_error(L, "option '%s' must be an integer, got %f", name, v);
  return (lua_Integer)v;
}

int lglq_optboolean(lua_State *L, int idx, const char *name, int def) {
  if (!opt_field(L, idx, name, LUA_TBOOLEAN, "boolean")) return def;
  int v = lua_toboolean(L, -1);
  lua_pop(L, 1);
  return v;
}

const char *lglq_optstring(lua_State *L, int idx, const char *name, const char *def) {
  if (!opt_field(L, idx, name, LUA_TSTRING, "string")) return def;
  const char *v = lua_tostring(L, -1); /* stays valid: the table holds the string */
  lua_pop(L, 1);
  return v;
}

/* whether e repeats the value of an earlier entry (an alias, not listed in messages) */
static int is_alias(const lglq_enum *names, const lglq_enum *e) {
  for (const lglq_enum *p = names; p < e; p++)
    if (p->value == e->value) return 1;
  return 0;
}

/* the value of v in names, or a raised error listing the names */
static int enum_value(lua_State *L, const char *v, const char *what, const lglq_enum *names, const char *fn) {
  for (const lglq_enum *e = names; e->name; e++)
    if (!strcmp(v, e->name)) return e->value;
  int total = 0, shown = 0;
  for (const lglq_enum *e = names; e->name; e++) total += !is_alias(names, e);
  char list[512] = "";
  size_t len = 0;
  for (const lglq_enum *e = names; e->name && len < sizeof list; e++)
    if (!is_alias(names, e))
      shown++, len += (size_t)snprintf(list + len, sizeof list - len, "%s\"%s\"", shown == 1 ? "" : shown == total ? " or " : ", ", e->name);
  return lglq_raisef(L, "%s: %s must be %s, got \"%s\"", fn, what, list, v);
}

int lglq_optenum(lua_State *L, int idx, const char *name, const lglq_enum *names, int def, const char *fn) {
  const char *v = lglq_optstring(L, idx, name, NULL);
  return v ? enum_value(L, v, name, names, fn) : def;
}

int lglq_checkenum(lua_State *L, int arg, const char *what, const lglq_enum *names, const char *fn) {
  return enum_value(L, luaL_checkstring(L, arg), what, names, fn);
}

enum { TR_V1, TR_BLOCKDIAG, TR_POW2 };
static const lglq_enum transforms[] = {{"glq-hadamard-v1", TR_V1},
                                       {"block-diagonal", TR_BLOCKDIAG},
                                       /* glq 0.2.7's power-of-two padding: our plan for those sizes is its FWHT */
                                       {"pow2-padded", TR_POW2},
                                       {"default", TR_V1},
                                       {NULL, 0}};

glq_hadamard_kind lglq_opttransform(lua_State *L, int idx, const char *name, glq_hadamard_kind def, const char *fn,
                                    int *pow2) {
  int v = lglq_optenum(L, idx, name, transforms, def == GLQ_HADAMARD_GLQ_BLOCKDIAG ? TR_BLOCKDIAG : TR_V1, fn);
  if (pow2) *pow2 = v == TR_POW2;
  return v == TR_BLOCKDIAG ? GLQ_HADAMARD_GLQ_BLOCKDIAG : GLQ_HADAMARD_DEFAULT;
}

const char *lglq_transform_name(glq_hadamard_kind k) {
  return transforms[k == GLQ_HADAMARD_GLQ_BLOCKDIAG ? TR_BLOCKDIAG : TR_V1].name;
}

void lglq_newclass(lua_State *L, const char *name, const luaL_Reg *meta, const luaL_Reg *methods) {
  luaL_newmetatable(L, name);
  if (meta) lglq_register(L, NULL, meta);
  lua_pushstring(L, name);
  lua_setfield(L, -2, "__name");
  lua_newtable(L);
  lglq_register(L, NULL, methods);
  lua_setfield(L, -2, "__index");
  lua_pop(L, 1);
}

void lglq_register(lua_State *L, const char *sub, const luaL_Reg *fns) {
  if (sub) {
    lua_getfield(L, -1, sub);
    if (!lua_istable(L, -1)) {
      lua_pop(L, 1);
      lua_newtable(L);
      lua_pushvalue(L, -1);
      lua_setfield(L, -3, sub);
    }
  }
  for (; fns->name; fns++) {
    lua_pushcfunction(L, fns->func);
    lua_setfield(L, -2, fns->name);
  }
  if (sub) lua_pop(L, 1);
}

/* Keep this shared object mapped until exit: the thread pool's workers run its code, so the
 * dlclose() that lua_close() performs must not unmap it under them. */
static void pin_module(void) {
  Dl_info info;
  if (dladdr((void *)luaopen_glq_core, &info) && info.dli_fname) dlopen(info.dli_fname, RTLD_NOW | RTLD_NODELETE | RTLD_NOLOAD);
}

int luaopen_glq_core(lua_State *L) {
  pin_module();
  lua_newtable(L);
  lglq_open_tensor(L);
  lglq_open_linear(L);
  lglq_open_io(L);
  lglq_open_gguf(L);
  lglq_open_tokenizer(L);
  lglq_open_e8(L);
  lglq_open_e8p(L);
  lglq_open_trellis(L);
  lglq_open_quant(L);
  lglq_open_hif4(L);
  lglq_open_model(L);
  lglq_open_cuda(L);
  lglq_open_eval(L);
  lglq_open_scalefit(L);
  return 1;
}
