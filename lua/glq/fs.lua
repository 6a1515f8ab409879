-- Small filesystem helpers (POSIX through the LuaJIT FFI): existence, directories, atomic writes.
local ffi = require "ffi"

ffi.cdef [[
  int mkdir(const char *path, unsigned int mode);
  int rename(const char *oldpath, const char *newpath);
  int isatty(int fd);
  int getpid(void);
  char *strerror(int errnum);
]]

local M = {}

function M.exists(path)
  local f = io.open(path, "rb")
  if f then f:close() return true end
  -- directories cannot be opened for reading on every libc; try listing instead
  local ok = os.rename(path, path)
  return ok and true or false
end

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
      if ffi.C.mkdir(acc, tonumber("755", 8)) ~= 0 and not M.is_dir(acc) then
        error(string.format("%s: cannot create directory: %s", acc, ffi.string(ffi.C.strerror(ffi.errno()))), 0)
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

function M.read(path)
  local f, err = io.open(path, "rb")
  if not f then return nil, err end
  local s = f:read("*a")
  f:close()
  return s
end

-- write a whole file atomically: temp file in the same directory, then rename
function M.write_atomic(path, data)
  local tmp = string.format("%s.tmp.%d", path, ffi.C.getpid())
  local f, err = io.open(tmp, "wb")
  if not f then error(path .. ": cannot write: " .. tostring(err), 0) end
  local ok, werr = f:write(data)
  f:close()
  if not ok then os.remove(tmp) error(path .. ": write failed: " .. tostring(werr), 0) end
  if ffi.C.rename(tmp, path) ~= 0 then
    os.remove(tmp)
    error(path .. ": rename failed: " .. ffi.string(ffi.C.strerror(ffi.errno())), 0)
  end
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
