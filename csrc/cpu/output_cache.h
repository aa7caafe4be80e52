// A small cache of large CPU output buffers.
//
// A fresh multi-megabyte tensor comes from mmap, and its first touch costs a page fault per 4 KiB page
// (measured here: ~45 ms for a 117 MB gradient, more than the kernel that fills it). malloc recycles small
// blocks, so per-layer loops never pay this; a fused op with one large output pays it on every call. Buffers
// handed out here return to the cache when their tensor dies, so the next call of the same size reuses
// pages that are already mapped. The cache holds at most REGOPS_CPU_CACHE_MB (default 2048) of idle
// buffers; regops.empty_cache() releases them.
#pragma once
#include <ATen/ATen.h>

namespace regops {

// Like at::empty_like(like) (strides of a dense `like` are kept), from the cache when large.
at::Tensor cached_empty_like(const at::Tensor& like);

void cpu_cache_clear();
int64_t cpu_cache_idle_bytes();

}  // namespace regops
