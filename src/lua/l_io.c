/* l_io.c - Lua binding of src/io: safetensors load/save/info and sharded checkpoints. */
#include <errno.h>
#include <stdio.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include "lglq.h"
#include "../io/safetensors.h"

static void push_metadata(lua_State *L, const glq_safetensors *s) {
  lua_createtable(L, 0, (int)s->n_meta);
  for (size_t k = 0; k < s->n_meta; k++) {
    lua_pushstring(L, s->meta[2 * k + 1]);
    lua_setfield(L, -2, s->meta[2 * k]);
  }
}

/* Push name -> tensor (moving each reference into Lua) and the metadata table; frees s. */
static int push_loaded(lua_State *L, glq_safetensors *s) {
  lua_createtable(L, 0, (int)s->n);
  for (size_t i = 0; i < s->n; i++) {
    lglq_pushtensor(L, &s->tensors[i]);
    lua_setfield(L, -2, s->entries[i].name);
  }
  push_metadata(L, s);
  glq_safetensors_free(s);
  return 2;
}

/* glq.load_safetensors(path) -> {name = tensor (zero-copy view)}, {metadata} */
static int l_load_safetensors(lua_State *L) {
  glq_safetensors *s;
  lglq_check(L, glq_safetensors_load(luaL_checkstring(L, 1), &s), NULL);
  return push_loaded(L, s);
}

/* glq.load_safetensors_index(index_json_or_dir) -> {name = tensor}, {index metadata} */
static int l_load_safetensors_index(lua_State *L) {
  glq_safetensors *s;
  lglq_check(L, glq_safetensors_load_index(luaL_checkstring(L, 1), &s), NULL);
  return push_loaded(L, s);
}

/* glq.safetensors_info(path) -> {name = {dtype, shape, data_offsets = {b, e}, file_offset}}, {metadata} */
static int l_safetensors_info(lua_State *L) {
  glq_safetensors *s;
  lglq_check(L, glq_safetensors_info(luaL_checkstring(L, 1), &s), NULL);
  lua_createtable(L, 0, (int)s->n);
  for (size_t i = 0; i < s->n; i++) {
    const glq_st_entry *e = &s->entries[i];
    lua_createtable(L, 0, 4);
    lua_pushstring(L, glq_dtype_name(e->dtype));
    lua_setfield(L, -2, "dtype");
    lua_createtable(L, e->ndim, 0);
    for (int d = 0; d < e->ndim; d++) {
      lua_pushnumber(L, (lua_Number)e->shape[d]);
      lua_rawseti(L, -2, d + 1);
    }
    lua_setfield(L, -2, "shape");
    lua_createtable(L, 2, 0);
    lua_pushnumber(L, (lua_Number)e->begin);
    lua_rawseti(L, -2, 1);
    lua_pushnumber(L, (lua_Number)e->end);
    lua_rawseti(L, -2, 2);
    lua_setfield(L, -2, "data_offsets");
    lua_pushnumber(L, (lua_Number)(s->data_start + e->begin));
    lua_setfield(L, -2, "file_offset");
    lua_setfield(L, -2, e->name);
  }
  push_metadata(L, s);
  glq_safetensors_free(s);
  return 2;
}

static size_t table_count(lua_State *L, int idx) {
  size_t n = 0;
  for (lua_pushnil(L); lua_next(L, idx); lua_pop(L, 1)) n++;
  return n;
}

/* A string key/value without embedded NULs (C strings end at the first NUL). */
static const char *plain_string(lua_State *L, int idx, const char *what, const char *path) {
  size_t len;
  if (lua_type(L, idx) != LUA_TSTRING)
    luaL_error(L, "save_safetensors %s: %s must be a string, got %s", path, what, luaL_typename(L, idx));
  const char *s = lua_tolstring(L, idx, &len);
  if (strlen(s) != len) luaL_error(L, "save_safetensors %s: %s '%s...' contains a NUL byte", path, what, s);
  return s;
}

/* glq.save_safetensors(path, {name = tensor}, metadata?) ; metadata: string -> string */
static int l_save_safetensors(lua_State *L) {
  const char *path = luaL_checkstring(L, 1);
  luaL_checktype(L, 2, LUA_TTABLE);
  if (!lua_isnoneornil(L, 3)) luaL_checktype(L, 3, LUA_TTABLE);
  /* scratch arrays live in userdata so a Lua error cannot leak them; the tables keep the strings
   * and tensors alive for the whole call */
  size_t n = table_count(L, 2), nm = lua_istable(L, 3) ? table_count(L, 3) : 0;
  const char **names = lua_newuserdata(L, (n + 1) * sizeof *names);
  glq_tensor *ts = lua_newuserdata(L, (n + 1) * sizeof *ts);
  const char **meta = lua_newuserdata(L, (2 * nm + 1) * sizeof *meta);
  size_t i = 0;
  for (lua_pushnil(L); lua_next(L, 2); lua_pop(L, 1)) {
    names[i] = plain_string(L, -2, "tensor name", path);
    glq_tensor *t = lglq_totensor(L, -1);
    if (!t) luaL_error(L, "save_safetensors %s: '%s' is a %s, not a tensor", path, names[i], luaL_typename(L, -1));
    ts[i++] = *t;
  }
  i = 0;
  if (nm)
    for (lua_pushnil(L); lua_next(L, 3); lua_pop(L, 1)) {
      meta[2 * i] = plain_string(L, -2, "metadata key", path);
      meta[2 * i + 1] = plain_string(L, -1, "metadata value", path);
      i++;
    }
  lglq_check(L, glq_safetensors_save(path, n, names, ts, nm, meta), NULL);
  return 0;
}

/* glq.write_file(path, data): data written to a temporary file beside path, fsynced, then renamed
 * over path (the writer safetensors files use); a failure raises "EIO: <path>: ..." and leaves path as it was */
static int l_write_file(lua_State *L) {
  const char *path = luaL_checkstring(L, 1);
  size_t n;
  const char *data = luaL_checklstring(L, 2, &n);
  glq_atomic_file *f;
  int rc = glq_atomic_open(path, &f);
  if (!rc) {
    rc = glq_atomic_write(f, data, n);
    if (rc) glq_atomic_abort(f); else rc = glq_atomic_commit(f);
  }
  lglq_check(L, rc, NULL);
  return 0;
}

/* glq.read_file(path [, max_bytes]) -> contents: only a regular file (a FIFO, device or directory is refused
 * before anything is read, so /dev/zero or a pipe cannot hang or exhaust memory), at most max_bytes
 * (default 1 GiB); errors "EIO: <path>: ..." or "EFORMAT: <path>: ... larger than ..." */
static int l_read_file(lua_State *L) {
  const char *path = luaL_checkstring(L, 1);
  lua_Number max = luaL_optnumber(L, 2, (lua_Number)(1u << 30));
  struct stat sb;
  if (stat(path, &sb) != 0) return lglq_check(L, glq_error(GLQ_EIO, "%s: cannot open: %s", path, strerror(errno)), NULL);
  if (!S_ISREG(sb.st_mode)) return lglq_check(L, glq_error(GLQ_EIO, "%s: not a regular file", path), NULL);
  if ((lua_Number)sb.st_size > max)
    return lglq_check(L, glq_error(GLQ_EFORMAT, "%s: %lld bytes, larger than the %.0f allowed for this file", path,
                                   (long long)sb.st_size, max), NULL);
  size_t n = (size_t)sb.st_size;
  char *buf = lua_newuserdata(L, n + 1); /* freed by the collector whatever happens below */
  int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC), rc = GLQ_OK;
  if (fd < 0) return lglq_check(L, glq_error(GLQ_EIO, "%s: cannot open: %s", path, strerror(errno)), NULL);
  size_t got = 0;
  if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode)) rc = glq_error(GLQ_EIO, "%s: not a regular file", path);
  while (!rc && got < n) {
    ssize_t r = read(fd, buf + got, n - got);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) rc = glq_error(GLQ_EIO, "%s: read failed: %s", path, strerror(errno));
    else if (r == 0) break; /* shrank while reading: keep what is there */
    else got += (size_t)r;
  }
  close(fd);
  lglq_check(L, rc, NULL);
  lua_pushlstring(L, buf, got);
  return 1;
}

/* glq.file_kind(path) -> "file" | "directory" | "fifo" | "device" | "other", size in bytes; nil, message if
 * it does not exist (stat only: nothing is opened) */
static int l_file_kind(lua_State *L) {
  const char *path = luaL_checkstring(L, 1);
  struct stat sb;
  if (stat(path, &sb) != 0) {
    lua_pushnil(L);
    lua_pushfstring(L, "%s: %s", path, strerror(errno));
    return 2;
  }
  lua_pushstring(L, S_ISREG(sb.st_mode) ? "file" : S_ISDIR(sb.st_mode) ? "directory" : S_ISFIFO(sb.st_mode) ? "fifo"
                    : (S_ISCHR(sb.st_mode) || S_ISBLK(sb.st_mode)) ? "device" : "other");
  lua_pushnumber(L, (lua_Number)sb.st_size);
  return 2;
}

/* glq.file_checksum(path) -> 16 hex digits (see glq_file_checksum) */
static int l_file_checksum(lua_State *L) {
  uint64_t h;
  lglq_check(L, glq_file_checksum(luaL_checkstring(L, 1), &h), NULL);
  char hex[17];
  snprintf(hex, sizeof hex, "%016llx", (unsigned long long)h);
  lua_pushstring(L, hex);
  return 1;
}

void lglq_open_io(lua_State *L) {
  static const luaL_Reg fns[] = {
    {"load_safetensors", l_load_safetensors}, {"load_safetensors_index", l_load_safetensors_index},
    {"safetensors_info", l_safetensors_info}, {"save_safetensors", l_save_safetensors},
    {"write_file", l_write_file}, {"read_file", l_read_file},
    {"file_checksum", l_file_checksum}, {"file_kind", l_file_kind}, {NULL, NULL}};
  lglq_register(L, NULL, fns);
}
