-- Small helpers shared by the specs: files, temporary directories, running the glq binary.
local M = {}

function M.exists(path)
  local f = io.open(path, "rb")
  if f then f:close() end
  return f ~= nil
end

-- the file's bytes (the first n when given)
function M.slurp(path, n)
  local f = assert(io.open(path, "rb"))
  local s = f:read(n or "*a")
  f:close()
  return s
end

function M.spit(path, s)
  local f = assert(io.open(path, "wb"))
  f:write(s)
  f:close()
end

-- a fresh path for a directory (not created; quantize/hif4 create their outputs themselves)
function M.tmppath()
  local d = os.tmpname()
  os.remove(d)
  return d
end

-- run a shell command; returns its exit status and combined output
function M.sh(cmd)
  local p = io.popen(cmd .. " 2>&1; echo \"rc=$?\"")
  local out = p:read("*a")
  p:close()
  local rc = tonumber(out:match("rc=(%d+)%s*$"))
  return rc, (out:gsub("rc=%d+%s*$", ""))
end

-- llama2.c's greedy references for stories260K, and what model m (CPU or GPU) generates for them:
-- which = "bos" (256 steps from BOS; llama2.c prints every token sampled after the prompt) or "Zoo"
-- (60 steps from the prompt, echoed). Returns want, got.
function M.stories_greedy(m, which)
  local gen = require "glq.generate"
  local ref = "../shared/models/stories260K/reference/"
  if which == "bos" then
    local _, text = gen.run(m, { m:tokenizer():bos() }, { max_new_tokens = 256, stop_at_eos = false })
    return M.slurp(ref .. "greedy_t0_empty_prompt_256steps.txt"), text .. "\n"
  end
  local ids = m:encode("Zoo")
  local _, text = gen.run(m, ids, { max_new_tokens = 60 - #ids + 1, stop_at_eos = false })
  return M.slurp(ref .. "greedy_t0_prompt_Zoo_60steps.txt"), "Zoo" .. text .. "\n"
end

-- the glq executable under test
M.bin = os.getenv("GLQ_BIN") or ((os.getenv("GLQ_BUILD") or "build") .. "/glq")

-- a "BIN quantize ..." command line that stops with "interrupted ..." after its nth finished linear
-- (tests/support/on_event.lua on glq.events' "quantize.linear")
function M.stop_after(n, cmd)
  return (cmd:gsub(" quantize ", string.format(" tests/support/on_event.lua quantize.linear@%d stop quantize ", n), 1))
end

return M
