// Torch glue of the CUDA kernels of R-AMT's gradient dropout (graddrop_kernels.cu): argument checks, the
// per-tensor metadata of graddrop_apply_, launch on the current stream. Schemas: csrc/ops.cpp; the per-element
// rule: regops/graddrop_math.h; the oracle: python/regops/reference/graddrop.py.
//
// graddrop_apply_ is one kernel launch for the whole list. Its metadata travels in one int64 buffer, filled in
// pinned host memory and copied to the device with one asynchronous copy on the current stream (no host sync):
//   [0, T)              the non-finite counts, zero (the kernel adds to them; returned as a view)
//   [T, 7T)             T TensorMeta (pointers, numel, first chunk, dtype, vector flag)
//   [7T, 7T + ⌈C/2⌉)    C int32: the tensor of every chunk of 4096 elements
#include <ATen/ATen.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>  // at::cuda::getCurrentCUDAStream, without ATen/cuda/CUDAContext.h's
                                  // cuSPARSE/cuBLAS headers (absent from some CUDA_HOME installs)
#include <torch/library.h>

#include <climits>
#include <cstdint>
#include <cstring>
#include <string>
#include <utility>
#include <vector>

#include "graddrop_kernels.h"
#include "regops/checks.h"
#include "regops/graddrop_checks.h"

namespace regops {
namespace {

namespace gk = graddrop_cuda;

constexpr const char* kOp = "graddrop_";

gk::Dtype dtype_of(at::ScalarType s) {
  return s == at::kFloat ? gk::Dtype::kFloat32 : s == at::kBFloat16 ? gk::Dtype::kBFloat16 : gk::Dtype::kFloat16;
}

bool aligned(const void* p, int64_t bytes) { return reinterpret_cast<uintptr_t>(p) % static_cast<uintptr_t>(bytes) == 0; }

at::Tensor graddrop_apply_cuda(at::TensorList out, at::TensorList grads_task, at::TensorList grads_reg, double lam,
                               int64_t seed) {
  const auto inputs = check_graddrop_lists(out, grads_task, grads_reg, lam, c10::DeviceType::CUDA);
  const std::vector<at::Tensor>&a = inputs.first, &b = inputs.second;  // contiguous grads_task, grads_reg
  const size_t T = out.size();
  if (T == 0) return at::empty({0}, at::kLong);
  REGOPS_CHECK_VALUE(T <= static_cast<size_t>(INT_MAX), kOp, "out", "at most 2^31 - 1 tensors", std::to_string(T));
  const c10::Device device = out[0].device();
  const c10::cuda::CUDAGuard guard(device);

  // Chunks: tensor i owns chunks [chunk_begin_i, chunk_begin_i + ⌈numel_i / 4096⌉).
  std::vector<int64_t> chunk_begin(T + 1, 0);
  for (size_t i = 0; i < T; ++i) chunk_begin[i + 1] = chunk_begin[i] + gk::chunks_of(out[i].numel());
  const int64_t C = chunk_begin[T];
  const int64_t Ti = static_cast<int64_t>(T);
  const int64_t meta_words = static_cast<int64_t>(sizeof(gk::TensorMeta) / sizeof(int64_t));
  const int64_t words = Ti + meta_words * Ti + (C + 1) / 2;

  auto host = at::empty({words}, at::TensorOptions().dtype(at::kLong).pinned_memory(true));
  int64_t* h = host.data_ptr<int64_t>();
  std::memset(h, 0, static_cast<size_t>(words) * sizeof(int64_t));
  auto* meta = reinterpret_cast<gk::TensorMeta*>(h + Ti);
  auto* table = reinterpret_cast<int32_t*>(h + Ti + meta_words * Ti);
  for (size_t i = 0; i < T; ++i) {
    gk::TensorMeta& m = meta[i];
    const int64_t vec_bytes = 4 * static_cast<int64_t>(out[i].element_size());
    m.a = a[i].const_data_ptr();
    m.b = b[i].const_data_ptr();
    m.out = out[i].mutable_data_ptr();
    m.numel = out[i].numel();
    m.chunk_begin = chunk_begin[i];
    m.dtype = static_cast<int32_t>(dtype_of(out[i].scalar_type()));
    m.vec = aligned(m.a, vec_bytes) && aligned(m.b, vec_bytes) && aligned(m.out, vec_bytes);
    for (int64_t c = chunk_begin[i]; c < chunk_begin[i + 1]; ++c) table[c] = static_cast<int32_t>(i);
  }
  auto buf = at::empty({words}, at::TensorOptions().dtype(at::kLong).device(device));
  buf.copy_(host, /*non_blocking=*/true);  // on the current stream; the pinned block is kept until it completes
  int64_t* d = buf.data_ptr<int64_t>();
  C10_CUDA_CHECK(gk::apply(reinterpret_cast<const gk::TensorMeta*>(d + Ti),
                           reinterpret_cast<const int32_t*>(d + Ti + meta_words * Ti), C, d,
                           static_cast<float>(1.0 - lam), static_cast<uint64_t>(seed),
                           at::cuda::getCurrentCUDAStream().stream()));
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return buf.narrow(0, 0, Ti);
}

at::Tensor graddrop_keep_prob_cuda(const at::Tensor& grad_task, const at::Tensor& grad_reg) {
  check_graddrop_pair(grad_task, grad_reg, c10::DeviceType::CUDA);
  const c10::cuda::CUDAGuard guard(grad_task.device());
  const auto a = grad_task.contiguous(), b = grad_reg.contiguous();
  auto p = at::empty(a.sizes(), a.options());
  if (a.numel() == 0) return p;
  C10_CUDA_CHECK(gk::keep_prob(dtype_of(a.scalar_type()), a.const_data_ptr(), b.const_data_ptr(), p.mutable_data_ptr(),
                               a.numel(), at::cuda::getCurrentCUDAStream().stream()));
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return p;
}

}  // namespace
}  // namespace regops

TORCH_LIBRARY_IMPL(regops, CUDA, m) {
  m.impl("graddrop_apply_", &regops::graddrop_apply_cuda);
  m.impl("graddrop_keep_prob", &regops::graddrop_keep_prob_cuda);
}
