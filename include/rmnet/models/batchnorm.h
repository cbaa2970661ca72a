#pragma once
// The BatchNorm2d every model of the library uses: torch::nn::BatchNorm2d (same options,
// parameters, buffers and state-dict keys; dynamic casts to torch::nn::BatchNorm2dImpl still
// find it) that can also normalise with statistics synchronised over data-parallel ranks
// (synchronised BN, PyTorch's SyncBatchNorm). The synchronisation is a plain sum all-reduce given
// as a function, so the models do not depend on the process group (train/distributed.h sets it).
#include <functional>
#include <memory>

#include <torch/nn/modules/batchnorm.h>

namespace rmnet {

/// Sums a tensor in place over every rank of a data-parallel group (a collective: every rank
/// calls it, in the same order).
using AllReduceSum = std::function<void(torch::Tensor&)>;

class BatchNorm2dImpl : public torch::nn::BatchNorm2dImpl {
 public:
  using torch::nn::BatchNorm2dImpl::BatchNorm2dImpl;

  /// torch::nn::BatchNorm2d's forward; in training mode with a sync function set, the batch
  /// statistics are those of the global batch (all ranks' samples): one all-reduce of the
  /// per-channel sums in forward, one of their gradients in backward. The running statistics
  /// are updated from the global batch, so they stay identical on every rank.
  torch::Tensor forward(const torch::Tensor& input);

  /// Synchronise over the group `sum` all-reduces in (nullptr: local statistics, the default).
  void set_sync(std::shared_ptr<const AllReduceSum> sum) { sync_ = std::move(sum); }
  bool synchronised() const { return sync_ != nullptr; }

 private:
  std::shared_ptr<const AllReduceSum> sync_;
};
TORCH_MODULE(BatchNorm2d);

/// The normalisation of synchronised BN, exposed for tests: `sum` is applied to the per-channel
/// [sum of (x - shift), sum of (x - shift)^2, count] (shift: the running mean, for precision) and
/// to their gradients in backward. With a `sum` that does nothing it equals F::batch_norm in
/// training mode; running statistics are updated in place when defined.
torch::Tensor sync_batch_norm(const torch::Tensor& input, const torch::Tensor& weight, const torch::Tensor& bias,
                              torch::Tensor running_mean, torch::Tensor running_var,
                              torch::Tensor num_batches_tracked, std::optional<double> momentum, double eps,
                              const AllReduceSum& sum);

/// Sets (or with nullptr clears) the sync function on every rmnet::BatchNorm2d below `module`;
/// returns how many there are. Throws when `module` has a torch::nn::BatchNorm2d of another
/// type (one that cannot synchronise), naming it.
size_t set_batchnorm_sync(torch::nn::Module& module, std::shared_ptr<const AllReduceSum> sum);

}  // namespace rmnet
