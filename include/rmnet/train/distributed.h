#pragma once
// Data-parallel training on PyTorch's c10d: rendezvous through a TCPStore from the torchrun
// environment (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT), a Gloo (CPU) or NCCL
// (CUDA) process group, gradients averaged in buckets after backward, parameters and buffers
// broadcast from rank 0. The c10d types stay inside src/train/distributed.cpp.
#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <torch/arg.h>
#include <torch/types.h>

namespace torch::nn {
class Module;
}

namespace rmnet {

/// Where this process stands in the job, as torchrun (or SLURM, or a user) describes it.
struct DistEnv {
  int rank = 0;
  int world_size = 1;
  int local_rank = 0;
  std::string master_addr = "127.0.0.1";
  int master_port = 29500;
  /// Reads RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT (falling back to SLURM_PROCID,
  /// SLURM_NTASKS, SLURM_LOCALID when RANK/WORLD_SIZE are unset). Returns nullopt when the world
  /// size is unset or 1 (a single process). Throws, naming the variable, on a malformed or
  /// inconsistent value or a missing MASTER_ADDR/MASTER_PORT.
  static std::optional<DistEnv> from_environment();
};

struct DistOptions {
  /// "auto" (NCCL for CUDA devices, Gloo otherwise), "gloo" or "nccl".
  TORCH_ARG(std::string, backend) = "auto";
  /// Bound on rendezvous and on every collective: a dead rank or an incomplete rendezvous ends
  /// the job with an error after at most this long.
  TORCH_ARG(std::chrono::milliseconds, timeout) = std::chrono::seconds(300);
  /// Gradients are all-reduced in buckets of about this many bytes (25 MiB as in PyTorch's DDP).
  TORCH_ARG(int64_t, bucket_bytes) = 25 << 20;
};

/// Thrown when a collective or the rendezvous fails (a rank died, the network broke, the timeout
/// passed); what() says which rank, which operation and what to check.
class DistributedError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

/// A process group for data-parallel training. Every collective must be called by all ranks in
/// the same order.
class Distributed {
 public:
  /// Rendezvous (rank 0 hosts the TCPStore at master_addr:master_port) and creates the process
  /// group for `device` ("auto" picks NCCL on CUDA). Throws DistributedError within about
  /// options.timeout() when the other ranks do not show up.
  Distributed(const DistEnv& env, const DistOptions& options, torch::Device device);
  ~Distributed();
  Distributed(const Distributed&) = delete;
  Distributed& operator=(const Distributed&) = delete;

  int rank() const { return env_.rank; }
  int world_size() const { return env_.world_size; }
  int local_rank() const { return env_.local_rank; }
  bool is_main() const { return env_.rank == 0; }
  /// "gloo" or "nccl".
  const std::string& backend() const { return backend_; }
  torch::Device device() const { return device_; }

  /// Copies every parameter and buffer of `module` from rank 0 to all ranks.
  void broadcast_module(torch::nn::Module& module);
  /// Averages the gradients of `params` over ranks (sum / world size), in buckets of
  /// bucket_bytes per dtype, every bucket in flight at once. Parameters without a gradient get a
  /// zero one on every rank so the buckets line up.
  void average_gradients(const std::vector<torch::Tensor>& params);
  /// Averages floating buffers (BN running statistics) over ranks; integer buffers
  /// (num_batches_tracked) are taken from rank 0.
  void average_buffers(torch::nn::Module& module);
  /// Sums `values` (modified in place) over ranks; `what` names the operation in errors.
  void sum(torch::Tensor& values, const char* what = "all-reduce of the statistics");
  /// Waits until every rank got here (bounded by the timeout).
  void barrier();
  /// Wall-clock seconds spent so far in average_gradients (flatten, all-reduce, wait, copy back):
  /// the most that overlapping the all-reduce with backward could save.
  double gradient_seconds() const { return gradient_seconds_; }

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
  DistEnv env_;
  DistOptions options_;
  std::string backend_;
  torch::Device device_;
  double gradient_seconds_ = 0.0;
};

/// Synchronised BatchNorm: every rmnet::BatchNorm2d below `model` normalises, in training mode,
/// with the statistics of the global batch (all ranks) through `group` (nullptr: back to local
/// statistics). With it, k ranks x b images train exactly like one process x kb images, BN
/// included. Returns the number of BN layers; throws naming a torch::nn::BatchNorm2d of another
/// type. The layers keep `group` alive.
size_t sync_batchnorm(torch::nn::Module& model, const std::shared_ptr<Distributed>& group);

/// Whether this build can create NCCL process groups (compiled against a CUDA LibTorch).
bool nccl_compiled();

}  // namespace rmnet
