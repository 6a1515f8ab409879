-- glq.events: named progress events of long runs, for progress displays and test harnesses. Code
-- that reaches a point others may want to know about calls emit(name, info); handlers registered with
-- on(name, fn) are called in registration order with the info table. No handler: emit does nothing.
-- Events emitted today:
--   "quantize.linear"     {name, done, total}  glq.quantize finished (or reused) one decoder projection
--   "partial.started"     {dir}                glq.checkpoint made a run's .glq-partial/, before its first state.json
--   "checkpoint.written"  {dir, tmp}           glq.checkpoint's writer is done with the temporary directory
--                                              tmp (every file written, or one failed), before dir changes
local M = {}

local handlers = {}

-- registers fn(info) for event name; returns a function that removes it again
function M.on(name, fn)
  if type(name) ~= "string" or type(fn) ~= "function" then error("glq.events.on(name, fn): a string and a function", 2) end
  local list = handlers[name] or {}
  handlers[name] = list
  list[#list + 1] = fn
  return function()
    for i, f in ipairs(list) do
      if f == fn then table.remove(list, i) return end
    end
  end
end

-- calls every handler of event name with info (a handler's error propagates to the emitter)
function M.emit(name, info)
  local list = handlers[name]
  if not list then return end
  for _, fn in ipairs(list) do fn(info) end
end

return M
