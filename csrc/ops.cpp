// Every regops schema, declared once. Kernels register per dispatch key in cpu/ and cuda/;
// fake kernels and autograd formulas are registered from Python (python/regops/ops/).
#include <torch/library.h>

#ifdef REGOPS_HAVE_BUILD_CONFIG
#include "regops/build_config.h"
#endif

#include <string>

#include "cpu/output_cache.h"

#include <ATen/Parallel.h>

namespace regops {

std::string build_info() {
  // CPU kernels run on torch's intra-op pool (OpenMP in torch's builds).
  std::string s = "threads=" + std::to_string(at::get_num_threads());
#ifdef REGOPS_WITH_CUDA
  s += ";cuda=1";
#else
  s += ";cuda=0";
#endif
#ifdef REGOPS_CUDA_ARCHS
  s += ";cuda_archs=" REGOPS_CUDA_ARCHS;
#endif
  return s;
}

}  // namespace regops

TORCH_LIBRARY(regops, m) {
  m.def("_build_info() -> str", &regops::build_info);
  // The cache of large CPU outputs (cpu/output_cache.h): regops.empty_cache() and its size.
  m.def("_cpu_cache_clear() -> ()", &regops::cpu_cache_clear);
  m.def("_cpu_cache_idle_bytes() -> int", &regops::cpu_cache_idle_bytes);

  // Orthonormality penalty on canonical "rows" matrices X (L, p, q): per-matrix ‖X Xᵀ − I‖_F (or its square).
  // residual = X Xᵀ − I in the accumulation dtype, saved for the backward.
  m.def("orthonormal_penalty_fwd(Tensor mats, bool squared) -> (Tensor values, Tensor residual)");
  m.def("orthonormal_penalty_bwd(Tensor grad_values, Tensor mats, Tensor residual, bool squared) -> Tensor");
  // Multi-tensor: grads[i] += scale · d‖mats[i] mats[i]ᵀ − I‖ / d mats[i], with no autograd graph.
  // Returns the per-matrix penalty values in float64.
  m.def("orthonormal_grad_accumulate_(Tensor[] mats, Tensor(a!)[] grads, float scale, bool squared) -> Tensor");
}
