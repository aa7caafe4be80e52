// Torch glue of the CUDA kernels of the batched spectral norms (spectral_kernels.cu): argument checks, the
// per-matrix metadata, launch on the current stream. Schemas: csrc/ops.cpp; math: regops/spectral_math.h; the
// oracle: the grouped mv/bmm iteration of python/regops/ops/spectral.py.
//
// The metadata travels in one int64 buffer of L MatrixMeta, filled in pinned host memory and copied to the device
// with one asynchronous copy on the current stream (no host sync). A call is that copy and one kernel: u_out is
// allocated uninitialized (the first step writes all of it) and the kernel reads the start v from vs itself, so
// no per-vector clone is launched.
#include <ATen/ATen.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <cstdint>
#include <cstring>
#include <tuple>
#include <utility>
#include <vector>

#include "regops/checks.h"
#include "regops/spectral_checks.h"
#include "spectral_kernels.h"

namespace regops {
namespace {

namespace sk = spectral_cuda;

sk::Dtype dtype_of(at::ScalarType s) {
  return s == at::kFloat ? sk::Dtype::kFloat32
         : s == at::kDouble ? sk::Dtype::kFloat64
         : s == at::kBFloat16 ? sk::Dtype::kBFloat16
                              : sk::Dtype::kFloat16;
}

// The device copy of the metadata. v_in and grad may be empty lists (the op does not use them); with grad given
// (the backward) u and v are read only. The tensors must outlive the launch on the current stream, which the
// callers' locals and outputs do. Returns (buffer, number of chunks).
std::pair<at::Tensor, int64_t> upload_meta(const std::vector<at::Tensor>& W, const std::vector<at::Tensor>& v_in,
                                           const std::vector<at::Tensor>& u, const std::vector<at::Tensor>& v,
                                           const std::vector<at::Tensor>& grad) {
  const size_t L = W.size();
  const int64_t words = static_cast<int64_t>(L * sizeof(sk::MatrixMeta) / sizeof(int64_t));
  auto host = at::empty({words}, at::TensorOptions().dtype(at::kLong).pinned_memory(true));
  std::memset(host.data_ptr<int64_t>(), 0, static_cast<size_t>(words) * sizeof(int64_t));
  auto* meta = reinterpret_cast<sk::MatrixMeta*>(host.data_ptr<int64_t>());
  int64_t chunks = 0;
  for (size_t l = 0; l < L; ++l) {
    meta[l].weight = W[l].const_data_ptr();
    meta[l].v_in = v_in.empty() ? nullptr : v_in[l].const_data_ptr();
    if (grad.empty()) {
      meta[l].u = u[l].mutable_data_ptr();
      meta[l].v = v[l].mutable_data_ptr();
      meta[l].grad = nullptr;
    } else {  // the inputs: const_data_ptr does not materialize a lazily cloned tensor
      meta[l].u = const_cast<void*>(u[l].const_data_ptr());
      meta[l].v = const_cast<void*>(v[l].const_data_ptr());
      meta[l].grad = grad[l].mutable_data_ptr();
    }
    meta[l].h = W[l].size(0);
    meta[l].w = W[l].size(1);
    meta[l].chunk_begin = chunks;
    chunks += sk::chunks_of(W[l].numel());
  }
  auto buf = at::empty({words}, at::TensorOptions().dtype(at::kLong).device(W[0].device()));
  buf.copy_(host, /*non_blocking=*/true);  // the pinned block is kept until the copy completes
  return {buf, chunks};
}

const sk::MatrixMeta* meta_ptr(const at::Tensor& buf) {
  return reinterpret_cast<const sk::MatrixMeta*>(buf.const_data_ptr<int64_t>());
}

std::tuple<at::Tensor, std::vector<at::Tensor>, std::vector<at::Tensor>> spectral_power_cuda(
    at::TensorList weights, at::TensorList us, at::TensorList vs, int64_t n_power_iterations, double eps) {
  const char* op = "spectral_power";
  const auto W = check_spectral_lists(op, weights, us, vs, c10::DeviceType::CUDA);
  check_spectral_params(op, n_power_iterations, eps);
  const size_t L = weights.size();
  const c10::cuda::CUDAGuard guard(weights[0].device());
  const auto st = weights[0].scalar_type();
  auto sigma = at::empty({static_cast<int64_t>(L)}, weights[0].options().dtype(acc_type(st)));
  std::vector<at::Tensor> v_in(L), u_out(L), v_out(L);
  for (size_t l = 0; l < L; ++l) {
    v_in[l] = vs[l].contiguous();
    u_out[l] = at::empty({W[l].size(0)}, us[l].options());
    v_out[l] = at::empty({W[l].size(1)}, vs[l].options());
  }
  const auto buf = upload_meta(W, v_in, u_out, v_out, {}).first;
  C10_CUDA_CHECK(sk::power(dtype_of(st), meta_ptr(buf), static_cast<int64_t>(L), n_power_iterations, eps,
                           sigma.mutable_data_ptr(), at::cuda::getCurrentCUDAStream().stream()));
  return {sigma, u_out, v_out};
}

std::vector<at::Tensor> spectral_outer_cuda(const at::Tensor& grad_sigmas, at::TensorList us, at::TensorList vs,
                                            at::TensorList weights) {
  const char* op = "spectral_outer";
  const auto W = check_spectral_lists(op, weights, us, vs, c10::DeviceType::CUDA);
  check_spectral_grad(grad_sigmas, weights);
  const size_t L = weights.size();
  const c10::cuda::CUDAGuard guard(weights[0].device());
  std::vector<at::Tensor> u(L), v(L), g(L);
  for (size_t l = 0; l < L; ++l) {
    u[l] = us[l].contiguous();
    v[l] = vs[l].contiguous();
    g[l] = at::empty_like(W[l], at::MemoryFormat::Contiguous);
  }
  const auto gs = grad_sigmas.contiguous();
  auto [buf, chunks] = upload_meta(W, {}, u, v, g);
  C10_CUDA_CHECK(sk::outer(dtype_of(weights[0].scalar_type()), meta_ptr(buf), static_cast<int64_t>(L), chunks,
                           gs.const_data_ptr(), at::cuda::getCurrentCUDAStream().stream()));
  return g;
}

}  // namespace
}  // namespace regops

TORCH_LIBRARY_IMPL(regops, CUDA, m) {
  m.impl("spectral_power", &regops::spectral_power_cuda);
  m.impl("spectral_outer", &regops::spectral_outer_cuda);
}
