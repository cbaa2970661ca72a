#include "rmnet/data/loader.h"

#include <algorithm>
#include <condition_variable>
#include <exception>
#include <map>
#include <mutex>
#include <numeric>
#include <thread>

#include <torch/torch.h>

namespace rmnet {
namespace {

uint64_t splitmix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

}  // namespace

struct DataLoader::State {
  std::vector<int64_t> order;  // sample indices of this epoch, in batch order
  std::vector<size_t> position;  // their positions in the epoch's global permutation
  size_t num_batches = 0;
  uint64_t epoch_seed = 0;
  size_t next_to_make = 0, next_to_take = 0;
  std::map<size_t, Batch> ready;
  std::exception_ptr error;
  bool stop = false;
  std::mutex mu;
  std::condition_variable cv;
  std::vector<std::thread> workers;
};

DataLoader::DataLoader(DatasetPtr dataset, Transform transform, LoaderOptions options)
    : dataset_(std::move(dataset)), transform_(std::move(transform)), options_(options) {
  TORCH_CHECK(dataset_, "DataLoader needs a data set");
  TORCH_CHECK(options_.batch_size() >= 1, "batch size must be at least 1 (got ", options_.batch_size(), ")");
  TORCH_CHECK(options_.workers() >= 0 && options_.prefetch() >= 1, "bad loader workers/prefetch");
  TORCH_CHECK(options_.num_shards() >= 1 && options_.shard() >= 0 && options_.shard() < options_.num_shards(),
              "shard ", options_.shard(), " of ", options_.num_shards(), " is out of range");
}

DataLoader::~DataLoader() {
  if (!state_) return;
  {
    std::lock_guard<std::mutex> lock(state_->mu);
    state_->stop = true;
  }
  state_->cv.notify_all();
  for (auto& t : state_->workers) t.join();
}

size_t DataLoader::samples_per_epoch() const {
  const size_t n = dataset_->size(), k = static_cast<size_t>(options_.num_shards());
  // Every shard gets floor(n / k) samples (the permutation's last n % k are left out this
  // epoch), so data-parallel ranks run the same number of batches.
  return k == 1 ? n : n / k;
}

size_t DataLoader::batches_per_epoch() const {
  const size_t n = samples_per_epoch(), b = static_cast<size_t>(options_.batch_size());
  return options_.drop_last() ? n / b : (n + b - 1) / b;
}

void DataLoader::start_epoch(int64_t epoch) {
  if (state_) {  // stop the previous epoch's workers
    {
      std::lock_guard<std::mutex> lock(state_->mu);
      state_->stop = true;
    }
    state_->cv.notify_all();
    for (auto& t : state_->workers) t.join();
  }
  state_ = std::make_unique<State>();
  auto& st = *state_;
  st.epoch_seed = splitmix64(options_.seed() ^ splitmix64(static_cast<uint64_t>(epoch) + 1));
  std::vector<int64_t> perm(dataset_->size());
  std::iota(perm.begin(), perm.end(), 0);
  if (options_.shuffle()) {
    Rng rng(st.epoch_seed);
    std::shuffle(perm.begin(), perm.end(), rng);
  }
  // Shard = strided slice of the global permutation: batch b of shard r holds positions
  // (b * batch + j) * k + r, so the shards' batch b together are batch b of one process with
  // k times the batch size (data-parallel training sees the data a single process would).
  const size_t k = static_cast<size_t>(options_.num_shards()), r = static_cast<size_t>(options_.shard());
  const size_t per_shard = samples_per_epoch();
  for (size_t j = 0; j < per_shard; ++j) {
    st.order.push_back(perm[j * k + r]);
    st.position.push_back(j * k + r);
  }
  st.num_batches = batches_per_epoch();

  auto make_batch = [this](State& s, size_t b) {
    const size_t bs = static_cast<size_t>(options_.batch_size());
    const size_t begin = b * bs, end = std::min(begin + bs, s.order.size());
    std::vector<torch::Tensor> images;
    auto labels = torch::empty({static_cast<int64_t>(end - begin)}, torch::kLong);
    auto* lp = labels.data_ptr<int64_t>();
    for (size_t i = begin; i < end; ++i) {
      auto sample = dataset_->get(static_cast<size_t>(s.order[i]));
      // per-position seed (position in the global permutation): same batches for any worker count,
      // and the same augmentation of a sample whatever the number of shards
      Rng rng(splitmix64(s.epoch_seed ^ splitmix64(s.position[i])));
      images.push_back(transform_(sample.image, rng));
      lp[i - begin] = sample.label;
    }
    return Batch{torch::stack(images), labels};
  };

  const int64_t workers = options_.workers();
  for (int64_t w = 0; w < workers; ++w) {
    st.workers.emplace_back([this, &st, make_batch] {
      torch::NoGradGuard no_grad;
      while (true) {
        size_t b;
        {
          std::unique_lock<std::mutex> lock(st.mu);
          st.cv.wait(lock, [&] {
            return st.stop || st.next_to_make >= st.num_batches ||
                   st.next_to_make < st.next_to_take + static_cast<size_t>(options_.prefetch());
          });
          if (st.stop || st.next_to_make >= st.num_batches) return;
          b = st.next_to_make++;
        }
        try {
          auto batch = make_batch(st, b);
          std::lock_guard<std::mutex> lock(st.mu);
          st.ready.emplace(b, std::move(batch));
        } catch (...) {
          std::lock_guard<std::mutex> lock(st.mu);
          if (!st.error) st.error = std::current_exception();
        }
        st.cv.notify_all();
      }
    });
  }
  if (workers == 0) st.next_to_make = 0;
  // keep make_batch for the synchronous path
  sync_make_ = make_batch;
}

std::optional<Batch> DataLoader::next() {
  TORCH_CHECK(state_, "DataLoader::next() before start_epoch()");
  auto& st = *state_;
  if (st.next_to_take >= st.num_batches) return std::nullopt;
  if (options_.workers() == 0) return sync_make_(st, st.next_to_take++);
  std::unique_lock<std::mutex> lock(st.mu);
  st.cv.wait(lock, [&] { return st.error || st.ready.count(st.next_to_take) > 0; });
  if (st.error) std::rethrow_exception(st.error);
  auto node = st.ready.extract(st.next_to_take);
  ++st.next_to_take;
  lock.unlock();
  st.cv.notify_all();
  return std::move(node.mapped());
}

}  // namespace rmnet
