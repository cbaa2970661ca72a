#pragma once
// Internal: a cache of activation buffers for the deploy executors.
//
// Each forward of a chain allocates its activations afresh, and at 224x224 they are tens of MB: glibc
// serves such sizes with mmap (its threshold tops out at 32 MB) and returns them on free, so every
// forward page-faults its activations in again — measured: the onednn runtime on the RM
// mobilenet_v2, 224x224, batch 8, ran at half speed for it. The operators allocate their own outputs
// (through LibTorch's CPU allocator), so the cache sits at the allocator: while a BufferCache is
// active on a thread (BufferCacheScope), CPU allocations of at least kMinBytes made on that thread
// are served from blocks the cache kept when earlier ones were freed (the smallest cached block of
// at least the size asked for, and at most twice it), or allocated afresh and kept when freed. After
// one forward of a shape, the next ones allocate nothing.
//
// The allocator that consults the cache wraps LibTorch's CPU allocator and is installed once per
// process (c10::SetCPUAllocator) when the first cache is made; outside an active scope it passes
// every allocation straight to the allocator it wraps. A block outlives its cache safely: a tensor
// that leaves the executor (the output) frees its block with the C allocator if its cache is gone.
#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>

#include "rmnet/deploy/runtime.h"  // BufferCacheStats

namespace rmnet::detail {

class BufferCache : public std::enable_shared_from_this<BufferCache> {
 public:
  /// Requests smaller than this go to the wrapped allocator (glibc serves them from its heap).
  static constexpr size_t kMinBytes = size_t{256} << 10;

  /// A cache that keeps at most `max_cached_bytes` in free blocks (a block freed beyond that is
  /// returned to the system).
  static std::shared_ptr<BufferCache> make(size_t max_cached_bytes);
  ~BufferCache();
  BufferCache(const BufferCache&) = delete;
  BufferCache& operator=(const BufferCache&) = delete;

  BufferCacheStats stats() const;
  /// Returns every free block to the system.
  void clear();
  /// Whether allocations on this thread go through a cache now (false where another CPU allocator
  /// with a higher priority was installed before ours).
  static bool active();

  // used by the allocator (buffer_cache.cpp)
  void* take(size_t bytes);
  void give_back(void* block, size_t bytes);

 private:
  explicit BufferCache(size_t max_cached_bytes) : max_cached_(max_cached_bytes) {}
  mutable std::mutex mutex_;
  std::multimap<size_t, void*> free_;  // block size -> block
  size_t max_cached_ = 0, cached_ = 0;
  int64_t allocations_ = 0, reuses_ = 0;
};

/// Makes `cache` the current thread's buffer cache until destroyed (the previous one is restored);
/// a null cache leaves allocations alone.
class BufferCacheScope {
 public:
  explicit BufferCacheScope(BufferCache* cache);
  ~BufferCacheScope();
  BufferCacheScope(const BufferCacheScope&) = delete;
  BufferCacheScope& operator=(const BufferCacheScope&) = delete;

 private:
  BufferCache* previous_ = nullptr;
};

}  // namespace rmnet::detail
