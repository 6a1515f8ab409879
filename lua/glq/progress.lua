-- Progress reporting for long stages: a live bar on a terminal (stderr), plain log lines otherwise.
--   local p = progress.new("quantize", n_layers)
--   p:update(i, "model.layers.3.mlp.up_proj  SQNR 9.8 dB")
--   p:finish("done")
local fs = require "glq.fs"

local M = {}
M.__index = M

local function now()
  local ok, ffi = pcall(require, "ffi")
  if ok then
    pcall(ffi.cdef, "typedef struct { long tv_sec; long tv_nsec; } glq_timespec; int clock_gettime(int, glq_timespec *);")
    local ts = ffi.new("glq_timespec")
    if ffi.C.clock_gettime(1, ts) == 0 then return tonumber(ts.tv_sec) + tonumber(ts.tv_nsec) * 1e-9 end
  end
  return os.time()
end
M.now = now

local fmt_time = function(s)
  if s ~= s or s == math.huge then return "?" end
  s = math.floor(s + 0.5)
  if s >= 3600 then return string.format("%dh%02dm", math.floor(s / 3600), math.floor((s % 3600) / 60)) end
  if s >= 60 then return string.format("%dm%02ds", math.floor(s / 60), s % 60) end
  return string.format("%ds", s)
end
M.fmt_time = fmt_time

-- opts.quiet: print nothing; opts.tty: force terminal mode (default: isatty(2) and TERM ~= "dumb")
function M.new(label, total, opts)
  opts = opts or {}
  local tty = opts.tty
  if tty == nil then tty = fs.isatty(2) and os.getenv("TERM") ~= "dumb" end
  local self = setmetatable({ label = label, total = total or 0, done = 0, t0 = now(), tty = tty,
    quiet = opts.quiet, last_print = 0, width = 28 }, M)
  if not self.quiet and not tty then
    io.stderr:write(string.format("[%s] started (%d steps)\n", label, self.total))
  end
  return self
end

function M:update(done, status)
  self.done = done
  self.status = status
  if self.quiet then return end
  local t = now()
  local elapsed = t - self.t0
  local eta = done > 0 and elapsed / done * (self.total - done) or math.huge
  if self.tty then
    if t - self.last_print < 0.1 and done < self.total then return end
    self.last_print = t
    local frac = self.total > 0 and done / self.total or 1
    local fill = math.floor(frac * self.width + 0.5)
    local line = string.format("\r%-10s [%s%s] %d/%d %3d%% %s ETA %s  %s", self.label,
      string.rep("#", fill), string.rep(".", self.width - fill), done, self.total, math.floor(frac * 100 + 0.5),
      fmt_time(elapsed), fmt_time(eta), status or "")
    if #line > 160 then line = line:sub(1, 160) end
    io.stderr:write(line, "\27[K")
    io.stderr:flush()
  else
    -- plain log lines: at most one every 5 seconds, plus the last step
    if t - self.last_print < 5 and done < self.total then return end
    self.last_print = t
    io.stderr:write(string.format("[%s] %d/%d elapsed %s eta %s %s\n", self.label, done, self.total,
      fmt_time(elapsed), fmt_time(eta), status or ""))
  end
end

function M:finish(msg)
  if self.quiet then return end
  local elapsed = now() - self.t0
  if self.tty then io.stderr:write("\r\27[K") end
  io.stderr:write(string.format("[%s] %s in %s\n", self.label, msg or "done", fmt_time(elapsed)))
  io.stderr:flush()
end

-- a plain log line to stderr (used by recipes for stage messages)
function M.log(fmt, ...)
  io.stderr:write(string.format(fmt, ...), "\n")
  io.stderr:flush()
end

return M
