#include "output_cache.h"

#include <c10/util/strides.h>

#include <pthread.h>

#include <cstdlib>
#include <map>
#include <mutex>

namespace regops {
namespace {

constexpr size_t kMinBytes = size_t{1} << 20;  // below this malloc's own recycling does the job
constexpr size_t kAlign = 64;

struct Cache {
  std::mutex mu;
  std::multimap<size_t, void*> idle;  // bytes -> buffer
  size_t idle_bytes = 0;
  size_t limit;
  Cache() {
    const char* env = std::getenv("REGOPS_CPU_CACHE_MB");
    limit = (env ? static_cast<size_t>(std::atoll(env)) : size_t{2048}) << 20;
  }
};

Cache& cache();

// fork() (DataLoader workers) copies only the forking thread: a lock another thread held at that moment would
// stay locked in the child forever. Holding it across the fork makes the child's copy consistent and unlocked.
void lock_before_fork() { cache().mu.lock(); }
void unlock_after_fork() { cache().mu.unlock(); }

Cache& cache() {
  static Cache* c = [] {
    Cache* fresh = new Cache();  // never destroyed: tensors may die after static destructors run
    pthread_atfork(lock_before_fork, unlock_after_fork, unlock_after_fork);
    return fresh;
  }();
  return *c;
}

void* take(size_t bytes) {
  auto& c = cache();
  {
    std::lock_guard<std::mutex> lock(c.mu);
    auto it = c.idle.find(bytes);
    if (it != c.idle.end()) {
      void* p = it->second;
      c.idle.erase(it);
      c.idle_bytes -= bytes;
      return p;
    }
  }
  void* p = nullptr;
  TORCH_CHECK(posix_memalign(&p, kAlign, bytes) == 0 && p != nullptr, "regops: out of memory allocating ", bytes,
              " bytes");
  return p;
}

void give_back(void* p, size_t bytes) {
  auto& c = cache();
  {
    std::lock_guard<std::mutex> lock(c.mu);
    if (c.idle_bytes + bytes <= c.limit) {
      c.idle.emplace(bytes, p);
      c.idle_bytes += bytes;
      return;
    }
  }
  std::free(p);
}

}  // namespace

at::Tensor cached_empty_like(const at::Tensor& like) {
  const bool dense = like.is_non_overlapping_and_dense();
  const size_t bytes = static_cast<size_t>(like.numel()) * like.element_size();
  if (!like.device().is_cpu() || bytes < kMinBytes) return at::empty_like(like);
  const c10::DimVector strides = dense ? c10::DimVector(like.strides()) : c10::contiguous_strides(like.sizes());
  void* p = take(bytes);
  return at::from_blob(
      p, like.sizes(), strides, [bytes](void* q) { give_back(q, bytes); },
      like.options());
}

void cpu_cache_clear() {
  auto& c = cache();
  std::lock_guard<std::mutex> lock(c.mu);
  for (auto& kv : c.idle) std::free(kv.second);
  c.idle.clear();
  c.idle_bytes = 0;
}

int64_t cpu_cache_idle_bytes() {
  auto& c = cache();
  std::lock_guard<std::mutex> lock(c.mu);
  return static_cast<int64_t>(c.idle_bytes);
}

}  // namespace regops

