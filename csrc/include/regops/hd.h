// REGOPS_HD marks the per-element math that both the C++ and the CUDA kernels compile. CUDA headers only.
#pragma once

#if defined(__CUDACC__) || defined(__HIPCC__)
#define REGOPS_HD __host__ __device__ __forceinline__
#else
#define REGOPS_HD inline
#endif
