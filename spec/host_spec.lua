-- The `glq` executable (src/main.c), run as a user would through a shell, and the REPL logic
-- (glq.repl) driven by a fake terminal. The terminal itself is covered by tests/repl_tmux.sh.
package.path = "lua/?.lua;lua/?/init.lua;" .. package.path

local function q(s) return "'" .. tostring(s):gsub("'", "'\\''") .. "'" end

local function is_file(path)
  local p = io.popen("test -f " .. q(path) .. " && test -x " .. q(path) .. " && echo yes")
  local r = p:read("*a")
  p:close()
  return r == "yes\n"
end

-- GLQ_BIN, else BUILD/glq or BUILD/bin/glq (BUILD = GLQ_BUILD or build)
local BIN = os.getenv("GLQ_BIN")
if not BIN then
  local build = os.getenv("GLQ_BUILD") or "build"
  BIN = is_file(build .. "/bin/glq") and build .. "/bin/glq" or build .. "/glq"
end

local slurp = require("spec.support.util").slurp

local function write_file(path, text)
  local f = assert(io.open(path, "wb"))
  f:write(text)
  f:close()
end

-- Runs `[env] BIN args` through sh; returns stdout, stderr, exit status.
local function glq(args, env, stdin)
  local errf = os.tmpname()
  local cmd = (stdin and "printf '%s' " .. q(stdin) .. " | " or "") .. (env or "") .. " " .. q(BIN) .. " " ..
              args .. " 2>" .. errf .. (stdin and "" or " </dev/null") .. '; echo "::status=$?"'
  local p = assert(io.popen(cmd))
  local out = p:read("*a")
  p:close()
  local status = tonumber(out:match("::status=(%d+)\n$"))
  out = out:gsub("::status=%d+\n$", "")
  local err = slurp(errf)
  os.remove(errf)
  return out, err, status
end

local function tmpdir()
  local d = os.tmpname()
  os.remove(d)
  assert(os.execute("mkdir -p " .. q(d)))
  return d
end

describe("glq executable", function()
  setup(function()
    assert(is_file(BIN), "no glq executable at " .. BIN .. " (build it, or set GLQ_BIN)")
  end)

  it("runs -e chunks with the glq module loaded as a global", function()
    local out, err, status = glq([[-e 'print(1+1)' -e 'print(type(glq), type(glq.zeros))']])
    assert.equal("2\ntable\tfunction\n", out)
    assert.equal("", err)
    assert.equal(0, status)
  end)

  it("runs a script with arg and ... set like lua, after -e chunks", function()
    local dir = tmpdir()
    local script = dir .. "/s.lua"
    write_file(script, "print(x, select('#', ...), ...)\nprint(arg[0], arg[1], arg[2], arg[-1], arg[-2])\n")
    local out, err, status = glq("-e x=5 " .. q(script) .. " a 'b c'")
    assert.equal(("5\t2\ta\tb c\n%s\ta\tb c\tx=5\t-e\n"):format(script), out)
    assert.equal("", err)
    assert.equal(0, status)
    os.execute("rm -rf " .. q(dir))
  end)

  it("runs standard input when it is not a terminal, and for -", function()
    local out, _, status = glq("", nil, "print('from stdin', ...)")
    assert.equal("from stdin\n", out)
    assert.equal(0, status)
    out = glq("- a b", nil, "print(...)")
    assert.equal("a\tb\n", out)
  end)

  it("passes the script's os.exit status through", function()
    local _, _, status = glq([[-e 'os.exit(3)']])
    assert.equal(3, status)
  end)

  describe("recipes", function()
    local dir
    before_each(function()
      dir = tmpdir()
      write_file(dir .. "/hello.lua", "print('hello', arg[0], ...)\n")
    end)
    after_each(function() os.execute("rm -rf " .. q(dir)) end)

    it("runs a recipe by name from GLQ_RECIPES with its arguments", function()
      local out, err, status = glq("hello x --y", "GLQ_RECIPES=" .. q("/nonexistent:" .. dir))
      assert.equal(("hello\t%s/hello.lua\tx\t--y\n"):format(dir), out)
      assert.equal("", err)
      assert.equal(0, status)
    end)

    it("searches GLQ_RECIPES before the built-in recipes", function()
      write_file(dir .. "/info.lua", "print('my info')\n")
      local out = glq("info", "GLQ_RECIPES=" .. q(dir))
      assert.equal("my info\n", out)
    end)

    it("finds the built-in info recipe", function()
      local out, _, status = glq("info --help")
      assert.equal(0, status)
      assert.matches("^usage: glq info", out)
    end)

    it("lists the available recipes for an unknown name", function()
      local out, err, status = glq("nosuchrecipe", "GLQ_RECIPES=" .. q(dir))
      assert.equal("", out)
      assert.equal(1, status)
      assert.matches("^glq: unknown recipe 'nosuchrecipe' %(available: [^\n]*hello[^\n]*%)\n$", err)
      assert.matches("info", err, 1, true)
    end)

    it("treats names with / or .lua as files, not recipes", function()
      local _, err, status = glq("hello.lua", "GLQ_RECIPES=" .. q(dir))
      assert.equal(1, status)
      assert.matches("^glq: cannot open hello.lua", err)
    end)
  end)

  describe("errors", function()
    it("prints one line 'glq: <message>' and exits with 1", function()
      local out, err, status = glq([[-e 'error("boom")']])
      assert.equal("", out)
      assert.equal("glq: (command line):1: boom\n", err)
      assert.equal(1, status)
    end)

    it("names the script and line of a runtime or syntax error", function()
      local dir = tmpdir()
      write_file(dir .. "/bad.lua", "local x = 1\nlocal y = x + nil\n")
      write_file(dir .. "/syntax.lua", "x = = 1\n")
      local _, err, status = glq(q(dir .. "/bad.lua"))
      assert.equal(1, status)
      assert.matches("^glq: " .. dir:gsub("%p", "%%%0") .. "/bad.lua:2: attempt to perform arithmetic[^\n]*\n$", err)
      _, err, status = glq(q(dir .. "/syntax.lua"))
      assert.equal(1, status)
      assert.matches("^glq: [^\n]*syntax.lua:1: [^\n]*\n$", err)
      os.execute("rm -rf " .. q(dir))
    end)

    it("describes error values that are not strings", function()
      local _, err = glq([[-e 'error({})']])
      assert.equal("glq: (error object is a table value)\n", err)
      _, err = glq([[-e 'error(setmetatable({}, {__tostring = function() return "custom" end}))']])
      assert.equal("glq: custom\n", err)
    end)

    it("adds the traceback under GLQ_DEBUG=1", function()
      local _, err, status = glq([[-e 'local function f() error("deep") end f()']], "GLQ_DEBUG=1")
      assert.equal(1, status)
      assert.matches("^glq: %(command line%):1: deep\nstack traceback:\n", err)
    end)

    it("rejects unknown options and a missing -e argument", function()
      local _, err, status = glq("--bogus")
      assert.equal(1, status)
      assert.equal("glq: unknown option '--bogus' (try glq --help)\n", err)
      _, err, status = glq("-e")
      assert.equal(1, status)
      assert.equal("glq: missing the argument of '-e' (try glq --help)\n", err)
    end)

    it("stops on Ctrl-C with a clean message and status 130", function()
      local dir = tmpdir()
      local errf = dir .. "/err"
      -- wait until the chunk runs, then interrupt it (a JIT-compiled loop never calls the hook,
      -- so this covers the one-second fallback)
      local cmd = ("%s -e 'io.stderr:write(\"ready\\n\") io.stderr:flush() local n = 0 while true do n = n + 1 end' 2>%s & "
        .. "p=$!; i=0; until grep -qs ready %s || [ $i -gt 200 ]; do sleep 0.05; i=$((i+1)); done; "
        .. "kill -INT $p; wait $p; echo $?"):format(q(BIN), q(errf), q(errf))
      local p = io.popen(cmd)
      local status = tonumber(p:read("*a"))
      p:close()
      assert.equal(130, status)
      assert.matches("^ready\n\n?glq: interrupted\n$", slurp(errf))
      os.execute("rm -rf " .. q(dir))
    end)
  end)

  it("prints the version and backend with --version", function()
    local out, err, status = glq("--version")
    assert.equal(0, status)
    assert.equal("", err)
    assert.matches("^glq %d+%.%d+[^\n]* %(LuaJIT 2%.1[^\n]*%)\n", out)
    assert.matches("\nBLAS: ", out)
  end)

  it("prints usage and the recipes with --help", function()
    local out, _, status = glq("--help")
    assert.equal(0, status)
    assert.matches("^usage: glq ", out)
    assert.matches("\nrecipes %(glq help RECIPE[^\n]*\n.*\n  info +summarize a checkpoint directory\n", out)
  end)
end)

describe("glq.repl", function()
  local repl = require "glq.repl"

  local function value_of(src)
    local fn, err = repl.compile(src)
    assert(fn, err)
    return fn()
  end

  it("evaluates expressions without '=' and runs statements", function()
    assert.equal(2, value_of("1+1"))
    assert.equal(7, value_of("=7"))
    assert.is_nil(value_of("local x = 1"))
    local a, b = value_of("1, 'two'")
    assert.same({1, "two"}, {a, b})
  end)

  it("tells incomplete chunks from wrong ones", function()
    for _, src in ipairs {"for i = 1, 2 do", "1 +", "f(", "x = {", "s = [[abc", "if x then\nprint(1)"} do
      local fn, _, incomplete = repl.compile(src)
      assert.is_nil(fn, src)
      assert.is_true(incomplete, src)
    end
    for _, src in ipairs {"x y", "1 = 2", "end", "s = 'abc"} do
      local fn, err, incomplete = repl.compile(src)
      assert.is_nil(fn, src)
      assert.is_false(incomplete, src)
      assert.matches("^stdin:1:", err)
    end
  end)

  it("formats values and tables readably, one level deep", function()
    assert.equal("42", repl.format(42))
    assert.equal("text", repl.format("text"))
    assert.equal("nil", repl.format(nil))
    assert.equal("{}", repl.format({}))
    assert.equal('{1, "two", 3.5, [10] = 0, a = true, b = "x\\ny", ["not id"] = 1}',
                 repl.format({1, "two", 3.5, a = true, b = "x\ny", ["not id"] = 1, [10] = 0}))
    assert.equal("{empty = {}, inner = {...}}", repl.format({inner = {1}, empty = {}}))
    assert.matches("^{f = function <[^>]+:%d+>}$", repl.format({f = function() end}))
  end)

  it("bounds long tables and breaks wide ones over lines", function()
    local t = {}
    for i = 1, 100 do t[i] = i end
    local s = repl.format(t)
    assert.matches("30,\n  %.%.%. %(70 more%)\n}$", s)
    assert.matches("^{\n  1,\n  2,\n", s)
  end)

  it("shows values with __tostring (tensors) by it, first line inside tables", function()
    local tensor = setmetatable({}, {__tostring = function() return "tensor f32 (2, 3)\n[[0, 0, 0],\n [0, 0, 0]]" end})
    assert.equal("tensor f32 (2, 3)\n[[0, 0, 0],\n [0, 0, 0]]", repl.format(tensor))
    assert.equal("{w = tensor f32 (2, 3)}", repl.format({w = tensor}))
  end)

  it("completes globals, keywords, fields and methods", function()
    local methods = {scale = function() end, size = 3}
    local env = {glq = {zeros = 1, zip = 2, ones = 3}, gx = 1,
                 t = setmetatable({}, {__index = methods})}
    assert.same({"glq.zeros", "glq.zip"}, repl.complete("glq.z", env))
    assert.same({"glq", "goto", "gx"}, repl.complete("g", env))
    assert.same({"t:scale"}, repl.complete("t:s", env))       -- methods only after ':'
    assert.same({"t.scale", "t.size"}, repl.complete("t.s", env))
    assert.same({"string.upper"}, repl.complete("string.upp"))
    assert.same({}, repl.complete("nothing.here", env))
    assert.same({}, repl.complete("glq.zeros.x", env))        -- a number has no fields
  end)

  -- a host that reads from a list of lines and records what is written
  local function fake_host(lines)
    local h = {written = {}, history = {}, prompts = {}, version = "test"}
    local i = 0
    function h.readline(prompt)
      h.prompts[#h.prompts + 1] = prompt
      i = i + 1
      return lines[i]
    end
    function h.add_history(s) h.history[#h.history + 1] = s end
    function h.call(f, ...) return pcall(f, ...) end
    function h.write(s) h.written[#h.written + 1] = s end
    return h
  end

  it("runs a session: values, multi-line chunks, errors, Ctrl-C and end of input", function()
    local h = fake_host {"1+1", "for i = 1, 2 do", "y = (y or 0) + i", "end", "y", "error('oops', 0)",
                         "f(", false, "'a', nil, 3", ""}
    repl.run(h)
    assert.matches("^glq test ", h.written[1])
    assert.same({"2\n", "3\n", "oops\n", "a\tnil\t3\n", "\n"}, {(table.unpack or unpack)(h.written, 2)})
    assert.same({"glq> ", "glq> ", ">> ", ">> ", "glq> ", "glq> ", "glq> ", ">> ", "glq> ", "glq> ", "glq> "},
                h.prompts)
    assert.same({"1+1", "for i = 1, 2 do\ny = (y or 0) + i\nend", "y", "error('oops', 0)", "'a', nil, 3", ""},
                h.history)
    _G.y = nil
  end)
end)
