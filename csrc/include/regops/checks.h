// Argument checks for the torch-facing C++ glue. Every message reads
//   regops.<op>: <arg>: expected <...>, got <...>
// and the exception type maps to Python's ValueError (values, shapes), TypeError (dtype) or
// RuntimeError (device). python/regops/contracts/__init__.py writes the same helpers, word for word, for the
// Triton host code and the fake kernels; each family's contract is one *_checks.h here and one module there.
#pragma once
#include <ATen/ATen.h>
#include <c10/util/Exception.h>

#include <cstdlib>
#include <cstring>
#include <sstream>
#include <string>
#include <vector>

namespace regops {

// Python's names: float32, int64, ... (str(torch.float32) without "torch.").
inline std::string dtype_name(at::ScalarType s) {
  switch (s) {
    case at::kFloat: return "float32";
    case at::kDouble: return "float64";
    case at::kBFloat16: return "bfloat16";
    case at::kHalf: return "float16";
    case at::kLong: return "int64";
    case at::kInt: return "int32";
    case at::kShort: return "int16";
    case at::kChar: return "int8";
    case at::kByte: return "uint8";
    case at::kBool: return "bool";
    case at::kComplexFloat: return "complex64";
    case at::kComplexDouble: return "complex128";
    default: return c10::toString(s);
  }
}

// Python's tuple form: "(2, 4)", "(5,)", "()".
inline std::string shape_str(at::IntArrayRef s) {
  std::string r = "(";
  for (size_t k = 0; k < s.size(); ++k) r += (k ? ", " : "") + std::to_string(s[k]);
  return r + (s.size() == 1 ? ",)" : ")");
}

// A double as Python's f"{x:g}" writes it (the default ostream format).
inline std::string num_str(double x) {
  std::ostringstream s;
  s << x;
  return s.str();
}

inline std::string describe(const at::Tensor& t) {
  return "shape " + shape_str(t.sizes()) + ", dtype " + dtype_name(t.scalar_type()) + ", device " + c10::str(t.device());
}

#define REGOPS_CHECK_VALUE(cond, op, arg, expected, got) \
  TORCH_CHECK_VALUE((cond), "regops.", op, ": ", arg, ": expected ", expected, ", got ", got)
#define REGOPS_CHECK_TYPE(cond, op, arg, expected, got) \
  TORCH_CHECK_TYPE((cond), "regops.", op, ": ", arg, ": expected ", expected, ", got ", got)
#define REGOPS_CHECK_DEVICE(cond, op, arg, expected, got) \
  TORCH_CHECK((cond), "regops.", op, ": ", arg, ": expected ", expected, ", got ", got)

inline void check_dim(const char* op, const std::string& arg, const at::Tensor& t, int64_t dim, const char* what = "") {
  REGOPS_CHECK_VALUE(t.dim() == dim, op, arg, "a " + std::to_string(dim) + "-D tensor" + what, describe(t));
}

inline void check_device(const char* op, const std::string& arg, const at::Tensor& t, c10::DeviceType type) {
  REGOPS_CHECK_DEVICE(t.device().type() == type, op, arg,
                      std::string("a tensor on ") + c10::DeviceTypeName(type, /*lower_case=*/true), describe(t));
}

// "dtype float32 or float64", "dtype float32, float64 or bfloat16" (and a note in parentheses, if any).
inline std::string dtypes_str(const std::vector<at::ScalarType>& dtypes) {
  std::string r = "dtype ";
  for (size_t k = 0; k < dtypes.size(); ++k)
    r += (k == 0 ? "" : k + 1 == dtypes.size() ? " or " : ", ") + dtype_name(dtypes[k]);
  return r;
}

inline void check_dtype_in(const char* op, const std::string& arg, const at::Tensor& t,
                           const std::vector<at::ScalarType>& dtypes, const char* note = "") {
  bool ok = false;
  for (auto d : dtypes) ok = ok || t.scalar_type() == d;
  REGOPS_CHECK_TYPE(ok, op, arg, dtypes_str(dtypes) + note, describe(t));
}

// float32, float64 or bfloat16: the floating dtypes every regops kernel takes.
inline void check_float_dtype(const char* op, const std::string& arg, const at::Tensor& t) {
  check_dtype_in(op, arg, t, {at::kFloat, at::kDouble, at::kBFloat16});
}

inline void check_shape(const char* op, const std::string& arg, const at::Tensor& t, const std::vector<int64_t>& shape,
                        const char* note = "") {
  REGOPS_CHECK_VALUE(t.sizes() == at::IntArrayRef(shape), op, arg, "shape " + shape_str(shape) + note, describe(t));
}

inline void check_same_dtype(const char* op, const std::string& arg, const at::Tensor& t, const at::Tensor& ref,
                             const char* ref_arg) {
  REGOPS_CHECK_TYPE(t.scalar_type() == ref.scalar_type(), op, arg,
                    "dtype " + dtype_name(ref.scalar_type()) + " (as " + ref_arg + ")", describe(t));
}

// A second tensor must sit on the very device of the first: the kernels dereference its pointer there.
inline void check_same_device(const char* op, const std::string& arg, const at::Tensor& t, const at::Tensor& ref,
                              const char* ref_arg) {
  REGOPS_CHECK_DEVICE(t.device() == ref.device(), op, arg, "device " + c10::str(ref.device()) + " (as " + ref_arg + ")",
                      describe(t));
}

// shape, then the dtype and device of ref.
inline void check_like(const char* op, const std::string& arg, const at::Tensor& t, const std::vector<int64_t>& shape,
                       const at::Tensor& ref, const char* ref_arg) {
  check_shape(op, arg, t, shape);
  check_same_dtype(op, arg, t, ref, ref_arg);
  check_same_device(op, arg, t, ref, ref_arg);
}

// On CUDA a finiteness check costs a host sync, so it runs only on request (as regops._checks says).
inline bool check_finite_requested() {
  const char* v = std::getenv("REGOPS_CHECK_FINITE");
  return v != nullptr && std::strcmp(v, "1") == 0;
}

// A CUDA kernel's per-row results must be finite (a NaN/Inf input or an overflow shows there); checked only on
// request, since it costs a host sync. `what` names a row: "loss for anchor", "penalty for matrix".
inline void check_finite_result(const char* op, const char* arg, const at::Tensor& values, const char* what) {
  if (!check_finite_requested()) return;
  const auto finite = at::isfinite(values);
  if (finite.all().item<bool>()) return;
  const int64_t bad = at::logical_not(finite).nonzero()[0][0].item<int64_t>();  // the first bad row
  REGOPS_CHECK_VALUE(false, op, arg, "finite values",
                     std::string("a non-finite ") + what + " " + std::to_string(bad) +
                         " (the input holds NaN/Inf or overflows)");
}

// Accumulation dtype: bf16 accumulates in fp32, fp32 and fp64 stay.
inline at::ScalarType acc_type(at::ScalarType s) {
  return (s == at::kBFloat16 || s == at::kHalf) ? at::kFloat : s;
}

}  // namespace regops
