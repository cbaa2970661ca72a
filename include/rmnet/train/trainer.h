#pragma once
// Training and evaluation as free functions (pytorch/examples style): the CLI is a thin layer.
#include <functional>
#include <memory>
#include <string>

#include <torch/arg.h>
#include <torch/optim/sgd.h>

#include "rmnet/data/loader.h"
#include "rmnet/models/model.h"
#include "rmnet/train/amp.h"
#include "rmnet/train/distributed.h"
#include "rmnet/train/schedule.h"

namespace rmnet {

struct TrainOptions {
  TORCH_ARG(double, momentum) = 0.9;
  TORCH_ARG(bool, nesterov) = false;
  TORCH_ARG(double, weight_decay) = 5e-4;
  /// No weight decay on BatchNorm parameters and biases (the authors' ImageNet recipe).
  TORCH_ARG(bool, no_decay_bn_bias) = false;
  TORCH_ARG(double, label_smoothing) = 0.0;
  /// Network slimming: lambda of an L1 penalty on BatchNorm scales (and residual-block shortcut
  /// scales), applied as the subgradient lambda * sign(gamma) after backward (0: off).
  TORCH_ARG(double, sparsity) = 0.0;
  TORCH_ARG(ScheduleOptions, schedule) = ScheduleOptions();
  TORCH_ARG(torch::Device, device) = torch::Device(torch::kCPU);
  /// Data-parallel group (nullptr: one process). After each backward the gradients are averaged
  /// over its ranks, and the reported loss/accuracy are those of the global batch.
  TORCH_ARG(std::shared_ptr<Distributed>, distributed) = nullptr;
  /// Autocast dtype for forward and loss: kFloat (off), kBFloat16 (CPU or CUDA), kHalf (CUDA).
  TORCH_ARG(torch::ScalarType, amp_dtype) = torch::kFloat;
  /// Dynamic loss scaling for kHalf, kept across epochs (one per epoch is made when null).
  TORCH_ARG(std::shared_ptr<LossScaler>, loss_scaler) = nullptr;
  /// Feed images in channels_last layout (convert the model with to_channels_last too).
  TORCH_ARG(bool, channels_last) = false;
  /// Knowledge distillation (Hinton et al. 2015): a teacher network (any model: residual, plain,
  /// deployed on any runtime) run in eval mode without gradients on every training batch; the loss
  /// becomes (1 - distill_weight) * cross-entropy + distill_weight * T^2 * KL(softmax(teacher / T) ||
  /// softmax(student / T)). Null: plain cross-entropy. Its outputs must have the student's classes.
  TORCH_ARG(std::shared_ptr<ModelImpl>, teacher) = nullptr;
  /// Weight of the distillation term, in [0, 1].
  TORCH_ARG(double, distill_weight) = 0.5;
  /// Temperature T of the softened distributions (> 0).
  TORCH_ARG(double, distill_temperature) = 4.0;
  /// A plain network's Dirac channels do not train: rows whose only non-zero weight is at the centre
  /// tap (an RM block's reserved copies) with their bias and the BN channels after them (which also
  /// normalise with their running statistics in training mode), and dense convs' columns whose
  /// weights are at the centre tap only (a merge's shortcut or projection). So a converted or pruned
  /// network keeps its shortcuts through fine-tuning (the onednn runtime runs them as shortcuts) and
  /// trains as the residual network it still is. Ignored for other models.
  TORCH_ARG(bool, keep_dirac) = false;
};

/// The training loss: cross-entropy (with label smoothing), or with a teacher's logits the
/// distillation loss of TrainOptions (see `teacher`).
torch::Tensor training_loss(const torch::Tensor& logits, const torch::Tensor& labels, const torch::Tensor& teacher_logits,
                            const TrainOptions& options);

/// SGD with momentum (optionally Nesterov); with no_decay_bn_bias, BN parameters and biases
/// (every parameter with fewer than 2 dimensions) go to a group without weight decay.
std::unique_ptr<torch::optim::SGD> make_sgd(ModelImpl& model, const TrainOptions& options);

/// Adds lambda * sign(w) to the gradient of every BatchNorm weight of `model` and of every
/// parameter named "shortcut_scale" (network slimming's L1 subgradient). Parameters without a
/// gradient are skipped. Called by train_epoch when TrainOptions::sparsity > 0.
void add_sparsity_subgradient(torch::nn::Module& model, double lambda);

struct EpochStats {
  double loss = 0.0;
  double top1 = 0.0;  ///< fraction in [0, 1]
  double top5 = 0.0;
  int64_t samples = 0;
  double seconds = 0.0;
  double images_per_second() const { return seconds > 0 ? samples / seconds : 0.0; }
};

/// Progress of one step: (batch index, batches in the epoch, running stats, current lr).
using ProgressFn = std::function<void(size_t, size_t, const EpochStats&, double)>;

/// Thrown when the loss becomes NaN or Inf; what() names epoch and step.
class NonFiniteLoss : public std::runtime_error {
 public:
  NonFiniteLoss(int64_t epoch, int64_t step, double loss);
  int64_t epoch, step;
};

/// Position of training, advanced by train_epoch.
struct TrainState {
  int64_t epoch = 0;        ///< current (0-based) epoch
  int64_t global_step = 0;  ///< iterations done since the start
  int64_t batch_in_epoch = 0;  ///< batches of `epoch` already done (non-zero after an interrupt)
};

/// One epoch (or its remainder from state.batch_in_epoch): sets the lr per iteration, steps
/// the optimizer, advances `state`. Stops early (returning the partial stats) when `stop()` says
/// so, leaving state.batch_in_epoch at the next batch. Throws NonFiniteLoss.
EpochStats train_epoch(ModelImpl& model, DataLoader& loader, torch::optim::SGD& optimizer,
                       const TrainOptions& options, TrainState& state, const ProgressFn& progress = nullptr,
                       const std::function<bool()>& stop = nullptr);

/// Top-1/top-5 and mean loss of `model` on every batch of `loader`, in eval mode under
/// NoGradGuard (training flags restored afterwards).
EpochStats evaluate(ModelImpl& model, DataLoader& loader, torch::Device device = torch::kCPU);

/// Statistics of all ranks together (sample-weighted), identical on every rank.
EpochStats all_reduce_stats(const EpochStats& local, Distributed& group);

/// Predicted classes for every sample of `loader` (in loader order; use shuffle=false).
torch::Tensor predict(ModelImpl& model, DataLoader& loader, torch::Device device = torch::kCPU);

}  // namespace rmnet
