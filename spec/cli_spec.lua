-- glq.cli: option parsing, types, defaults, errors and the generated --help text.
package.path = "lua/?.lua;lua/?/init.lua;" .. package.path
local cli = require "glq.cli"

local function spec()
  return {
    prog = "glq demo",
    description = "A demo recipe.",
    args = { {"file", help = "input file"} },
    options = {
      {"bits", type = "int", default = 2, help = "bits per weight"},
      {"scale", type = "number", default = 1.5},
      {"format", type = "choice", choices = {"e8", "hif4"}, default = "e8", help = "weight format"},
      {"out", help = "output file"},
      {"verbose", type = "bool", short = "v", help = "say more"},
      {"group-size", type = "int", min = 1, max = 4096},
    },
  }
end

local function parse(args, s) return cli.parse(s or spec(), args) end

-- the message of the error parse raises
local function failure(args, s)
  local ok, err = pcall(parse, args, s)
  assert.is_false(ok)
  assert.equal("string", type(err))
  return err
end

describe("glq.cli parsing", function()
  it("fills defaults and the positional argument", function()
    local o = parse {"model.gguf"}
    assert.same({file = "model.gguf", bits = 2, scale = 1.5, format = "e8", verbose = false}, o)
  end)

  it("accepts --name value, --name=value and short aliases", function()
    local o = parse {"--bits", "4", "--scale=0.25", "-v", "--format", "hif4", "--out=a=b", "f"}
    assert.equal(4, o.bits)
    assert.equal(0.25, o.scale)
    assert.is_true(o.verbose)
    assert.equal("hif4", o.format)
    assert.equal("a=b", o.out)          -- only the first '=' splits
    assert.equal("f", o.file)
  end)

  it("maps dashes in names to underscores and honours min/max", function()
    assert.equal(128, parse({"--group-size", "128", "f"}).group_size)
    assert.matches("must be at least 1", failure {"--group-size", "0", "f"}, 1, true)
    assert.matches("must be at most 4096", failure {"--group-size=5000", "f"}, 1, true)
  end)

  it("reads flags as --flag, --no-flag and --flag=false", function()
    assert.is_true(parse({"--verbose", "f"}).verbose)
    assert.is_false(parse({"--verbose", "--no-verbose", "f"}).verbose)
    assert.is_false(parse({"--verbose=no", "f"}).verbose)
    assert.matches("expected true or false, got 'maybe'", failure {"--verbose=maybe", "f"}, 1, true)
  end)

  it("takes the next word as a value even when it starts with a dash", function()
    assert.equal(-3, parse({"--scale", "-3", "f"}).scale)
    assert.equal("-", parse({"--out", "-", "f"}).out)
  end)

  it("lets the last repetition win and stops at --", function()
    assert.equal(8, parse({"--bits", "3", "--bits", "8", "f"}).bits)
    assert.equal("--bits", parse({"--", "--bits"}).file)
  end)

  it("rejects bad values with the option named", function()
    assert.equal("option '--bits': expected an integer, got '2.5' (see 'glq demo --help')",
                 failure {"--bits", "2.5", "f"})
    assert.equal("option '--scale': expected a number, got 'abc' (see 'glq demo --help')",
                 failure {"--scale", "abc", "f"})
    assert.matches("option '--format': expected one of e8, hif4, got 'q4'", failure {"--format", "q4", "f"}, 1, true)
    assert.matches("option '--bits' needs a value", failure {"f", "--bits"}, 1, true)
  end)

  it("rejects unknown options and suggests a near name", function()
    assert.equal("unknown option '--bitz'; did you mean '--bits'? (see 'glq demo --help')", failure {"--bitz", "3"})
    assert.equal("unknown option '--zzzzzz' (see 'glq demo --help')", failure {"--zzzzzz"})
    assert.matches("unknown option '-q'", failure {"-q", "f"}, 1, true)
    assert.matches("unknown option '-vv'", failure {"-vv", "f"}, 1, true)
  end)

  it("reports missing and unexpected positionals", function()
    assert.matches("missing argument FILE", failure {}, 1, true)
    assert.matches("unexpected argument 'extra'", failure {"f", "extra"}, 1, true)
  end)

  it("treats a negative number as a positional", function()
    local s = {args = { {"x", type = "number"} }}
    assert.equal(-2, parse({"-2"}, s).x)
  end)

  it("enforces required options", function()
    local s = spec()
    s.options[4].required = true
    assert.matches("missing required option '--out'", failure({"f"}, s), 1, true)
    assert.equal("o.bin", parse({"--out", "o.bin", "f"}, s).out)
  end)

  it("collects the rest into a `many` positional", function()
    local s = {args = { {"first"}, {"rest", many = true, type = "int"} }}
    assert.same({first = "a", rest = {1, 2, 3}}, parse({"a", "1", "2", "3"}, s))
    assert.matches("missing argument REST", failure({"a"}, s), 1, true)
    assert.matches("argument REST: expected an integer", failure({"a", "x"}, s), 1, true)
    s.args[2].optional = true
    assert.same({first = "a", rest = {}}, parse({"a"}, s))
  end)

  it("reads only the positive part of an `arg` table", function()
    local args = {[-1] = "glq", [0] = "recipe.lua", "f", "--bits", "5"}
    local o = parse(args)
    assert.equal("f", o.file)
    assert.equal(5, o.bits)
  end)
end)

describe("glq.cli help", function()
  it("prints help and returns nil for --help and -h", function()
    for _, flag in ipairs {"--help", "-h"} do
      local printed
      local o = cli.parse(spec(), {"f", flag, "--bogus"}, function(s) printed = s end)
      assert.is_nil(o)
      assert.matches("^usage: glq demo %[options%] FILE\n", printed)
    end
  end)

  it("documents every option with its type, default and notes", function()
    local h = cli.parser(spec()):help()
    assert.matches("A demo recipe.", h, 1, true)
    assert.matches("\n  FILE +input file\n", h)
    assert.matches("\n  %-%-bits N +bits per weight %(default 2%)\n", h)
    assert.matches("\n  %-%-format {e8,hif4} +weight format %(default e8%)\n", h)
    assert.matches("\n  %-%-out OUT +output file\n", h)
    assert.matches("\n  %-v, %-%-verbose +say more %(%-%-no%-verbose to turn off%)\n", h)
    assert.matches("\n  %-h, %-%-help +print this help\n  %-%-version +print glq's version\n$", h)
  end)

  it("puts long option names on their own line", function()
    local h = cli.parser({options = { {"a-very-long-option-name", help = "x"} }}):help()
    assert.matches("\n  %-%-a%-very%-long%-option%-name A_VERY_LONG_OPTION_NAME\n +x\n", h)
  end)
end)

describe("glq.cli spec checks", function()
  it("rejects malformed specs", function()
    assert.has_error(function() cli.parser({options = { {"x", type = "float"} }}) end)
    assert.has_error(function() cli.parser({options = { {"x", type = "choice"} }}) end)
    assert.has_error(function() cli.parser({options = { {"x", type = "int", default = 1.5} }}) end)
    assert.has_error(function() cli.parser({options = { {"x"}, {"x"} }}) end)
    assert.has_error(function() cli.parser({options = { {"help"} }}) end)
    assert.has_error(function() cli.parser({options = { {"x", short = "h"} }}) end)
    assert.has_error(function() cli.parser({args = { {"a", many = true}, {"b"} }}) end)
  end)
end)
