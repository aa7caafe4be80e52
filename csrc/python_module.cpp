// The Python module regops._C: it carries only build facts for `python -m regops info`; every op goes through
// TORCH_LIBRARY (ops.cpp), which registers when this library is loaded.
//
// Written against CPython's limited API (Py_LIMITED_API, set by setup.py), so one wheel serves every Python from
// 3.10 on (abi3), as pytorch/extension-cpp does. That is why this file uses neither pybind11 nor
// <torch/extension.h>: both pull in the full Python API.
#include <Python.h>

#include <ATen/Parallel.h>
#include <torch/version.h>

#ifdef REGOPS_HAVE_BUILD_CONFIG
#include "regops/build_config.h"
#endif

#ifndef REGOPS_VERSION
#define REGOPS_VERSION "0.0.0"
#endif

namespace {

// The CPU kernels run on torch's intra-op pool (at::parallel_for), OpenMP in torch's builds.
PyObject* parallel_info(PyObject*, PyObject*) {
  const std::string info = at::get_parallel_info();
  return PyUnicode_FromStringAndSize(info.data(), static_cast<Py_ssize_t>(info.size()));
}

PyObject* intra_op_threads(PyObject*, PyObject*) {
  return PyLong_FromLong(at::get_num_threads());
}

PyMethodDef methods[] = {
    {"parallel_info", parallel_info, METH_NOARGS, "torch's at::get_parallel_info(), as seen by regops' kernels"},
    {"intra_op_threads", intra_op_threads, METH_NOARGS, "the intra-op thread count regops' CPU kernels use"},
    {nullptr, nullptr, 0, nullptr},
};

PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_C", "regops build facts; the ops are in torch.ops.regops",
                          -1, methods, nullptr, nullptr, nullptr, nullptr};

int add(PyObject* m, const char* name, PyObject* value) {  // steals value; -1 with an exception set on failure
  if (value == nullptr) return -1;
  const int rc = PyModule_AddObjectRef(m, name, value);
  Py_DECREF(value);
  return rc;
}

}  // namespace

PyMODINIT_FUNC PyInit__C(void) {
  PyObject* m = PyModule_Create(&module_def);
  if (m == nullptr) return nullptr;
#ifdef REGOPS_WITH_CUDA
  PyObject* with_cuda = Py_NewRef(Py_True);
#else
  PyObject* with_cuda = Py_NewRef(Py_False);
#endif
#ifdef REGOPS_CUDA_VERSION
  PyObject* cuda_version = PyUnicode_FromString(REGOPS_CUDA_VERSION);
#else
  PyObject* cuda_version = Py_NewRef(Py_None);
#endif
#ifdef REGOPS_CUDA_ARCHS
  const char* cuda_archs = REGOPS_CUDA_ARCHS;
#else
  const char* cuda_archs = "";
#endif
  if (add(m, "version", PyUnicode_FromString(REGOPS_VERSION)) < 0 ||
      add(m, "torch_version", PyUnicode_FromString(TORCH_VERSION)) < 0 ||
      add(m, "with_cuda", with_cuda) < 0 || add(m, "cuda_version", cuda_version) < 0 ||
      add(m, "cuda_archs", PyUnicode_FromString(cuda_archs)) < 0) {
    Py_DECREF(m);
    return nullptr;
  }
  return m;
}
