// Torch glue of the CUDA kernels of the batched spectral norms (spectral_kernels.cu): argument checks, the
// per-matrix metadata, launch on the current stream. Schemas: csrc/ops.cpp; math: regops/spectral_math.h; the
// oracle: the grouped mv/bmm iteration of python/regops/ops/spectral.py.
//
// The metadata travels in one int64 buffer of L MatrixMeta, filled in pinned host memory and copied to the device
// with one asynchronous copy on the current stream (no host sync). A call is that copy and one kernel: u_out is
// allocated uninitialized (the first step writes all of it) and the kernel reads the start v from v itself, so
// no clone is launched. u and v are the concatenated vectors of all matrices (csrc/ops.cpp).
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

// The device copy of the metadata. u and v are the concatenated vectors (matrix l's slice starts at the sum of the
// earlier matrices' rows, resp. columns); v_in (the power's start vector) may be undefined, grad empty (the power)
// or the gradients (the outer product, which reads u and v only). The tensors must outlive the launch on the
// current stream, which the callers' locals and outputs do. Returns (buffer, number of chunks).
std::pair<at::Tensor, int64_t> upload_meta(const std::vector<at::Tensor>& W, const at::Tensor& v_in, const at::Tensor& u,
                                           const at::Tensor& v, const std::vector<at::Tensor>& grad) {
  const size_t L = W.size();
  const int64_t words = static_cast<int64_t>(L * sizeof(sk::MatrixMeta) / sizeof(int64_t));
  auto host = at::empty({words}, at::TensorOptions().dtype(at::kLong).pinned_memory(true));
  std::memset(host.data_ptr<int64_t>(), 0, static_cast<size_t>(words) * sizeof(int64_t));
  auto* meta = reinterpret_cast<sk::MatrixMeta*>(host.data_ptr<int64_t>());
  const int64_t esize = static_cast<int64_t>(u.element_size());
  // const_data_ptr for the outer product's inputs: it does not materialize a lazily cloned tensor
  char* u_base = static_cast<char*>(grad.empty() ? u.mutable_data_ptr() : const_cast<void*>(u.const_data_ptr()));
  char* v_base = static_cast<char*>(grad.empty() ? v.mutable_data_ptr() : const_cast<void*>(v.const_data_ptr()));
  const char* v_in_base = v_in.defined() ? static_cast<const char*>(v_in.const_data_ptr()) : nullptr;
  int64_t chunks = 0, ou = 0, ov = 0;
  for (size_t l = 0; l < L; ++l) {
    meta[l].weight = W[l].const_data_ptr();
    meta[l].v_in = v_in_base ? v_in_base + ov * esize : nullptr;
    meta[l].u = u_base + ou * esize;
    meta[l].v = v_base + ov * esize;
    meta[l].grad = grad.empty() ? nullptr : grad[l].mutable_data_ptr();
    meta[l].h = W[l].size(0);
    meta[l].w = W[l].size(1);
    meta[l].chunk_begin = chunks;
    chunks += sk::chunks_of(W[l].numel());
    ou += W[l].size(0);
    ov += W[l].size(1);
  }
  auto buf = at::empty({words}, at::TensorOptions().dtype(at::kLong).device(W[0].device()));
  buf.copy_(host, /*non_blocking=*/true);  // the pinned block is kept until the copy completes
  return {buf, chunks};
}

const sk::MatrixMeta* meta_ptr(const at::Tensor& buf) {
  return reinterpret_cast<const sk::MatrixMeta*>(buf.const_data_ptr<int64_t>());
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> spectral_power_cuda(at::TensorList weights, const at::Tensor& u,
                                                                   const at::Tensor& v, int64_t n_power_iterations,
                                                                   double eps) {
  const char* op = "spectral_power";
  const auto W = check_spectral_lists(op, weights, u, v, c10::DeviceType::CUDA);
  check_spectral_params(op, n_power_iterations, eps);
  const c10::cuda::CUDAGuard guard(weights[0].device());
  const auto st = weights[0].scalar_type();
  auto sigma = at::empty({static_cast<int64_t>(weights.size())}, weights[0].options().dtype(acc_type(st)));
  const auto v_in = v.contiguous();
  auto u_out = at::empty({u.size(0)}, u.options());  // the first step writes all of it
  auto v_out = at::empty({v.size(0)}, v.options());
  const auto buf = upload_meta(W, v_in, u_out, v_out, {}).first;
  C10_CUDA_CHECK(sk::power(dtype_of(st), meta_ptr(buf), static_cast<int64_t>(W.size()), n_power_iterations, eps,
                           sigma.mutable_data_ptr(), at::cuda::getCurrentCUDAStream().stream()));
  return {sigma, u_out, v_out};
}

std::vector<at::Tensor> spectral_outer_cuda(const at::Tensor& grad_sigmas, const at::Tensor& u, const at::Tensor& v,
                                            at::TensorList weights) {
  const char* op = "spectral_outer";
  const auto W = check_spectral_lists(op, weights, u, v, c10::DeviceType::CUDA);
  check_spectral_grad(grad_sigmas, weights);
  const c10::cuda::CUDAGuard guard(weights[0].device());
  std::vector<at::Tensor> g(W.size());
  for (size_t l = 0; l < W.size(); ++l) g[l] = at::empty_like(W[l], at::MemoryFormat::Contiguous);
  const auto uc = u.contiguous(), vc = v.contiguous();
  const auto gs = grad_sigmas.contiguous();
  auto [buf, chunks] = upload_meta(W, at::Tensor(), uc, vc, g);
  C10_CUDA_CHECK(sk::outer(dtype_of(weights[0].scalar_type()), meta_ptr(buf), static_cast<int64_t>(W.size()), chunks,
                           gs.const_data_ptr(), at::cuda::getCurrentCUDAStream().stream()));
  return g;
}

}  // namespace
}  // namespace regops

TORCH_LIBRARY_IMPL(regops, CUDA, m) {
  m.impl("spectral_power", &regops::spectral_power_cuda);
  m.impl("spectral_outer", &regops::spectral_outer_cuda);
}
