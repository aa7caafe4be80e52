// Argument checks for the torch-facing C++ glue. Every message reads
//   regops.<op>: <arg>: expected <...>, got <...>
// and the exception type maps to Python's ValueError (values, shapes), TypeError (dtype) or
// RuntimeError (device), as the Python helper regops._checks does.
#pragma once
#include <ATen/ATen.h>
#include <c10/util/Exception.h>

#include <sstream>
#include <string>

namespace regops {

inline std::string describe(const at::Tensor& t) {
  std::ostringstream s;
  s << "shape " << t.sizes() << ", dtype " << t.scalar_type() << ", device " << t.device();
  return s.str();
}

#define REGOPS_CHECK_VALUE(cond, op, arg, expected, got) \
  TORCH_CHECK_VALUE((cond), "regops.", op, ": ", arg, ": expected ", expected, ", got ", got)
#define REGOPS_CHECK_TYPE(cond, op, arg, expected, got) \
  TORCH_CHECK_TYPE((cond), "regops.", op, ": ", arg, ": expected ", expected, ", got ", got)
#define REGOPS_CHECK_DEVICE(cond, op, arg, expected, got) \
  TORCH_CHECK((cond), "regops.", op, ": ", arg, ": expected ", expected, ", got ", got)

inline void check_dim(const char* op, const char* arg, const at::Tensor& t, int64_t dim) {
  REGOPS_CHECK_VALUE(t.dim() == dim, op, arg, std::to_string(dim) + "-D tensor", describe(t));
}

inline void check_device(const char* op, const char* arg, const at::Tensor& t, c10::DeviceType type) {
  REGOPS_CHECK_DEVICE(t.device().type() == type, op, arg,
                      std::string("a tensor on ") + c10::DeviceTypeName(type, /*lower_case=*/true), describe(t));
}

// float32, float64 or bfloat16: the dtypes every regops kernel takes.
inline void check_float_dtype(const char* op, const char* arg, const at::Tensor& t) {
  const auto s = t.scalar_type();
  REGOPS_CHECK_TYPE(s == at::kFloat || s == at::kDouble || s == at::kBFloat16, op, arg,
                    "dtype float32, float64 or bfloat16", describe(t));
}

inline void check_same_shape(const char* op, const char* arg, const at::Tensor& t, const at::Tensor& like,
                             const char* like_arg) {
  REGOPS_CHECK_VALUE(t.sizes() == like.sizes(), op, arg,
                     std::string("the shape of ") + like_arg + " " + c10::str(like.sizes()), describe(t));
}

// Accumulation dtype: bf16 accumulates in fp32, fp32 and fp64 stay.
inline at::ScalarType acc_type(at::ScalarType s) {
  return (s == at::kBFloat16 || s == at::kHalf) ? at::kFloat : s;
}

}  // namespace regops
