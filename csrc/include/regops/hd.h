// REGOPS_HD marks the per-element math that both the C++ and the CUDA kernels compile. CUDA headers only.
#pragma once

#if defined(__CUDACC__) || defined(__HIPCC__)
#define REGOPS_HD __host__ __device__ __forceinline__
#else
#define REGOPS_HD inline
#endif

// Host loops that must inline into their SIMD callers (the CPU kernels).
#if defined(__GNUC__) || defined(__clang__)
#define REGOPS_ALWAYS_INLINE inline __attribute__((always_inline))
#else
#define REGOPS_ALWAYS_INLINE inline
#endif
