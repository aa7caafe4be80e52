// Torch glue of the CUDA kernels of the parameter repulsion (repulsion_kernels.cu): argument checks, the per-tensor
// metadata, launch on the current stream. Schemas: csrc/ops.cpp; math: regops/repulsion_math.h; the oracle:
// python/regops/reference/repulsion.py.
//
// The metadata travels in one int64 buffer, filled in pinned host memory and copied to the device with one
// asynchronous copy on the current stream (no host sync): [0, 5T) T TensorMeta, [5T, 5T + ⌈C/2⌉) C int32 (the
// tensor of every chunk).
#include <ATen/ATen.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <climits>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "regops/checks.h"
#include "regops/repulsion_checks.h"
#include "repulsion_kernels.h"

namespace regops {
namespace {

namespace rk = repulsion_cuda;

rk::Dtype dtype_of(at::ScalarType s) {
  return s == at::kFloat ? rk::Dtype::kFloat32
         : s == at::kDouble ? rk::Dtype::kFloat64
         : s == at::kBFloat16 ? rk::Dtype::kBFloat16
                              : rk::Dtype::kFloat16;
}

// The device copy of the metadata; grads (or none) are the backward's outputs. Returns (buffer, number of chunks).
std::pair<at::Tensor, int64_t> upload_meta(const std::vector<at::Tensor>& x, size_t T, const std::vector<at::Tensor>* grads) {
  std::vector<int64_t> chunk_begin(T + 1, 0);
  for (size_t i = 0; i < T; ++i) chunk_begin[i + 1] = chunk_begin[i] + rk::chunks_of(x[i].numel());
  const int64_t C = chunk_begin[T];
  REGOPS_CHECK_VALUE(C <= static_cast<int64_t>(INT_MAX) && T <= static_cast<size_t>(INT_MAX), "param_repulsion",
                     "params", "at most 2^31 - 1 chunks", std::to_string(C));
  const int64_t Ti = static_cast<int64_t>(T);
  const int64_t meta_words = static_cast<int64_t>(sizeof(rk::TensorMeta) / sizeof(int64_t));
  const int64_t words = meta_words * Ti + (C + 1) / 2;
  auto host = at::empty({words}, at::TensorOptions().dtype(at::kLong).pinned_memory(true));
  int64_t* h = host.data_ptr<int64_t>();
  std::memset(h, 0, static_cast<size_t>(words) * sizeof(int64_t));
  auto* meta = reinterpret_cast<rk::TensorMeta*>(h);
  auto* table = reinterpret_cast<int32_t*>(h + meta_words * Ti);
  for (size_t i = 0; i < T; ++i) {
    meta[i].theta = x[i].const_data_ptr();
    meta[i].mean = x[T + i].const_data_ptr();
    meta[i].grad = grads ? (*grads)[i].mutable_data_ptr() : nullptr;
    meta[i].numel = x[i].numel();
    meta[i].chunk_begin = chunk_begin[i];
    for (int64_t c = chunk_begin[i]; c < chunk_begin[i + 1]; ++c) table[c] = static_cast<int32_t>(i);
  }
  auto buf = at::empty({words}, at::TensorOptions().dtype(at::kLong).device(x[0].device()));
  buf.copy_(host, /*non_blocking=*/true);  // the pinned block is kept until the copy completes
  return {buf, C};
}

at::Tensor repulsion_fwd_cuda(at::TensorList params, at::TensorList anchor_means) {
  const auto x = check_repulsion_lists("repulsion_fwd", params, anchor_means, c10::DeviceType::CUDA);
  const size_t T = params.size();
  const c10::cuda::CUDAGuard guard(params[0].device());
  const auto st = params[0].scalar_type();
  auto sums = at::empty({static_cast<int64_t>(T)}, params[0].options().dtype(acc_type(st)));
  auto [buf, C] = upload_meta(x, T, nullptr);
  auto partials = at::empty({std::max<int64_t>(C, 1)}, params[0].options().dtype(at::kDouble));
  const int64_t meta_words = static_cast<int64_t>(sizeof(rk::TensorMeta) / sizeof(int64_t));
  int64_t* d = buf.data_ptr<int64_t>();
  C10_CUDA_CHECK(rk::forward(dtype_of(st), reinterpret_cast<const rk::TensorMeta*>(d),
                             reinterpret_cast<const int32_t*>(d + meta_words * static_cast<int64_t>(T)), C,
                             static_cast<int64_t>(T), partials.data_ptr<double>(), sums.data_ptr(),
                             at::cuda::getCurrentCUDAStream().stream()));
  return sums;
}

std::vector<at::Tensor> repulsion_bwd_cuda(const at::Tensor& grad_sums, at::TensorList params,
                                           at::TensorList anchor_means) {
  const auto x = check_repulsion_lists("repulsion_bwd", params, anchor_means, c10::DeviceType::CUDA);
  check_repulsion_grad(grad_sums, params);
  const size_t T = params.size();
  const c10::cuda::CUDAGuard guard(params[0].device());
  std::vector<at::Tensor> g(T);
  for (size_t i = 0; i < T; ++i) g[i] = at::empty_like(x[i], at::MemoryFormat::Contiguous);
  const auto gs = grad_sums.contiguous();
  auto [buf, C] = upload_meta(x, T, &g);
  const int64_t meta_words = static_cast<int64_t>(sizeof(rk::TensorMeta) / sizeof(int64_t));
  int64_t* d = buf.data_ptr<int64_t>();
  C10_CUDA_CHECK(rk::backward(dtype_of(params[0].scalar_type()), reinterpret_cast<const rk::TensorMeta*>(d),
                              reinterpret_cast<const int32_t*>(d + meta_words * static_cast<int64_t>(T)), C,
                              gs.const_data_ptr(), at::cuda::getCurrentCUDAStream().stream()));
  return g;
}

}  // namespace
}  // namespace regops

TORCH_LIBRARY_IMPL(regops, CUDA, m) {
  m.impl("repulsion_fwd", &regops::repulsion_fwd_cuda);
  m.impl("repulsion_bwd", &regops::repulsion_bwd_cuda);
}
