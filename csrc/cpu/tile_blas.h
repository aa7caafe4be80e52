// BLAS on row-major tiles for the CPU kernels, through ATen's mm on from_blob views (MKL/OpenBLAS; it runs
// one thread per call, see SequentialBlas).
#pragma once
#include <ATen/ATen.h>

#include <cstdint>

// MKL picks its blocking, and so its summation order, from the threads it may use, even when it then runs on one
// inside our parallel regions; with one thread per tile GEMM the bits do not depend on torch.set_num_threads.
// Weak: builds whose torch has no MKL (OpenBLAS) leave it null.
extern "C" int MKL_Set_Num_Threads_Local(int) __attribute__((weak));  // the C interface (by value)

namespace regops {
namespace tile_blas {

struct SequentialBlas {
  int previous = 0;
  SequentialBlas() {
    if (MKL_Set_Num_Threads_Local) previous = MKL_Set_Num_Threads_Local(1);
  }
  ~SequentialBlas() {
    if (MKL_Set_Num_Threads_Local) MKL_Set_Num_Threads_Local(previous);
  }
  SequentialBlas(const SequentialBlas&) = delete;
  SequentialBlas& operator=(const SequentialBlas&) = delete;
};

template <typename T>
at::Tensor view(const T* p, int64_t rows, int64_t cols) {
  return at::from_blob(const_cast<T*>(p), {rows, cols}, at::TensorOptions().dtype(c10::CppTypeToScalarType<T>::value));
}

// C (rows × cols) = alpha · X Yᵀ with X (rows × d), Y (cols × d).
template <typename T>
void gemm_xyt(int64_t rows, int64_t cols, int64_t d, T alpha, const T* X, const T* Y, T* C) {
  const SequentialBlas sequential;
  auto c = view(C, rows, cols);
  at::addmm_out(c, c, view(X, rows, d), view(Y, cols, d).t(), 0, alpha);  // beta 0: C is not read
}

// out (rows × d) += alpha · E Y with E (rows × k), Y (k × d).
template <typename T>
void gemm_acc_ey(int64_t rows, int64_t k, int64_t d, T alpha, const T* E, const T* Y, T* out) {
  const SequentialBlas sequential;
  auto o = view(out, rows, d);
  at::addmm_out(o, o, view(E, rows, k), view(Y, k, d), 1, alpha);
}

// out (rows × d) += alpha · Eᵀ Y with E (k × rows), Y (k × d).
template <typename T>
void gemm_acc_ety(int64_t rows, int64_t k, int64_t d, T alpha, const T* E, const T* Y, T* out) {
  const SequentialBlas sequential;
  auto o = view(out, rows, d);
  at::addmm_out(o, o, view(E, k, rows).t(), view(Y, k, d), 1, alpha);
}

}  // namespace tile_blas
}  // namespace regops
