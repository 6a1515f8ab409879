/* main.c - the `glq` executable: runs Lua scripts, recipes and -e chunks, and an interactive REPL.
 *
 *   glq [options] [SCRIPT.lua | NAME | -] [args...]
 *
 * How paths are resolved. The executable reads its own location from /proc/self/exe (falling back
 * to argv[0] when it has a '/'), takes DIR = its directory and ROOT = DIR/.. . Then:
 *  - source tree, when ROOT/lua/glq is a directory (BUILD = DIR; for BUILD/bin/glq, ROOT = DIR/../..):
 *      package.path  ROOT/lua/?.lua;ROOT/lua/?/init.lua
 *      package.cpath BUILD/?.so;BUILD/lib/?.so
 *      recipes       ROOT/recipes
 *  - otherwise installed, ROOT = PREFIX (`make install` and a luarocks tree share this layout):
 *      package.path  PREFIX/share/lua/5.1/?.lua;PREFIX/share/lua/5.1/?/init.lua
 *      package.cpath PREFIX/lib/lua/5.1/?.so
 *      recipes       PREFIX/share/glq/recipes, then PREFIX/share/lua/5.1/glq/recipes (luarocks)
 * When LUA_PATH / LUA_CPATH are set, LuaJIT's value from them (";;" = LuaJIT's defaults) comes
 * first and ours follows; when unset, ours comes first and LuaJIT's defaults follow.
 * Directories in GLQ_RECIPES (colon-separated) are searched for recipes before the ones above.
 * The C module glq.core is linked into this binary and preloaded (package.preload), so the binary
 * needs no core.so; build with -DGLQ_NO_STATIC_CORE to load it from package.cpath instead.
 *
 * Errors print one line "glq: <message>" and exit with status 1; GLQ_DEBUG=1 adds the traceback.
 * Ctrl-C stops a running chunk with "glq: interrupted" (status 130) through a Lua hook; where the
 * hook cannot run (JIT-compiled loop, long C call) the process exits after a second, or at once
 * on a second Ctrl-C. In the REPL the chunk stops and the prompt comes back: a long C call ends
 * first (a note says so after a second), and a second Ctrl-C leaves glq. A script can register
 * a line printed after "interrupted" (require("glq.host").interrupt_hint(s), e.g. how to resume);
 * glq.host also lends recipes the REPL's line editor (readline(prompt), add_history(line)) and its
 * protected call (call(f, ...) -> true, results | false, message; Ctrl-C gives "interrupted").
 * `glq help [RECIPE]` prints the usage and recipe list (or RECIPE --help).
 * REPL history lives in $GLQ_HISTORY if set (empty: none), else ~/.glq_history.
 */
#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/select.h>
#include <sys/stat.h>
#include <unistd.h>

#include <lauxlib.h>
#include <lua.h>
#include <luajit.h>
#include <lualib.h>
#include <readline/history.h>
#include <readline/readline.h>

#ifndef GLQ_NO_STATIC_CORE
#include "core/pool.h"
int luaopen_glq_core(lua_State *L);
#endif

#ifndef GLQ_VERSION
#define GLQ_VERSION "0.1.0-dev"
#endif

#define HISTORY_MAX 1000

/* Present only when OpenBLAS is linked; weak so the binary also links without it. */
extern char *openblas_get_config(void) __attribute__((weak));
extern int openblas_get_num_threads(void) __attribute__((weak));

static lua_State *g_L;                     /* for the signal handler */
static volatile sig_atomic_t g_interrupted; /* a Ctrl-C arrived while Lua code ran */
static volatile sig_atomic_t g_prompt_sigint; /* a Ctrl-C arrived at the REPL prompt */
static volatile sig_atomic_t g_winch;       /* the terminal was resized at the prompt */
static int g_debug;                         /* GLQ_DEBUG: tracebacks on errors */
static char g_root[PATH_MAX];               /* ROOT (tree) or PREFIX (installed); "" if unknown */
static char g_build[PATH_MAX];              /* the build directory holding the executable (tree) */
static int g_in_tree;
static char g_history[PATH_MAX];            /* "" = no history file */
static int g_in_repl;                       /* a REPL chunk runs: Ctrl-C returns to the prompt */
static char g_hint[2048];                   /* printed after "interrupted" (glq.host.interrupt_hint) */

/* ---- locations ---- */

static int is_dir(const char *path) {
  struct stat sb;
  return stat(path, &sb) == 0 && S_ISDIR(sb.st_mode);
}

/* Replaces path by its directory part; returns the last component's start (inside path). */
static const char *cut_last(char *path) {
  char *slash = strrchr(path, '/');
  if (slash == NULL) return NULL;
  if (slash == path) slash[1] = '\0'; else *slash = '\0';
  return slash + 1;
}

/* Fill g_root, g_build and g_in_tree from the executable's own path. */
static void find_root(const char *argv0) {
  char dir[PATH_MAX], probe[PATH_MAX + 16];
  ssize_t n = readlink("/proc/self/exe", dir, sizeof dir - 1);
  if (n > 0) dir[n] = '\0';
  else if (argv0 == NULL || strchr(argv0, '/') == NULL || realpath(argv0, dir) == NULL) return;
  if (cut_last(dir) == NULL) return;                 /* dir = DIR */
  snprintf(g_build, sizeof g_build, "%s", dir);
  char root[PATH_MAX];
  snprintf(root, sizeof root, "%s", dir);
  const char *last = cut_last(root);                 /* root = DIR/.., last = DIR's name */
  if (last == NULL) return;
  int dir_is_bin = strcmp(last, "bin") == 0;
  snprintf(probe, sizeof probe, "%s/lua/glq", root);
  if (!is_dir(probe) && dir_is_bin) {                /* BUILD/bin/glq in a tree */
    char up[PATH_MAX];
    snprintf(up, sizeof up, "%s", root);
    if (cut_last(up) != NULL) {
      snprintf(probe, sizeof probe, "%s/lua/glq", up);
      if (is_dir(probe)) {
        snprintf(g_build, sizeof g_build, "%s", root);
        snprintf(root, sizeof root, "%s", up);
      }
    }
  }
  snprintf(g_root, sizeof g_root, "%s", root);
  g_in_tree = is_dir(probe);
}

/* package[field] := env-derived value first (if env set), then ours; else ours then LuaJIT's. */
static void set_search_path(lua_State *L, const char *field, const char *envname, const char *ours) {
  lua_getglobal(L, "package");
  lua_getfield(L, -1, field);                     /* LuaJIT's value (already honours env) */
  const char *cur = lua_tostring(L, -1);
  if (getenv(envname) != NULL) lua_pushfstring(L, "%s;%s", cur ? cur : "", ours);
  else lua_pushfstring(L, "%s;%s", ours, cur ? cur : "");
  lua_setfield(L, -3, field);
  lua_pop(L, 2);
}

static void setup_paths(lua_State *L) {
  if (g_root[0] == '\0') return;
  const char *r = g_root;
  if (g_in_tree) {
    lua_pushfstring(L, "%s/lua/?.lua;%s/lua/?/init.lua", r, r);
    set_search_path(L, "path", "LUA_PATH", lua_tostring(L, -1));
    lua_pushfstring(L, "%s/?.so;%s/lib/?.so", g_build, g_build);
    set_search_path(L, "cpath", "LUA_CPATH", lua_tostring(L, -1));
  } else {
    lua_pushfstring(L, "%s/share/lua/5.1/?.lua;%s/share/lua/5.1/?/init.lua", r, r);
    set_search_path(L, "path", "LUA_PATH", lua_tostring(L, -1));
    lua_pushfstring(L, "%s/lib/lua/5.1/?.so", r);
    set_search_path(L, "cpath", "LUA_CPATH", lua_tostring(L, -1));
  }
  lua_pop(L, 2);
}

/* Call fn(dir, ctx) for each recipe directory in search order; stops when fn returns non-zero. */
static int each_recipe_dir(int (*fn)(const char *dir, void *ctx), void *ctx) {
  char dir[PATH_MAX];
  const char *env = getenv("GLQ_RECIPES");
  while (env != NULL && *env != '\0') {
    size_t len = strcspn(env, ":");
    if (len > 0 && len < sizeof dir) {
      memcpy(dir, env, len);
      dir[len] = '\0';
      int rc = fn(dir, ctx);
      if (rc) return rc;
    }
    env += len;
    if (*env == ':') env++;
  }
  if (g_root[0] == '\0') return 0;
  static const char *const tree[] = {"recipes", NULL};
  static const char *const installed[] = {"share/glq/recipes", "share/lua/5.1/glq/recipes", NULL};
  for (const char *const *sub = g_in_tree ? tree : installed; *sub != NULL; sub++) {
    if ((size_t)snprintf(dir, sizeof dir, "%s/%s", g_root, *sub) >= sizeof dir) continue;
    int rc = fn(dir, ctx);
    if (rc) return rc;
  }
  return 0;
}

typedef struct { const char *name; char path[PATH_MAX]; } recipe_query;

static int probe_recipe(const char *dir, void *ctx) {
  recipe_query *q = ctx;
  if ((size_t)snprintf(q->path, sizeof q->path, "%s/%s.lua", dir, q->name) >= sizeof q->path) return 0;
  return access(q->path, R_OK) == 0;
}

/* Appends the recipe names of one directory to the Lua table on top of the stack (as keys). */
static int collect_recipes(const char *dir, void *ctx) {
  lua_State *L = ctx;
  DIR *d = opendir(dir);
  if (d == NULL) return 0;
  struct dirent *e;
  while ((e = readdir(d)) != NULL) {
    size_t len = strlen(e->d_name);
    if (len > 4 && e->d_name[0] != '.' && strcmp(e->d_name + len - 4, ".lua") == 0) {
      lua_pushlstring(L, e->d_name, len - 4);
      lua_pushboolean(L, 1);
      lua_rawset(L, -3);
    }
  }
  closedir(d);
  return 0;
}

/* Pushes "a, b, c" (sorted names of all recipes) or "" when there are none. */
static void push_recipe_list(lua_State *L) {
  lua_newtable(L);
  each_recipe_dir(collect_recipes, L);
  lua_newtable(L);                                   /* array of names */
  int n = 0;
  lua_pushnil(L);
  while (lua_next(L, -3) != 0) {
    lua_pop(L, 1);
    lua_pushvalue(L, -1);
    lua_rawseti(L, -3, ++n);
  }
  lua_getglobal(L, "table");
  lua_getfield(L, -1, "sort");
  lua_pushvalue(L, -3);
  lua_call(L, 1, 0);
  lua_getfield(L, -1, "concat");
  lua_pushvalue(L, -3);
  lua_pushliteral(L, ", ");
  lua_call(L, 2, 1);
  lua_replace(L, -4);
  lua_pop(L, 2);
}

/* ---- running chunks ---- */

/* The grace alarm stays armed until docall returns: a pcall inside the chunk could catch this error and
 * carry on, and the alarm then still stops the run (or, in the REPL, says why it goes on). */
static void stop_hook(lua_State *L, lua_Debug *ar) {
  (void)ar;
  lua_sethook(L, NULL, 0, 0);
  luaL_error(L, "interrupted");
}

/* The hook never runs inside JIT-compiled traces or long C calls: if it has not run within
 * INTERRUPT_GRACE seconds, or Ctrl-C comes again, leave at once. */
#define INTERRUPT_GRACE 1

static void write_err(const char *s) {
  ssize_t w = write(STDERR_FILENO, s, strlen(s));
  (void)w;
}

static void hard_stop(int sig) {
  (void)sig;
  write_err("\nglq: interrupted\n");
  if (g_hint[0] != '\0') { write_err(g_hint); write_err("\n"); }
  _exit(130);
}

/* In the REPL the grace period only says why nothing happened yet: the loaded state is kept. */
static void repl_note(int sig) {
  (void)sig;
  write_err("\nglq: stopping when the running C call returns to Lua (a compiled loop may not); "
            "Ctrl-C again leaves glq\n");
}

static void on_sigint(int sig) {
  if (g_interrupted) hard_stop(sig);
  g_interrupted = 1;
  lua_sethook(g_L, stop_hook, LUA_MASKCALL | LUA_MASKRET | LUA_MASKCOUNT, 1);
  signal(SIGALRM, g_in_repl ? repl_note : hard_stop);
  alarm(INTERRUPT_GRACE);
}

static void set_handler(int sig, void (*handler)(int), int restart) {
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = handler;
  sa.sa_flags = restart ? SA_RESTART : 0;
  sigemptyset(&sa.sa_mask);
  sigaction(sig, &sa, NULL);
}

/* Turns the error object into a message string (with traceback under GLQ_DEBUG). */
static int msghandler(lua_State *L) {
  const char *msg = lua_tostring(L, 1);
  if (msg == NULL) {
    if (luaL_callmeta(L, 1, "__tostring") && lua_type(L, -1) == LUA_TSTRING) msg = lua_tostring(L, -1);
    else msg = lua_pushfstring(L, "(error object is a %s value)", luaL_typename(L, 1));
  }
  if (g_interrupted) msg = "interrupted";
  if (g_debug) luaL_traceback(L, L, msg, 1);
  else lua_pushstring(L, msg);
  return 1;
}

/* lua_pcall with the message handler and Ctrl-C handling; the message is left on error. */
static int docall(lua_State *L, int narg, int nres) {
  int base = lua_gettop(L) - narg;
  lua_pushcfunction(L, msghandler);
  lua_insert(L, base);
  g_interrupted = 0;
  struct sigaction outer;                            /* a nested call (glq.host.call) restores it */
  sigaction(SIGINT, NULL, &outer);
  set_handler(SIGINT, on_sigint, 1);
  int status = lua_pcall(L, narg, nres, base);
  sigaction(SIGINT, &outer, NULL);
  if (g_interrupted) alarm(0);
  lua_remove(L, base);
  return status;
}

/* Prints "glq: <message>" for a failed status and pops the message. */
static int report(lua_State *L, int status) {
  if (status != 0) {
    const char *msg = lua_tostring(L, -1);
    if (msg == NULL) msg = "(error object is not a string)";
    size_t len = strlen(msg);
    while (len > 0 && msg[len - 1] == '\n') len--;
    fprintf(stderr, "glq: %.*s\n", (int)len, msg);
    if (g_interrupted && g_hint[0] != '\0') fprintf(stderr, "%s\n", g_hint);
    fflush(stderr);
    lua_pop(L, 1);
  }
  return status;
}

/* Exit status for a failed call: 130 after Ctrl-C, else 1. */
static int fail_status(void) { return g_interrupted ? 130 : 1; }

/* Global `arg`: arg[0] = argv[script], positive = its arguments, negative = the interpreter's. */
static void create_arg_table(lua_State *L, char **argv, int argc, int script) {
  lua_createtable(L, argc - script - 1 > 0 ? argc - script - 1 : 0, script + 1);
  for (int i = 0; i < argc; i++) {
    lua_pushstring(L, argv[i]);
    lua_rawseti(L, -2, i - script);
  }
  lua_setglobal(L, "arg");
}

/* Runs the file (NULL: stdin) with argv[first..argc-1] as `...`. */
static int run_file(lua_State *L, const char *path, char **argv, int argc, int first) {
  int status = luaL_loadfile(L, path);
  if (status != 0) return status;
  int n = 0;
  for (int i = first; i < argc; i++, n++) {
    luaL_checkstack(L, 1, "too many arguments to script");
    lua_pushstring(L, argv[i]);
  }
  return docall(L, n, 0);
}

static int run_string(lua_State *L, const char *code) {
  int status = luaL_loadbuffer(L, code, strlen(code), "=(command line)");
  return status != 0 ? status : docall(L, 0, 0);
}

/* glq = require "glq"; on failure leaves a message on the stack. */
static int load_glq(lua_State *L) {
  lua_getglobal(L, "require");
  lua_pushliteral(L, "glq");
  int status = docall(L, 1, 1);
  if (status != 0) {
    const char *msg = lua_tostring(L, -1);
    lua_pushfstring(L, "cannot load the glq module: %s", msg ? msg : "?");
    lua_remove(L, -2);
    return status;
  }
  lua_setglobal(L, "glq");
  return 0;
}

/* ---- REPL host functions (the loop itself is lua/glq/repl.lua) ---- */

static char *g_rl_line;
static int g_rl_done;

static void rl_on_line(char *line) {
  g_rl_line = line;
  g_rl_done = 1;
  rl_callback_handler_remove();
}

static void on_prompt_sigint(int sig) {
  (void)sig;
  g_prompt_sigint = 1;
}

static void on_winch(int sig) {
  (void)sig;
  g_winch = 1;
}

static sigset_t g_prompt_mask;              /* the signal mask outside host_readline */

/* Waits for input with SIGINT/SIGWINCH deliverable only while waiting; 1 = readable, 0 = a
 * signal arrived, -1 = error. */
static int wait_input(int fd) {
  fd_set fds;
  FD_ZERO(&fds);
  FD_SET(fd, &fds);
  int r = pselect(fd + 1, &fds, NULL, NULL, NULL, &g_prompt_mask);
  if (r > 0) return 1;
  return r < 0 && errno == EINTR ? 0 : -1;
}

/* readline's byte source. After Ctrl-C it ends the line with a newline (the caller drops the
 * line), so readline never waits inside for a key that is not coming. */
static int prompt_getc(FILE *f) {
  int fd = fileno(f);
  for (;;) {
    if (g_prompt_sigint) return '\n';
    if (g_winch) {
      g_winch = 0;
      rl_resize_terminal();
    }
    int r = wait_input(fd);
    if (r < 0) return EOF;
    if (r == 0) continue;
    unsigned char c;
    ssize_t n = read(fd, &c, 1);
    if (n == 1) return c;
    if (n == 0 || errno != EINTR) return EOF;
  }
}

/* host.readline(prompt) -> line | nil (end of input) | false (Ctrl-C) */
static int host_readline(lua_State *L) {
  rl_catch_signals = 0;                             /* Ctrl-C is ours (see below) */
  const char *prompt = luaL_optstring(L, 1, "glq> ");
  int fd = fileno(rl_instream != NULL ? rl_instream : stdin);
  g_rl_line = NULL;
  g_rl_done = 0;
  g_prompt_sigint = 0;
  /* The signals stay blocked except while waiting for input, so one that arrives while readline
   * handles a key is seen at the next wait (a race otherwise loses the Ctrl-C). */
  sigset_t block;
  sigemptyset(&block);
  sigaddset(&block, SIGINT);
  sigaddset(&block, SIGWINCH);
  sigprocmask(SIG_BLOCK, &block, &g_prompt_mask);
  set_handler(SIGINT, on_prompt_sigint, 0);
  set_handler(SIGWINCH, on_winch, 0);
  rl_getc_function = prompt_getc;
  rl_callback_handler_install(prompt, rl_on_line);
  while (!g_rl_done) {
    int r = g_prompt_sigint ? 1 : wait_input(fd);
    if (r > 0 || g_prompt_sigint) {
      rl_callback_read_char();
    } else if (r < 0) {
      rl_callback_handler_remove();                 /* unreadable input: treat as its end */
      g_rl_done = 1;
    }
  }
  sigprocmask(SIG_SETMASK, &g_prompt_mask, NULL);   /* a late Ctrl-C lands in our handler */
  set_handler(SIGINT, SIG_DFL, 1);
  set_handler(SIGWINCH, SIG_DFL, 1);
  if (g_prompt_sigint) {                            /* Ctrl-C: drop the line, fresh prompt */
    free(g_rl_line);
    g_rl_line = NULL;
    lua_pushboolean(L, 0);
    return 1;
  }
  if (g_rl_line == NULL) {
    lua_pushnil(L);
    return 1;
  }
  lua_pushstring(L, g_rl_line);
  free(g_rl_line);
  g_rl_line = NULL;
  return 1;
}

/* host.add_history(line): keeps the in-memory list and appends to the history file. */
static int host_add_history(lua_State *L) {
  const char *line = luaL_checkstring(L, 1);
  if (line[strspn(line, " \t\n")] == '\0') return 0;
  HIST_ENTRY *last = history_length > 0 ? history_get(history_base + history_length - 1) : NULL;
  if (last != NULL && strcmp(last->line, line) == 0) return 0;
  add_history(line);
  if (g_history[0] != '\0' && append_history(1, g_history) != 0) write_history(g_history);
  return 0;
}

/* host.call(f, ...) -> true, results... | false, message (Ctrl-C gives "interrupted") */
static int host_call(lua_State *L) {
  luaL_checktype(L, 1, LUA_TFUNCTION);
  int was_in_repl = g_in_repl;
  g_in_repl = 1;
  int status = docall(L, lua_gettop(L) - 1, LUA_MULTRET);
  g_in_repl = was_in_repl;
  g_interrupted = 0;
  lua_pushboolean(L, status == 0);
  lua_insert(L, 1);
  return lua_gettop(L);
}

/* Tab completion: glq.repl.complete(word) (kept in the registry) lists the candidates; inside a
 * quoted string readline's own file-name completion runs instead. */
#define COMPLETE_KEY "glq.repl.complete"

static char *complete_next(const char *text, int state) {
  static int index;
  lua_State *L = g_L;
  if (state == 0) {
    index = 0;
    lua_getfield(L, LUA_REGISTRYINDEX, COMPLETE_KEY);
    lua_pushstring(L, text);
    if (lua_pcall(L, 1, 1, 0) != 0 || !lua_istable(L, -1)) {
      lua_pop(L, 1);
      lua_pushnil(L);
    }
    lua_setfield(L, LUA_REGISTRYINDEX, COMPLETE_KEY ".list");
  }
  lua_getfield(L, LUA_REGISTRYINDEX, COMPLETE_KEY ".list");
  char *match = NULL;
  if (lua_istable(L, -1)) {
    lua_rawgeti(L, -1, ++index);
    const char *s = lua_tostring(L, -1);
    if (s != NULL) match = strdup(s);
    lua_pop(L, 1);
  }
  lua_pop(L, 1);
  return match;
}

static char **complete(const char *text, int start, int end) {
  (void)start;
  (void)end;
  if (rl_completion_quote_character != 0) return NULL; /* in a string: complete file names */
  rl_attempted_completion_over = 1;
  rl_completion_append_character = '\0';
  return rl_completion_matches(text, complete_next);
}

static void history_open(void) {
  const char *env = getenv("GLQ_HISTORY");
  const char *home = getenv("HOME");
  g_history[0] = '\0';
  if (env != NULL) snprintf(g_history, sizeof g_history, "%s", env);
  else if (home != NULL && home[0] != '\0') snprintf(g_history, sizeof g_history, "%s/.glq_history", home);
  using_history();
  stifle_history(HISTORY_MAX);
  if (g_history[0] != '\0') read_history(g_history);
}

static void history_close(void) {
  if (g_history[0] != '\0') history_truncate_file(g_history, HISTORY_MAX);
}

static int run_repl(lua_State *L) {
  rl_readline_name = "glq";
  rl_catch_signals = 0;                             /* Ctrl-C is ours (see host_readline) */
  rl_attempted_completion_function = complete;
  rl_basic_word_break_characters = " \t\n\"'`><=;+-*/%^~#{}()[],";
  rl_completer_quote_characters = "\"'";
  history_open();
  lua_getglobal(L, "require");
  lua_pushliteral(L, "glq.repl");
  int status = docall(L, 1, 1);
  if (status == 0) {
    lua_getfield(L, -1, "complete");
    lua_setfield(L, LUA_REGISTRYINDEX, COMPLETE_KEY);
    lua_getfield(L, -1, "run");
    lua_remove(L, -2);
    lua_newtable(L);
    static const luaL_Reg fns[] = {
      {"readline", host_readline}, {"add_history", host_add_history}, {"call", host_call}, {NULL, NULL}};
    for (const luaL_Reg *f = fns; f->name != NULL; f++) {
      lua_pushcfunction(L, f->func);
      lua_setfield(L, -2, f->name);
    }
    lua_pushliteral(L, GLQ_VERSION);
    lua_setfield(L, -2, "version");
    lua_pushliteral(L, LUAJIT_VERSION);
    lua_setfield(L, -2, "luajit");
    status = docall(L, 1, 0);
  }
  history_close();
  return status;
}

/* glq.host.interrupt_hint(s | nil): a line printed after "glq: interrupted" (nil clears it). */
static int host_interrupt_hint(lua_State *L) {
  const char *s = luaL_optstring(L, 1, "");
  snprintf(g_hint, sizeof g_hint, "%s", s);
  return 0;
}

static void preload_host(lua_State *L) {
  lua_getglobal(L, "package");
  lua_getfield(L, -1, "loaded");
  lua_newtable(L);
  lua_pushcfunction(L, host_interrupt_hint);
  lua_setfield(L, -2, "interrupt_hint");
  lua_pushcfunction(L, host_readline);               /* line editing for interactive recipes */
  lua_setfield(L, -2, "readline");
  lua_pushcfunction(L, host_add_history);
  lua_setfield(L, -2, "add_history");
  lua_pushcfunction(L, host_call);                   /* Ctrl-C ends only this call (glq chat's replies) */
  lua_setfield(L, -2, "call");
  lua_setfield(L, -2, "glq.host");
  lua_pop(L, 2);
}

/* GLQ_THREADS, when set, must be a positive integer (the pool would ignore anything else). */
static int check_threads_env(void) {
  const char *s = getenv("GLQ_THREADS");
  if (s == NULL || *s == '\0') return 0;
  char *end;
  errno = 0;
  long n = strtol(s, &end, 10);
  if (errno != 0 || *end != '\0' || n < 1 || n > 4096) {
    fprintf(stderr, "glq: GLQ_THREADS='%s' is not a positive integer (unset it to use every core)\n", s);
    return 1;
  }
  return 0;
}

/* ---- --version / --help ---- */

static void print_version(lua_State *L) {
  printf("glq %s (%s)\n", GLQ_VERSION, LUAJIT_VERSION);
  if (openblas_get_config != NULL)
    printf("BLAS: %s, %d threads\n", openblas_get_config(),
           openblas_get_num_threads != NULL ? openblas_get_num_threads() : 1);
  else
    printf("BLAS: not OpenBLAS (or not linked)\n");
#ifndef GLQ_NO_STATIC_CORE
  printf("threads: %d\n", glq_num_threads());
#endif
  /* optional hook: glq.backend_info() -> string or table of name = value */
  int status = load_glq(L);
  if (status != 0) {
    printf("glq module: not loaded (%s)\n", lua_tostring(L, -1));
    lua_pop(L, 1);
    return;
  }
  lua_getglobal(L, "glq");
  lua_getfield(L, -1, "backend_info");
  lua_remove(L, -2);
  if (!lua_isfunction(L, -1)) {
    lua_pop(L, 1);
    return;
  }
  if (report(L, docall(L, 0, 1)) != 0) return;
  if (lua_istable(L, -1)) {
    lua_pushnil(L);
    while (lua_next(L, -2) != 0) {
      lua_getglobal(L, "tostring");
      lua_pushvalue(L, -2);
      lua_call(L, 1, 1);
      if (lua_type(L, -3) == LUA_TSTRING) printf("%s: %s\n", lua_tostring(L, -3), lua_tostring(L, -1));
      lua_pop(L, 2);
    }
  } else if (lua_tostring(L, -1) != NULL) {
    printf("%s\n", lua_tostring(L, -1));
  }
  lua_pop(L, 1);
}

static void print_usage(lua_State *L) {
  printf("usage: glq [options] [SCRIPT.lua | RECIPE | -] [args...]\n"
         "  SCRIPT.lua  run a Lua script; `arg` and `...` hold its arguments\n"
         "  RECIPE      run an installed recipe by name (glq RECIPE --help for its options)\n"
         "  -           run standard input\n"
         "  (none)      interactive REPL on a terminal, else run standard input\n"
         "options:\n"
         "  -e CODE     run CODE first (repeatable)\n"
         "  -i          enter the REPL after running the script\n"
         "  -v, --version  print version and backend information\n"
         "  -h, --help     print this help\n"
         "  --          stop handling options\n"
         "environment: GLQ_THREADS (threads; default every core), GLQ_RECIPES (recipe dirs),\n"
         "  GLQ_DEBUG=1 (tracebacks), GLQ_HISTORY, LUA_PATH, LUA_CPATH\n");
  push_recipe_list(L);
  const char *list = lua_tostring(L, -1);
  if (list[0] == '\0') printf("recipes: (none found)\n");
  else printf("recipes (glq help RECIPE or glq RECIPE --help for the options):\n");
  for (const char *p = list; *p != '\0';) {           /* "a, b, c": each with its summary line */
    size_t len = strcspn(p, ",");
    char name[128];
    snprintf(name, sizeof name, "%.*s", (int)(len < sizeof name ? len : sizeof name - 1), p);
    recipe_query q = {name, ""};
    char line[256] = "";
    if (each_recipe_dir(probe_recipe, &q)) {
      FILE *f = fopen(q.path, "r");
      if (f != NULL) {
        if (fgets(line, sizeof line, f) == NULL) line[0] = '\0';
        fclose(f);
      }
    }
    line[strcspn(line, "\n")] = '\0';
    const char *summary = strncmp(line, "-- ", 3) == 0 ? line + 3 : "";
    const char *colon = strstr(summary, ": ");       /* "glq NAME ...: what it does (...), ..." */
    if (colon != NULL) summary = colon + 2;
    int n = (int)strcspn(summary, ".,(;");
    while (n > 0 && summary[n - 1] == ' ') n--;
    printf("  %-9s %.*s\n", name, n, summary);
    p += len;
    while (*p == ',' || *p == ' ') p++;
  }
  lua_pop(L, 1);
}

/* ---- main ---- */

typedef struct {
  int argc;
  char **argv;
  int status;    /* exit status */
} host_args;

enum { OPT_VERSION = 1, OPT_HELP = 2, OPT_INTERACTIVE = 4, OPT_EXEC = 8 };

/* Validates options; returns the index of the script (argc if none), or with *bad set to the
 * offending option -1 (unknown) or -2 (missing its argument). */
static int scan_args(char **argv, int argc, int *flags, const char **bad) {
  int i;
  for (i = 1; i < argc; i++) {
    const char *a = argv[i];
    if (a[0] != '-' || strcmp(a, "-") == 0) return i;
    if (strcmp(a, "--") == 0) return i + 1;
    if (strcmp(a, "-e") == 0) {
      if (++i >= argc) { *bad = a; return -2; }
      *flags |= OPT_EXEC;
    } else if (strcmp(a, "-i") == 0) {
      *flags |= OPT_INTERACTIVE;
    } else if (strcmp(a, "-v") == 0 || strcmp(a, "--version") == 0) {
      *flags |= OPT_VERSION;
    } else if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
      *flags |= OPT_HELP;
    } else {
      *bad = a;
      return -1;
    }
  }
  return i;
}

/* A bare NAME (no '/', not *.lua, not "-") names a recipe. */
static int is_recipe_name(const char *s) {
  size_t len = strlen(s);
  int dot_lua = len >= 4 && strcmp(s + len - 4, ".lua") == 0;
  return s[0] != '\0' && strchr(s, '/') == NULL && strcmp(s, "-") != 0 && !dot_lua;
}

static int run_script(lua_State *L, char **argv, int argc, int script) {
  const char *name = argv[script];
  const char *path = name;
  recipe_query q;
  if (strcmp(name, "-") == 0) {
    path = NULL;
  } else if (strcmp(name, "help") == 0 && !(q.name = name, each_recipe_dir(probe_recipe, &q))) {
    if (script + 1 >= argc) { print_usage(L); return 0; }
    static char help_flag[] = "--help";              /* glq help NAME = glq NAME --help */
    char *rargv[] = {argv[0], argv[script + 1], help_flag, NULL};
    create_arg_table(L, rargv, 3, 1);
    return run_script(L, rargv, 3, 1);
  } else if (is_recipe_name(name)) {
    q.name = name;
    if (!each_recipe_dir(probe_recipe, &q)) {
      push_recipe_list(L);
      const char *list = lua_tostring(L, -1);
      lua_pushfstring(L, "unknown recipe '%s' (available: %s)", name, list[0] ? list : "none found");
      lua_remove(L, -2);
      return 1;
    }
    path = q.path;
    lua_getglobal(L, "arg");
    lua_pushstring(L, path);                        /* arg[0] = the recipe's file */
    lua_rawseti(L, -2, 0);
    lua_pop(L, 1);
  }
  return run_file(L, path, argv, argc, script + 1);
}

static int pmain(lua_State *L) {
  host_args *s = lua_touserdata(L, 1);
  char **argv = s->argv;
  int argc = s->argc;
  int flags = 0;
  const char *bad = NULL;
  int script = scan_args(argv, argc, &flags, &bad);
  g_debug = getenv("GLQ_DEBUG") != NULL && strcmp(getenv("GLQ_DEBUG"), "0") != 0;
  find_root(argv[0]);
  lua_gc(L, LUA_GCSTOP, 0);                         /* faster start-up, as lua.c does */
  luaL_openlibs(L);
  lua_gc(L, LUA_GCRESTART, 0);
  setup_paths(L);
#ifndef GLQ_NO_STATIC_CORE
  lua_getglobal(L, "package");
  lua_getfield(L, -1, "preload");
  lua_pushcfunction(L, luaopen_glq_core);
  lua_setfield(L, -2, "glq.core");
  lua_pop(L, 2);
#endif
  preload_host(L);
  s->status = 1;
  if (check_threads_env()) return 0;
  if (script < 0) {
    fprintf(stderr, "glq: %s '%s' (try glq --help)\n",
            script == -1 ? "unknown option" : "missing the argument of", bad);
    return 0;
  }
  if (flags & OPT_HELP) { print_usage(L); s->status = 0; return 0; }
  if (flags & OPT_VERSION) { print_version(L); s->status = 0; return 0; }
  create_arg_table(L, argv, argc, script < argc ? script : 0);
  if (report(L, load_glq(L)) != 0) return 0;
  for (int i = 1; i < script; i++) {
    if (strcmp(argv[i], "-e") == 0 && report(L, run_string(L, argv[++i])) != 0) {
      s->status = fail_status();
      return 0;
    }
  }
  if (script < argc) {
    if (report(L, run_script(L, argv, argc, script)) != 0) { s->status = fail_status(); return 0; }
  } else if (!(flags & (OPT_EXEC | OPT_INTERACTIVE))) {
    if (isatty(STDIN_FILENO)) flags |= OPT_INTERACTIVE;
    else if (report(L, run_file(L, NULL, argv, argc, argc)) != 0) { s->status = fail_status(); return 0; }
  }
  if ((flags & OPT_INTERACTIVE) && report(L, run_repl(L)) != 0) return 0;
  s->status = 0;
  return 0;
}

int main(int argc, char **argv) {
  host_args s = {argc, argv, 1};
  lua_State *L = luaL_newstate();
  if (L == NULL) {
    fprintf(stderr, "glq: cannot create the Lua state (out of memory)\n");
    return 1;
  }
  g_L = L;
  int status = lua_cpcall(L, pmain, &s);
  report(L, status);
  fflush(stdout);
  lua_close(L);
  return status != 0 ? 1 : s.status;
}
