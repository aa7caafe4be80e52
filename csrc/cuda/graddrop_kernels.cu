// CUDA kernels of R-AMT's gradient dropout. The per-element rule (keep probability, Philox4x32-10 uniforms, the
// drop) is regops/graddrop_math.h, shared with the CPU kernel, so both give the same bits. CUDA headers only (no
// ATen), so this file compiles in seconds; the torch glue is graddrop.cpp.
//
// apply_kernel: one launch for a whole list of tensors. Every tensor is cut into chunks of kElemsPerChunk (4096)
// elements; the chunks of all tensors are numbered one after the other, and the glue hands over a chunk → tensor
// table (int32 per chunk) with the per-tensor metadata (pointers, numel, dtype, first chunk). A block takes chunk
// c (grid-stride over the chunks), so a block's work is always inside one tensor: its dtype branch is uniform and
// the element offsets are local to the tensor, which keeps the Philox groups (4 consecutive elements, e >> 2)
// aligned. Thread i of the block owns groups i, i + 256, i + 512, i + 768 of the chunk: it first loads all of its
// a and b (16-byte float / 8-byte half vector loads when the tensor's pointers allow; element loads for a last
// partial group), then computes one Philox block per group and stores. Loading everything first keeps four
// independent loads in flight even though out may alias a (the compiler could not hoist them over the stores).
//
// Non-finite counts: each thread counts its elements, a warp sums its threads with xor shuffles, and lane 0 adds
// a non-zero sum to counts[t] with a 64-bit atomicAdd. Integer sums are exact, so the result does not depend on
// the order of the atomics; the output itself is a pure function of (seed, t, e, a, b).
//
// Floating point: every operation of the header is a single IEEE round-to-nearest op (nvcc's default
// -prec-div=true division; there is no a·b + c pattern that -fmad could contract; the file must not be built with
// -use_fast_math, which would also flush denormals). float → bfloat16/half rounding is __float2bfloat16_rn /
// __float2half_rn, as torch's CUDA .to() does.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <climits>
#include <cstdint>

#include "graddrop_kernels.h"
#include "regops/graddrop_math.h"

#ifdef __FAST_MATH__
#error "graddrop_kernels.cu must not be built with -use_fast_math: the kernels must match the CPU bit for bit"
#endif

namespace regops {
namespace graddrop_cuda {
namespace {

namespace gm = regops::graddrop;

constexpr int kThreads = kApplyThreads;
constexpr int kGroups = kGroupsPerThread;
static_assert(kElemsPerChunk == 4LL * kThreads * kGroups, "a chunk is the groups of one block");

// ---- element access: element e of a contiguous array of dtype D, as float32 ----

template <Dtype D>
__device__ __forceinline__ float to_float(uint16_t bits);
template <>
__device__ __forceinline__ float to_float<Dtype::kBFloat16>(uint16_t bits) {
  return __uint_as_float(static_cast<uint32_t>(bits) << 16);  // exact
}
template <>
__device__ __forceinline__ float to_float<Dtype::kFloat16>(uint16_t bits) {
  return __half2float(__ushort_as_half(bits));  // exact
}

template <Dtype D>
__device__ __forceinline__ uint16_t from_float(float v);
template <>
__device__ __forceinline__ uint16_t from_float<Dtype::kBFloat16>(float v) {
  return __bfloat16_as_ushort(__float2bfloat16_rn(v));
}
template <>
__device__ __forceinline__ uint16_t from_float<Dtype::kFloat16>(float v) {
  return __half_as_ushort(__float2half_rn(v));
}

// Global loads and stores with the streaming hint (.cs: every element is touched once); explicit global-space
// vector instructions, so the compiler neither falls back to generic addressing nor splits the vectors.
template <Dtype D>
__device__ __forceinline__ float load1(const void* p, int64_t e) {
  if constexpr (D == Dtype::kFloat32) {
    return __ldcs(static_cast<const float*>(p) + e);
  } else {
    return to_float<D>(__ldcs(static_cast<const unsigned short*>(p) + e));
  }
}

template <Dtype D>
__device__ __forceinline__ void store1(void* p, int64_t e, float v) {
  if constexpr (D == Dtype::kFloat32) {
    __stcs(static_cast<float*>(p) + e, v);
  } else {
    __stcs(static_cast<unsigned short*>(p) + e, from_float<D>(v));
  }
}

// Elements e .. e + 3 (e a multiple of 4, the pointer aligned to 4 elements) in one vector access.
template <Dtype D>
__device__ __forceinline__ void load4(const void* p, int64_t e, float v[4]) {
  if constexpr (D == Dtype::kFloat32) {
    const float4 x = __ldcs(reinterpret_cast<const float4*>(static_cast<const float*>(p) + e));
    v[0] = x.x;
    v[1] = x.y;
    v[2] = x.z;
    v[3] = x.w;
  } else {
    const uint2 x = __ldcs(reinterpret_cast<const uint2*>(static_cast<const uint16_t*>(p) + e));
    v[0] = to_float<D>(static_cast<uint16_t>(x.x & 0xFFFFu));  // little-endian: the lower half is first
    v[1] = to_float<D>(static_cast<uint16_t>(x.x >> 16));
    v[2] = to_float<D>(static_cast<uint16_t>(x.y & 0xFFFFu));
    v[3] = to_float<D>(static_cast<uint16_t>(x.y >> 16));
  }
}

template <Dtype D>
__device__ __forceinline__ void store4(void* p, int64_t e, const float v[4]) {
  if constexpr (D == Dtype::kFloat32) {
    __stcs(reinterpret_cast<float4*>(static_cast<float*>(p) + e), make_float4(v[0], v[1], v[2], v[3]));
  } else {
    uint2 x;
    x.x = static_cast<uint32_t>(from_float<D>(v[0])) | (static_cast<uint32_t>(from_float<D>(v[1])) << 16);
    x.y = static_cast<uint32_t>(from_float<D>(v[2])) | (static_cast<uint32_t>(from_float<D>(v[3])) << 16);
    __stcs(reinterpret_cast<uint2*>(static_cast<uint16_t*>(p) + e), x);
  }
}

__device__ __forceinline__ int non_finite(float a, float b) { return !(isfinite(a) && isfinite(b)); }

// Chunk `local` of tensor t (metadata m): this thread's groups. Returns its count of non-finite a or b.
template <Dtype D>
__device__ __forceinline__ int run_chunk(const TensorMeta& m, uint32_t t, int64_t local, float drop, uint64_t seed) {
  const int64_t n = m.numel;
  const int64_t g0 = local * (kThreads * kGroups) + threadIdx.x;
  float a[kGroups][4], b[kGroups][4];
  // Loads first (all of them in flight at once); elements past n read as 0 and are never stored.
#pragma unroll
  for (int j = 0; j < kGroups; ++j) {
    const int64_t e0 = (g0 + j * kThreads) * 4;
    if (m.vec && e0 + 4 <= n) {
      load4<D>(m.a, e0, a[j]);
      load4<D>(m.b, e0, b[j]);
    } else {
#pragma unroll
      for (int w = 0; w < 4; ++w) {
        const bool in = e0 + w < n;
        a[j][w] = in ? load1<D>(m.a, e0 + w) : 0.0f;
        b[j][w] = in ? load1<D>(m.b, e0 + w) : 0.0f;
      }
    }
  }
  int bad = 0;
#pragma unroll
  for (int j = 0; j < kGroups; ++j) {
    const int64_t g = g0 + j * kThreads;
    const int64_t e0 = g * 4;
    if (e0 >= n) continue;
    float u[4], r[4];
    gm::philox_block(seed, t, static_cast<uint64_t>(g), u);
#pragma unroll
    for (int w = 0; w < 4; ++w) {
      bad += non_finite(a[j][w], b[j][w]);  // the zero padding is finite
      r[w] = gm::apply(a[j][w], b[j][w], u[w], drop);
    }
    if (m.vec && e0 + 4 <= n) {
      store4<D>(m.out, e0, r);
    } else {
#pragma unroll
      for (int w = 0; w < 4; ++w)
        if (e0 + w < n) store1<D>(m.out, e0 + w, r[w]);
    }
  }
  return bad;
}

__global__ void __launch_bounds__(kThreads)
    apply_kernel(const TensorMeta* __restrict__ meta, const int32_t* __restrict__ chunk_tensor, int64_t num_chunks,
                 unsigned long long* counts, float drop, uint64_t seed) {
  for (int64_t c = blockIdx.x; c < num_chunks; c += gridDim.x) {
    const int32_t t = chunk_tensor[c];  // uniform over the block
    const TensorMeta m = meta[t];
    const int64_t local = c - m.chunk_begin;
    int bad;
    if (m.dtype == static_cast<int32_t>(Dtype::kFloat32)) {
      bad = run_chunk<Dtype::kFloat32>(m, static_cast<uint32_t>(t), local, drop, seed);
    } else if (m.dtype == static_cast<int32_t>(Dtype::kBFloat16)) {
      bad = run_chunk<Dtype::kBFloat16>(m, static_cast<uint32_t>(t), local, drop, seed);
    } else {
      bad = run_chunk<Dtype::kFloat16>(m, static_cast<uint32_t>(t), local, drop, seed);
    }
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) bad += __shfl_xor_sync(0xFFFFFFFFu, bad, o);
    if ((threadIdx.x & 31) == 0 && bad != 0) atomicAdd(counts + t, static_cast<unsigned long long>(bad));
  }
}

template <Dtype D>
__global__ void __launch_bounds__(256) keep_prob_kernel(const void* a, const void* b, void* out, int64_t n) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t e = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; e < n; e += stride)
    store1<D>(out, e, gm::keep_prob(load1<D>(a, e), load1<D>(b, e)));
}

}  // namespace

cudaError_t apply(const TensorMeta* meta, const int32_t* chunk_tensor, int64_t num_chunks, int64_t* counts,
                  float drop_scale, uint64_t seed, cudaStream_t stream) {
  if (num_chunks <= 0) return cudaSuccess;
  const int64_t blocks = num_chunks < static_cast<int64_t>(INT_MAX) ? num_chunks : static_cast<int64_t>(INT_MAX);
  apply_kernel<<<static_cast<unsigned>(blocks), kThreads, 0, stream>>>(
      meta, chunk_tensor, num_chunks, reinterpret_cast<unsigned long long*>(counts), drop_scale, seed);
  return cudaGetLastError();
}

cudaError_t keep_prob(Dtype dtype, const void* a, const void* b, void* out, int64_t n, cudaStream_t stream) {
  if (n <= 0) return cudaSuccess;
  constexpr int kT = 256;
  int64_t blocks = (n + kT - 1) / kT;
  if (blocks > (1 << 16)) blocks = 1 << 16;
  const unsigned grid = static_cast<unsigned>(blocks);
  switch (dtype) {
    case Dtype::kFloat32:
      keep_prob_kernel<Dtype::kFloat32><<<grid, kT, 0, stream>>>(a, b, out, n);
      break;
    case Dtype::kBFloat16:
      keep_prob_kernel<Dtype::kBFloat16><<<grid, kT, 0, stream>>>(a, b, out, n);
      break;
    case Dtype::kFloat16:
      keep_prob_kernel<Dtype::kFloat16><<<grid, kT, 0, stream>>>(a, b, out, n);
      break;
  }
  return cudaGetLastError();
}

}  // namespace graddrop_cuda
}  // namespace regops
