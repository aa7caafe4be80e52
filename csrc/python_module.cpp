// pybind11 serves only build facts for `python -m regops info`; every op goes through TORCH_LIBRARY
// (pybind11-bound ops break torch.compile).
#include <torch/extension.h>

#ifdef REGOPS_HAVE_BUILD_CONFIG
#include "regops/build_config.h"
#endif

#include <ATen/Parallel.h>

#ifndef REGOPS_VERSION
#define REGOPS_VERSION "0.0.0"
#endif

PYBIND11_MODULE(_C, m) {
  m.attr("version") = REGOPS_VERSION;
  m.attr("torch_version") = TORCH_VERSION;
#ifdef REGOPS_WITH_CUDA
  m.attr("with_cuda") = true;
#else
  m.attr("with_cuda") = false;
#endif
#ifdef REGOPS_CUDA_VERSION
  m.attr("cuda_version") = REGOPS_CUDA_VERSION;
#else
  m.attr("cuda_version") = pybind11::none();
#endif
#ifdef REGOPS_CUDA_ARCHS
  m.attr("cuda_archs") = REGOPS_CUDA_ARCHS;
#else
  m.attr("cuda_archs") = "";
#endif
  // The CPU kernels run on torch's intra-op pool (at::parallel_for), OpenMP in torch's builds.
  m.def("parallel_info", []() { return at::get_parallel_info(); });
  m.def("intra_op_threads", []() { return at::get_num_threads(); });
}
