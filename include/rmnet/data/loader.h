#pragma once
// A batch loader with worker threads and prefetching. Each epoch is a seeded permutation
// (shuffle) of the data set, cut into batches; workers transform samples in parallel while the
// trainer consumes earlier batches. Batches come out in order and are identical for a given
// (seed, epoch) whatever the number of workers.
#include <functional>
#include <memory>
#include <optional>

#include <torch/arg.h>
#include <torch/types.h>

#include "rmnet/data/dataset.h"
#include "rmnet/data/transforms.h"

namespace rmnet {

struct LoaderOptions {
  TORCH_ARG(int64_t, batch_size) = 128;
  TORCH_ARG(bool, shuffle) = true;
  TORCH_ARG(bool, drop_last) = false;
  /// Worker threads preparing batches (0: prepare on the calling thread).
  TORCH_ARG(int64_t, workers) = 2;
  /// Batches prepared ahead of the consumer.
  TORCH_ARG(int64_t, prefetch) = 4;
  TORCH_ARG(uint64_t, seed) = 0;
  /// Use only this shard of the data: positions i of the epoch's permutation with
  /// i % num_shards == shard. Every shard has floor(n / num_shards) samples, and the shards'
  /// batch b together equal batch b of one loader with num_shards times the batch size.
  TORCH_ARG(int64_t, shard) = 0;
  TORCH_ARG(int64_t, num_shards) = 1;
};

struct Batch {
  torch::Tensor images;  ///< float [B, C, H, W]
  torch::Tensor labels;  ///< int64 [B]
};

class DataLoader {
 public:
  DataLoader(DatasetPtr dataset, Transform transform, LoaderOptions options);
  ~DataLoader();
  DataLoader(const DataLoader&) = delete;
  DataLoader& operator=(const DataLoader&) = delete;

  /// Starts epoch `epoch` (its permutation is seeded by seed and epoch); stops any epoch in flight.
  void start_epoch(int64_t epoch);
  /// The next batch of the current epoch, or nullopt at its end.
  std::optional<Batch> next();
  size_t batches_per_epoch() const;
  size_t samples_per_epoch() const;
  const Dataset& dataset() const { return *dataset_; }
  const LoaderOptions& options() const { return options_; }

 private:
  struct State;
  DatasetPtr dataset_;
  std::function<Batch(State&, size_t)> sync_make_;
  Transform transform_;
  LoaderOptions options_;
  std::unique_ptr<State> state_;
};

}  // namespace rmnet
