// The deploy executors' buffer cache (see buffer_cache.h).
#include "buffer_cache.h"

#include <atomic>
#include <cstdlib>
#include <string>

#include <mutex>
#include <unordered_map>
#include <utility>
#include <vector>

#include <c10/core/Allocator.h>
#include <c10/core/CPUAllocator.h>
#include <c10/util/Exception.h>
#include <c10/core/impl/alloc_cpu.h>

namespace rmnet::detail {
namespace {

thread_local BufferCache* tls_cache = nullptr;

/// Every block a cache allocated, while it exists: its size and its cache. Leaked on purpose: a
/// tensor may free its block during static destruction.
struct Registry {
  std::mutex mutex;
  std::unordered_map<void*, std::pair<std::weak_ptr<BufferCache>, size_t>> blocks;
};
Registry& registry() {
  static auto* r = new Registry;
  return *r;
}

c10::DeleterFnPtr g_base_raw_deleter = nullptr;  // the wrapped allocator's, read once at install

void forget(void* block) {
  auto& r = registry();
  std::lock_guard<std::mutex> lock(r.mutex);
  r.blocks.erase(block);
}

/// LibTorch's CPU allocator, consulting the current thread's cache for large requests. Its blocks'
/// context is the data pointer (raw_allocate works), freed through release(). raw_deleter() is
/// release(), which also frees what the wrapped allocator's raw_allocate gave (ideep allocates
/// that way); a pass-through allocation keeps the wrapped allocator's own deleter, so only code
/// that compares a small tensor's deleter with raw_deleter() could tell (LibTorch's CPU code does
/// not: copy-on-write asks is_simple_data_ptr, which holds for both).
class CachingCpuAllocator final : public c10::Allocator {
 public:
  explicit CachingCpuAllocator(c10::Allocator* base) : base_(base) {}

  c10::DataPtr allocate(size_t n) override {
    if (BufferCache* c = tls_cache; c != nullptr && n >= BufferCache::kMinBytes) {
      void* p = c->take(n);
      return {p, p, &release, c10::Device(c10::DeviceType::CPU)};
    }
    return base_->allocate(n);
  }
  c10::DeleterFnPtr raw_deleter() const override { return g_base_raw_deleter ? &release : nullptr; }
  void copy_data(void* dest, const void* src, size_t count) const override { default_copy_data(dest, src, count); }

  static void release(void* p);
  c10::Allocator* base() const { return base_; }

 private:
  c10::Allocator* base_;
};

CachingCpuAllocator* g_allocator = nullptr;

void CachingCpuAllocator::release(void* p) {
  if (p == nullptr) return;
  std::shared_ptr<BufferCache> owner;
  size_t bytes = 0;
  bool ours = false;
  {
    auto& r = registry();
    std::lock_guard<std::mutex> lock(r.mutex);
    if (auto it = r.blocks.find(p); it != r.blocks.end()) {
      ours = true;
      owner = it->second.first.lock();
      bytes = it->second.second;
      if (!owner) r.blocks.erase(it);
    }
  }
  if (!ours) {
    g_base_raw_deleter(p);  // a raw_allocate'd block of the wrapped allocator
  } else if (owner) {
    owner->give_back(p, bytes);
  } else {
    c10::free_cpu(p);  // its cache is gone
  }
}

/// Installs the wrapper (once). c10::SetCPUAllocator is one pointer store that other threads read
/// without a lock: make the first deployed network before other threads allocate, as LibTorch asks
/// of anything that sets an allocator.
void install() {
  static std::once_flag once;
  std::call_once(once, [] {
    auto* base = c10::GetCPUAllocator();
    g_base_raw_deleter = base->raw_deleter();
    g_allocator = new CachingCpuAllocator(base);
    c10::SetCPUAllocator(g_allocator, /*priority=*/0);
  });
}

}  // namespace

namespace {
std::atomic<int> g_enabled{-1};  // -1: not decided yet (read the environment)
}  // namespace

std::shared_ptr<BufferCache> BufferCache::make(size_t max_cached_bytes) {
  if (!buffer_cache_enabled()) return nullptr;
  install();
  return std::shared_ptr<BufferCache>(new BufferCache(max_cached_bytes));
}

BufferCache::~BufferCache() { clear(); }

bool BufferCache::active() { return tls_cache != nullptr && g_allocator != nullptr && c10::GetCPUAllocator() == g_allocator; }

BufferCacheStats BufferCache::stats() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return {allocations_, reuses_, static_cast<int64_t>(cached_)};
}

void BufferCache::clear() {
  std::multimap<size_t, void*> blocks;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    blocks.swap(free_);
    cached_ = 0;
  }
  for (const auto& [bytes, p] : blocks) {
    forget(p);
    c10::free_cpu(p);
  }
}

void* BufferCache::take(size_t bytes) {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (auto it = free_.lower_bound(bytes); it != free_.end() && it->first <= 2 * bytes) {
      void* p = it->second;
      cached_ -= it->first;
      free_.erase(it);
      ++reuses_;
      return p;
    }
  }
  void* p = nullptr;
  try {
    p = c10::alloc_cpu(bytes);
  } catch (const c10::Error&) {
    clear();  // out of memory: give the cached blocks back and try once more
    p = c10::alloc_cpu(bytes);
  }
  try {
    auto& r = registry();
    std::lock_guard<std::mutex> lock(r.mutex);
    r.blocks[p] = {weak_from_this(), bytes};
  } catch (...) {
    c10::free_cpu(p);
    throw;
  }
  std::lock_guard<std::mutex> lock(mutex_);
  ++allocations_;
  return p;
}

void BufferCache::give_back(void* block, size_t bytes) {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (cached_ + bytes <= max_cached_) {
      free_.emplace(bytes, block);
      cached_ += bytes;
      return;
    }
  }
  forget(block);
  c10::free_cpu(block);
}

BufferCacheScope::BufferCacheScope(BufferCache* cache) : previous_(tls_cache) { tls_cache = cache; }

BufferCacheScope::~BufferCacheScope() { tls_cache = previous_; }

}  // namespace rmnet::detail

namespace rmnet {

void set_buffer_cache_enabled(bool enabled) { detail::g_enabled.store(enabled ? 1 : 0); }

bool buffer_cache_enabled() {
  int v = detail::g_enabled.load();
  if (v < 0) {
    const char* env = std::getenv("RMNET_BUFFER_CACHE");
    const int from_env = env && (std::string(env) == "0" || std::string(env) == "off") ? 0 : 1;
    detail::g_enabled.compare_exchange_strong(v, from_env);
    v = detail::g_enabled.load();
  }
  return v == 1;
}

}  // namespace rmnet
