-- hessian.lua - a random correlated n x n f64 Hessian for the layer benchmarks: X^T X / rows over rows = 2n
-- samples of a rank-64 factor plus N(0, 0.3^2) noise. Usage: local hessian = dofile("bench/support/hessian.lua")
return function(n, seed)
  local rows = 2 * n
  local x = glq.matmul(glq.randn({ rows, 64 }, seed), glq.randn({ 64, n }, seed + 1)):add(glq.randn({ rows, n }, seed + 2):mul(0.3))
  local h = glq.zeros("f64", { n, n })
  glq.hessian_accumulate(h, x)
  return h:mul(1 / rows)
end
