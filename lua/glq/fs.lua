-- Small filesystem helpers (POSIX through the LuaJIT FFI): existence, directories, atomic writes.
local ffi = require "ffi"

ffi.cdef [[
  int mkdir(const char *path, unsigned int mode);
  int rename(const char *oldpath, const char *newpath);
  int isatty(int fd);
  int getpid(void);
  char *strerror(int errnum);
  int access(const char *path, int mode);
  int kill(int pid, int sig);
]]

local M = {}

-- (access() opens nothing: a FIFO or device answers at once)
function M.exists(path) return ffi.C.access(path, 0) == 0 end

-- is path writable by us (W_OK)?
function M.writable(path) return ffi.C.access(path, 2) == 0 end

-- is process pid alive? (kill(pid, 0); EPERM means it exists but is not ours)
function M.pid_alive(pid) return ffi.C.kill(pid, 0) == 0 or ffi.errno() == 1 end

function M.is_dir(path)
  local f = io.open(path .. "/.", "rb")
  if f then f:close() return true end
  return false
end

function M.mkdir_p(path)
  local acc = path:sub(1, 1) == "/" and "/" or ""
  for part in path:gmatch("[^/]+") do
    acc = acc .. part
    if not M.is_dir(acc) then
      if ffi.C.mkdir(acc, tonumber("755", 8)) ~= 0 then
        local e = ffi.errno() -- before is_dir's own calls replace it
        if not M.is_dir(acc) then
          error(string.format("%s: cannot create directory: %s", acc, ffi.string(ffi.C.strerror(e))), 0)
        end
      end
    end
    acc = acc .. "/"
  end
end

function M.basename(path) return (path:gsub("/+$", ""):match("([^/]+)$")) or path end
function M.dirname(path)
  local d = path:gsub("/+$", ""):match("^(.*)/[^/]*$")
  if d == nil then return "." end
  if d == "" then return "/" end
  return d
end
function M.join(a, b) return (a:sub(-1) == "/" and a or a .. "/") .. b end

-- a whole regular file (at most max bytes, default 1 GiB) or nil, message: a FIFO, device or directory
-- is refused without reading
function M.read(path, max)
  local ok, s = pcall(require("glq.core").read_file, path, max)
  if not ok then return nil, s end
  return s
end

-- checks, before any work, that the file path can be written later: an existing path must be a regular
-- file, and a probe file is created and removed in its directory, or the nearest existing one above it
-- (catches read-only mounts, /proc and permissions, which a check of the mode bits alone misses for root)
function M.check_writable(path, what)
  local kind = require("glq.core").file_kind(path)
  if kind and kind ~= "file" then error(string.format("%s %s: is a %s, not a regular file", what, path, kind), 0) end
  local dir = M.dirname(path)
  while not M.is_dir(dir) and dir ~= "/" and dir ~= "." do dir = M.dirname(dir) end -- e.g. inside the output, made later
  local probe = string.format("%s/.glq-probe.%d", dir, ffi.C.getpid())
  local f, err = io.open(probe, "wb")
  if not f then error(string.format("%s %s: cannot write there: %s", what, path, tostring(err)), 0) end
  f:close()
  os.remove(probe)
  if kind and not M.writable(path) then error(string.format("%s %s: not writable", what, path), 0) end
end

-- a name read from a checkpoint's JSON is a relative path that stays inside its directory
function M.inside(name)
  if type(name) ~= "string" or name == "" or name:find("\0", 1, true) or name:sub(1, 1) == "/" then return false end
  for part in name:gmatch("[^/]+") do if part == ".." then return false end end
  return true
end

-- write a whole file atomically through the C writer (temp file beside path, fsync, rename): a full
-- disk or any other write error raises "EIO: <path>: ..." and leaves path as it was
function M.write_atomic(path, data)
  require("glq.core").write_file(path, data)
end

function M.rename(a, b)
  if ffi.C.rename(a, b) ~= 0 then
    error(string.format("rename %s -> %s failed: %s", a, b, ffi.string(ffi.C.strerror(ffi.errno()))), 0)
  end
end

function M.isatty(fd) return ffi.C.isatty(fd or 2) == 1 end

-- list a directory's entries (names only) through ls; nil if it is not a directory
function M.list(dir)
  if not M.is_dir(dir) then return nil end
  local p = io.popen("ls -A '" .. dir:gsub("'", "'\\''") .. "' 2>/dev/null")
  local t = {}
  for line in p:lines() do t[#t + 1] = line end
  p:close()
  table.sort(t)
  return t
end

function M.remove_tree(dir)
  os.execute("rm -rf '" .. dir:gsub("'", "'\\''") .. "'")
end

return M
