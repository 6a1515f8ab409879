-- Test harness (not part of glq): runs a glq recipe with an action on one of its progress events
-- (glq.events), so that tests interrupt or kill a run at a chosen point without any hook in glq itself.
--   glq tests/support/on_event.lua EVENT[@N] ACTION RECIPE [recipe arguments...]
-- EVENT@N acts at the event's Nth emission (default the first). ACTION: kill = SIGKILL this process
-- (a crash at that point); stop = raise "interrupted at EVENT #N" (an interruption the run sees).
local ffi = require "ffi"
pcall(ffi.cdef, "int getpid(void); int kill(int pid, int sig);")

local usage = "usage: glq tests/support/on_event.lua EVENT[@N] kill|stop RECIPE [args...]"
local spec, action, recipe = arg[1], arg[2], arg[3]
if not (spec and recipe and (action == "kill" or action == "stop")) then error(usage, 0) end
local event, nth = spec:match("^([^@]+)@(%d+)$")
event, nth = event or spec, tonumber(nth) or 1

local seen = 0
require("glq.events").on(event, function()
  seen = seen + 1
  if seen < nth then return end
  if action == "kill" then ffi.C.kill(ffi.C.getpid(), 9) end
  error(string.format("interrupted at %s #%d", event, seen), 0)
end)

-- the recipe from this checkout's recipes/, with its own arguments
local here = arg[0]:match("^(.*)/[^/]*$") or "."
local path = here .. "/../../recipes/" .. recipe .. ".lua"
local chunk, err = loadfile(path)
if not chunk then error(err, 0) end
local rest = { [0] = recipe }
for i = 4, #arg do rest[i - 3] = arg[i] end
arg = rest
return chunk(unpack(rest))
