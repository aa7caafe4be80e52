// CPU kernels of the orthonormality penalty ‖X Xᵀ − I‖_F on canonical "rows" matrices X (p×q, any strides).
// Small matrices: one thread per matrix (torch's OpenMP pool over the batch), hand-written loops that follow the
// contiguous stride. Large matrices: the Gram is a syrk-like recursive half product through ATen's BLAS
// (about 5/8 of a full GEMM), and the backward is one GEMM, R·X, since R is symmetric.
#include <ATen/ATen.h>
#include <ATen/MemoryOverlap.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <type_traits>
#include <unordered_map>
#include <vector>

#include "regops/checks.h"
#include "regops/orthonormal_checks.h"
#include "regops/orthonormal_math.h"
#include "output_cache.h"
#include "simd_x86.h"

namespace regops {
namespace {

constexpr const char* kOp = kOrthonormalOp;

template <typename T>
struct Mat {
  T* data;
  int64_t p, q, sp, sq;  // X[i, k] = data[i * sp + k * sq]
};

// Matrices this large go through BLAS; below, loop overhead beats BLAS call overhead.
bool use_blas(int64_t p, int64_t q) { return p >= 48 && p * q >= 32768; }

// Fills the lower triangle of R (p×p) with R = G − I, mirrors it, and returns Σ R².
template <typename acc_t>
acc_t finish_residual(acc_t* R, int64_t p) {
  double sumsq = 0;  // p² terms: a float32 running sum would lose digits
  for (int64_t i = 0; i < p; ++i) {
    for (int64_t j = 0; j <= i; ++j) {
      const acc_t r = ortho::residual(R[i * p + j], i, j);
      R[i * p + j] = r;
      R[j * p + i] = r;
      sumsq += static_cast<double>(ortho::lower_weight<acc_t>(i, j) * r * r);
    }
  }
  return static_cast<acc_t>(sumsq);
}

// Lower triangle of G = X Xᵀ into R, one thread.
template <typename scalar_t, typename acc_t>
void gram_lower_loops(const Mat<const scalar_t>& x, acc_t* R) {
  const int64_t p = x.p, q = x.q;
#ifdef REGOPS_HAVE_X86_SIMD
  if constexpr (std::is_same_v<scalar_t, acc_t>) {
    if (x.sq == 1 && simd::has_avx2_fma()) {
      simd::gram_lower_rows<scalar_t>(x.data, p, q, x.sp, R);
      return;
    }
    if (x.sp == 1 && simd::has_avx2_fma()) {
      simd::gram_lower_cols<scalar_t>(x.data, p, q, x.sq, R);
      return;
    }
  }
#endif
  std::fill(R, R + p * p, acc_t(0));
  if (x.sq == 1) {  // rows contiguous: dot products of rows
    for (int64_t i = 0; i < p; ++i) {
      const scalar_t* xi = x.data + i * x.sp;
      for (int64_t j = 0; j <= i; ++j) {
        const scalar_t* xj = x.data + j * x.sp;
        acc_t s = 0;
#pragma omp simd reduction(+ : s)
        for (int64_t k = 0; k < q; ++k) s += static_cast<acc_t>(xi[k]) * static_cast<acc_t>(xj[k]);
        R[i * p + j] = s;
      }
    }
  } else if (x.sp == 1) {  // columns contiguous: rank-1 updates, one column at a time
    for (int64_t k = 0; k < q; ++k) {
      const scalar_t* xk = x.data + k * x.sq;
      for (int64_t i = 0; i < p; ++i) {
        const acc_t xi = static_cast<acc_t>(xk[i]);
        acc_t* Ri = R + i * p;
#pragma omp simd
        for (int64_t j = 0; j <= i; ++j) Ri[j] += xi * static_cast<acc_t>(xk[j]);
      }
    }
  } else {
    for (int64_t i = 0; i < p; ++i)
      for (int64_t j = 0; j <= i; ++j) {
        acc_t s = 0;
        for (int64_t k = 0; k < q; ++k)
          s += static_cast<acc_t>(x.data[i * x.sp + k * x.sq]) * static_cast<acc_t>(x.data[j * x.sp + k * x.sq]);
        R[i * p + j] = s;
      }
  }
}

// Lower triangle of G = X Xᵀ by recursive halving: two half-size syrks and one GEMM.
void gram_lower_blas(const at::Tensor& x, const at::Tensor& g) {
  const int64_t p = x.size(0);
  if (p <= 64) {
    at::mm_out(const_cast<at::Tensor&>(g), x, x.t());
    return;
  }
  const int64_t h = p / 2;
  const auto x1 = x.narrow(0, 0, h), x2 = x.narrow(0, h, p - h);
  gram_lower_blas(x1, g.narrow(0, 0, h).narrow(1, 0, h));
  gram_lower_blas(x2, g.narrow(0, h, p - h).narrow(1, h, p - h));
  auto g21 = g.narrow(0, h, p - h).narrow(1, 0, h);
  at::mm_out(g21, x2, x1.t());
}

at::Tensor as_tensor(const void* data, int64_t p, int64_t q, int64_t sp, int64_t sq, at::ScalarType dtype) {
  return at::from_blob(const_cast<void*>(data), {p, q}, {sp, sq}, at::TensorOptions().dtype(dtype));
}

// Σ R² for one matrix; R (p×p, contiguous, acc dtype) receives the full symmetric residual.
template <typename scalar_t, typename acc_t>
acc_t gram_residual(const Mat<const scalar_t>& x, acc_t* R, bool blas) {
  if (blas) {
    const auto acc = c10::CppTypeToScalarType<acc_t>::value;
    auto xt = as_tensor(x.data, x.p, x.q, x.sp, x.sq, c10::CppTypeToScalarType<scalar_t>::value);
    if (xt.scalar_type() != acc) xt = xt.to(acc);
    gram_lower_blas(xt, as_tensor(R, x.p, x.p, x.p, 1, acc));
  } else {
    gram_lower_loops(x, R);
  }
  return finish_residual(R, x.p);
}

// out (+)= coef · R X for one matrix. buf holds max(p, q) accumulators.
template <typename scalar_t, typename acc_t>
void residual_times(const Mat<const scalar_t>& x, const acc_t* R, acc_t coef, const Mat<scalar_t>& out,
                    bool accumulate, bool blas, acc_t* buf) {
  const int64_t p = x.p, q = x.q;
  if (blas) {
    const auto acc = c10::CppTypeToScalarType<acc_t>::value;
    const auto st = c10::CppTypeToScalarType<scalar_t>::value;
    auto xt = as_tensor(x.data, p, q, x.sp, x.sq, st);
    if (st != acc) xt = xt.to(acc);
    auto rt = as_tensor(R, p, p, p, 1, acc);
    auto ot = as_tensor(out.data, p, q, out.sp, out.sq, st);
    if (accumulate) {
      ot.add_(at::mm(rt, xt), coef);
    } else if (st != acc) {
      ot.copy_(at::mm(rt, xt).mul_(coef));
    } else {
      at::mm_out(ot, rt, xt);
      ot.mul_(coef);
    }
    return;
  }
#ifdef REGOPS_HAVE_X86_SIMD
  if constexpr (std::is_same_v<scalar_t, acc_t>) {
    if (x.sq == 1 && out.sq == 1 && simd::has_avx2_fma()) {
      simd::residual_times_rows<scalar_t>(x.data, p, q, x.sp, R, coef, out.data, out.sp, accumulate);
      return;
    }
    if (x.sp == 1 && out.sp == 1 && simd::has_avx2_fma()) {
      simd::residual_times_cols<scalar_t>(x.data, p, q, x.sq, R, coef, out.data, out.sq, accumulate);
      return;
    }
  }
#endif
  auto store = [&](scalar_t* o, acc_t v) {
    *o = static_cast<scalar_t>(accumulate ? static_cast<acc_t>(*o) + v : v);
  };
  if (x.sq == 1 && out.sq == 1) {  // row i of the output is a combination of rows of X
    for (int64_t i = 0; i < p; ++i) {
      std::fill(buf, buf + q, acc_t(0));
      for (int64_t j = 0; j < p; ++j) {
        const acc_t r = coef * R[i * p + j];
        const scalar_t* xj = x.data + j * x.sp;
#pragma omp simd
        for (int64_t k = 0; k < q; ++k) buf[k] += r * static_cast<acc_t>(xj[k]);
      }
      scalar_t* oi = out.data + i * out.sp;
      for (int64_t k = 0; k < q; ++k) store(oi + k, buf[k]);
    }
  } else if (x.sp == 1 && out.sp == 1) {  // column k of the output is R times column k of X (R symmetric)
    for (int64_t k = 0; k < q; ++k) {
      const scalar_t* xk = x.data + k * x.sq;
      std::fill(buf, buf + p, acc_t(0));
      for (int64_t j = 0; j < p; ++j) {
        const acc_t xj = coef * static_cast<acc_t>(xk[j]);
        const acc_t* Rj = R + j * p;
#pragma omp simd
        for (int64_t i = 0; i < p; ++i) buf[i] += Rj[i] * xj;
      }
      scalar_t* ok = out.data + k * out.sq;
      for (int64_t i = 0; i < p; ++i) store(ok + i * out.sp, buf[i]);
    }
  } else {
    for (int64_t i = 0; i < p; ++i)
      for (int64_t k = 0; k < q; ++k) {
        acc_t s = 0;
        for (int64_t j = 0; j < p; ++j) s += R[i * p + j] * static_cast<acc_t>(x.data[j * x.sp + k * x.sq]);
        store(out.data + i * out.sp + k * out.sq, coef * s);
      }
  }
}

template <typename scalar_t>
Mat<scalar_t> mat_of(const at::Tensor& t, int64_t l) {  // matrix l of a 3-D tensor
  return {t.data_ptr<scalar_t>() + l * t.stride(0), t.size(1), t.size(2), t.stride(1), t.stride(2)};
}

template <typename scalar_t>
Mat<const scalar_t> const_mat_of(const at::Tensor& t, int64_t l) {
  return {t.const_data_ptr<scalar_t>() + l * t.stride(0), t.size(1), t.size(2), t.stride(1), t.stride(2)};
}

void raise_non_finite(int64_t index, const char* arg) {
  REGOPS_CHECK_VALUE(false, kOp, arg, "finite values",
                     "a non-finite penalty for matrix " + std::to_string(index) + " (the input holds NaN/Inf or overflows)");
}

// Parallel over matrices for the loop path; BLAS threads itself, so its matrices run one after another.
// at::parallel_for is torch's OpenMP pool: it honours torch.set_num_threads and never nests.
template <typename F>
void for_each_matrix(int64_t n, bool blas, int64_t work_per_matrix, const F& f) {
  if (blas) {
    for (int64_t l = 0; l < n; ++l) f(l);
    return;
  }
  const int64_t grain = std::max<int64_t>(1, (int64_t{1} << 15) / std::max<int64_t>(1, work_per_matrix));
  at::parallel_for(0, n, grain, [&](int64_t begin, int64_t end) {
    for (int64_t l = begin; l < end; ++l) f(l);
  });
}

std::tuple<at::Tensor, at::Tensor> orthonormal_penalty_fwd_cpu(const at::Tensor& mats, bool squared) {
  check_orthonormal_fwd(mats, c10::DeviceType::CPU);
  const int64_t L = mats.size(0), p = mats.size(1), q = mats.size(2);
  const auto acc = acc_type(mats.scalar_type());
  auto residual = at::empty({L, p, p}, mats.options().dtype(acc));
  auto values = at::empty({L}, mats.options());
  const bool blas = use_blas(p, q);
  AT_DISPATCH_FLOATING_TYPES_AND(at::kBFloat16, mats.scalar_type(), "orthonormal_penalty_fwd_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    std::vector<acc_t> sumsq(L);
    acc_t* rdata = residual.data_ptr<acc_t>();
    for_each_matrix(L, blas, p * p * q, [&](int64_t l) {
      sumsq[l] = gram_residual<scalar_t, acc_t>(const_mat_of<scalar_t>(mats, l), rdata + l * p * p, blas);
    });
    scalar_t* v = values.data_ptr<scalar_t>();
    for (int64_t l = 0; l < L; ++l) {
      const acc_t value = ortho::value_from_sumsq(sumsq[l], squared);
      if (!std::isfinite(static_cast<double>(value))) raise_non_finite(l, "mats");
      v[l] = static_cast<scalar_t>(value);
    }
  });
  return {values, residual};
}

at::Tensor orthonormal_penalty_bwd_cpu(const at::Tensor& grad_values, const at::Tensor& mats,
                                       const at::Tensor& residual, bool squared) {
  check_orthonormal_bwd(grad_values, mats, residual, c10::DeviceType::CPU);
  const int64_t L = mats.size(0), p = mats.size(1), q = mats.size(2);
  const auto acc = acc_type(mats.scalar_type());
  auto R = residual.contiguous();
  auto g = grad_values.to(acc).contiguous();
  auto out = cached_empty_like(mats);  // a large gradient: reuse mapped pages (see output_cache.h)
  const bool blas = use_blas(p, q);
  AT_DISPATCH_FLOATING_TYPES_AND(at::kBFloat16, mats.scalar_type(), "orthonormal_penalty_bwd_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const acc_t* rdata = R.const_data_ptr<acc_t>();
    const acc_t* gdata = g.const_data_ptr<acc_t>();
    for_each_matrix(L, blas, p * p * q, [&](int64_t l) {
      const acc_t* Rl = rdata + l * p * p;
      double sumsq = 0;
      for (int64_t k = 0; k < p * p; ++k) sumsq += static_cast<double>(Rl[k]) * Rl[k];
      const acc_t coef = ortho::grad_coef(gdata[l], static_cast<acc_t>(sumsq), squared);
      std::vector<acc_t> buf(blas ? 0 : std::max(p, q));
      residual_times<scalar_t, acc_t>(const_mat_of<scalar_t>(mats, l), Rl, coef, mat_of<scalar_t>(out, l),
                                      /*accumulate=*/false, blas, buf.data());
    });
  });
  return out;
}

at::Tensor orthonormal_grad_accumulate_cpu(at::TensorList mats, at::TensorList grads, double scale, bool squared) {
  const char* op = "sorsa_regularize_";
  REGOPS_CHECK_VALUE(mats.size() == grads.size(), op, "grads", std::to_string(mats.size()) + " tensors (one per matrix)",
                     std::to_string(grads.size()));
  const int64_t n = static_cast<int64_t>(mats.size());
  for (int64_t i = 0; i < n; ++i) {
    const std::string name = "mats[" + std::to_string(i) + "]", gname = "grads[" + std::to_string(i) + "]";
    check_dim(op, name, mats[i], 2);
    check_float_dtype(op, name, mats[i]);
    check_device(op, name, mats[i], c10::DeviceType::CPU);
    check_like(op, gname, grads[i], mats[i].sizes().vec(), mats[i], name.c_str());
    // The rows of one grad are written by parallel tasks: an expanded (stride-0) grad would race.
    REGOPS_CHECK_VALUE(at::has_internal_overlap(grads[i]) != at::MemOverlap::Yes, op, gname,
                       "a gradient whose elements do not share memory (not an expanded tensor)",
                       "strides " + c10::str(grads[i].strides()));
  }
  // Distinct grads are written by parallel tasks too: no two may share memory.
  {
    std::unordered_map<const void*, std::vector<int64_t>> by_storage;
    for (int64_t i = 0; i < n; ++i) by_storage[grads[i].storage().data()].push_back(i);
    for (const auto& entry : by_storage)
      for (size_t a = 0; a < entry.second.size(); ++a)
        for (size_t b = a + 1; b < entry.second.size(); ++b) {
          const int64_t i = entry.second[a], j = entry.second[b];
          REGOPS_CHECK_VALUE(at::get_overlap_status(grads[i], grads[j]) == at::MemOverlapStatus::No, op,
                             "grads[" + std::to_string(j) + "]", "a gradient that shares no memory with another",
                             "memory overlapping grads[" + std::to_string(i) + "]");
        }
  }
  auto values = at::empty({n}, at::TensorOptions().dtype(at::kDouble));
  double* v = values.data_ptr<double>();
  std::vector<at::Tensor> residuals(n);
  for (int64_t i = 0; i < n; ++i)
    residuals[i] = at::empty({mats[i].size(0), mats[i].size(0)}, mats[i].options().dtype(acc_type(mats[i].scalar_type())));
  std::vector<int64_t> small, large;
  for (int64_t i = 0; i < n; ++i) (use_blas(mats[i].size(0), mats[i].size(1)) ? large : small).push_back(i);
  // Small matrices run in parallel, one per task; BLAS threads itself, so large ones run in turn.
  auto for_each = [&](const auto& f) {
    at::parallel_for(0, static_cast<int64_t>(small.size()), 1, [&](int64_t begin, int64_t end) {
      for (int64_t s = begin; s < end; ++s) f(small[s]);
    });
    for (int64_t i : large) f(i);
  };
  // Pass 1: Gram, residual and norm of every matrix; nothing is written to grads yet.
  for_each([&](int64_t i) {
    const auto& x = mats[i];
    AT_DISPATCH_FLOATING_TYPES_AND(at::kBFloat16, x.scalar_type(), "orthonormal_grad_accumulate_cpu", [&] {
      using acc_t = at::opmath_type<scalar_t>;
      Mat<const scalar_t> xm{x.const_data_ptr<scalar_t>(), x.size(0), x.size(1), x.stride(0), x.stride(1)};
      v[i] = static_cast<double>(gram_residual<scalar_t, acc_t>(xm, residuals[i].data_ptr<acc_t>(),
                                                                 use_blas(x.size(0), x.size(1))));
    });
  });
  // A non-finite matrix raises before any gradient changes: never a half-applied update.
  for (int64_t i = 0; i < n; ++i) {
    const std::string name = "mats[" + std::to_string(i) + "]";
    REGOPS_CHECK_VALUE(std::isfinite(v[i]), op, name, "finite values",
                       "a non-finite penalty (the input holds NaN/Inf or overflows); no gradient was changed");
  }
  // Pass 2: grads[i] += coef · R X.
  for_each([&](int64_t i) {
    const auto& x = mats[i];
    const int64_t p = x.size(0), q = x.size(1);
    const bool blas = use_blas(p, q);
    AT_DISPATCH_FLOATING_TYPES_AND(at::kBFloat16, x.scalar_type(), "orthonormal_grad_accumulate_cpu", [&] {
      using acc_t = at::opmath_type<scalar_t>;
      std::vector<acc_t> buf(blas ? 0 : std::max(p, q));
      Mat<const scalar_t> xm{x.const_data_ptr<scalar_t>(), p, q, x.stride(0), x.stride(1)};
      Mat<scalar_t> gm{grads[i].data_ptr<scalar_t>(), p, q, grads[i].stride(0), grads[i].stride(1)};
      const acc_t coef = ortho::grad_coef(static_cast<acc_t>(scale), static_cast<acc_t>(v[i]), squared);
      residual_times<scalar_t, acc_t>(xm, residuals[i].const_data_ptr<acc_t>(), coef, gm, /*accumulate=*/true, blas,
                                      buf.data());
    });
    v[i] = ortho::value_from_sumsq(v[i], squared);
  });
  return values;
}

}  // namespace
}  // namespace regops

TORCH_LIBRARY_IMPL(regops, CPU, m) {
  m.impl("orthonormal_penalty_fwd", &regops::orthonormal_penalty_fwd_cpu);
  m.impl("orthonormal_penalty_bwd", &regops::orthonormal_penalty_bwd_cpu);
  m.impl("orthonormal_grad_accumulate_", &regops::orthonormal_grad_accumulate_cpu);
}
