// pybind11 serves only build facts for `python -m regops info`; every op goes through TORCH_LIBRARY
// (pybind11-bound ops break torch.compile).
#include <torch/extension.h>

#ifdef REGOPS_HAVE_BUILD_CONFIG
#include "regops/build_config.h"
#endif

#ifdef _OPENMP
#include <omp.h>
#endif

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
#ifdef _OPENMP
  m.attr("with_openmp") = true;
  m.def("openmp_max_threads", []() { return omp_get_max_threads(); });
#else
  m.attr("with_openmp") = false;
  m.def("openmp_max_threads", []() { return 1; });
#endif
}
