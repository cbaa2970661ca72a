#pragma once
// Training as one call: epochs of train_epoch + evaluate with resume, checkpoints, a metrics
// log, best-model tracking, a stop request (e.g. Ctrl-C) and the NaN stop. `rmnet train` is this
// call plus flag parsing; a C++ program gets the same run with the same files.
#include <functional>
#include <string>
#include <vector>

#include <torch/arg.h>

#include "rmnet/data/dataset.h"
#include "rmnet/data/transforms.h"
#include "rmnet/models/model.h"
#include "rmnet/train/trainer.h"

namespace rmnet {

/// What fit knows once its loaders are built and a checkpoint (if any) is read.
struct FitPlan {
  int64_t steps_per_epoch = 0;    ///< optimizer steps per epoch
  int64_t samples_per_epoch = 0;  ///< training images per epoch, all ranks together
  TrainState start;               ///< where training starts (not epoch 0 when resuming)
  double best_top1 = 0.0;         ///< best test top-1 so far (from the checkpoint when resuming)
};

/// One finished epoch.
struct EpochRecord {
  int64_t epoch = 0;  ///< 1-based
  EpochStats train, test;
  double lr = 0.0;        ///< learning rate of the epoch's last step
  bool improved = false;  ///< test top-1 is the best so far (best.rmnet was written)
};

struct FitOptions {
  /// Epochs in all; a resumed run continues up to this count.
  TORCH_ARG(int64_t, epochs) = 10;
  /// Global batch size: with TrainOptions::distributed, each rank takes batch_size / world_size
  /// samples per step (it must divide), so the ranks together run the one-process batches.
  TORCH_ARG(int64_t, batch_size) = 128;
  /// Evaluation batch size (per rank).
  TORCH_ARG(int64_t, test_batch_size) = 256;
  /// Loader worker threads (0: samples are prepared on the training thread).
  TORCH_ARG(int64_t, workers) = 2;
  /// Seed of the data order and augmentation (the model's initialisation is the caller's).
  TORCH_ARG(uint64_t, seed) = 0;
  /// Per-sample transforms of the training and test images (null: normalize({0.5}, {0.5}) per
  /// channel, i.e. [0, 255] to [-1, 1]).
  TORCH_ARG(Transform, train_transform) = nullptr;
  TORCH_ARG(Transform, test_transform) = nullptr;
  /// Optimizer, device, data-parallel group, autocast and schedule. The schedule's `epochs` and
  /// `steps_per_epoch` are set by fit from `epochs` and the loader.
  TORCH_ARG(TrainOptions, train) = TrainOptions();
  /// Output folder for checkpoint.ckpt (after every epoch and on a stop), best.rmnet (each new
  /// best test top-1), final.rmnet, metrics.jsonl (one JSON line per epoch), config.json and
  /// train_summary.json. Created if missing; empty writes no files (and a stop cannot be resumed).
  /// With data parallelism only rank 0 writes.
  TORCH_ARG(std::string, out) = "";
  /// Resume from this checkpoint: the model's weights and metadata, the optimizer state, the
  /// position (epoch, step, batch in the epoch), the best top-1 and the CPU RNG are restored, and
  /// the run continues as if it had not stopped. The model must have the checkpoint's architecture.
  TORCH_ARG(std::string, resume) = "";
  /// The caller's description of the run as a JSON object (data set, architecture, ...): fit adds
  /// its own settings (epochs, batch size, optimizer, schedule, device, ...) and stores the result
  /// in config.json and in every checkpoint.
  TORCH_ARG(std::string, config) = "{}";
  /// Called once before the first epoch.
  TORCH_ARG(std::function<void(const FitPlan&)>, on_begin) = nullptr;
  /// Called before each epoch's training with its 0-based index.
  TORCH_ARG(std::function<void(int64_t)>, on_epoch_begin) = nullptr;
  /// Called after every step (batch index, batches in the epoch, running statistics, lr).
  TORCH_ARG(ProgressFn, on_batch) = nullptr;
  /// Called after each epoch's evaluation (and after its files are written).
  TORCH_ARG(std::function<void(const EpochRecord&)>, on_epoch) = nullptr;
  /// Distillation from a teacher network (stored in `train`, see TrainOptions::teacher): e.g. the
  /// unpruned network when fine-tuning a pruned one.
 public:
  FitOptions& teacher(std::shared_ptr<ModelImpl> t) {
    train_.teacher(std::move(t));
    return *this;
  }
  const std::shared_ptr<ModelImpl>& teacher() const { return train_.teacher(); }
  FitOptions& distill_weight(double a) {
    train_.distill_weight(a);
    return *this;
  }
  double distill_weight() const { return train_.distill_weight(); }
  FitOptions& distill_temperature(double t) {
    train_.distill_temperature(t);
    return *this;
  }
  double distill_temperature() const { return train_.distill_temperature(); }
  /// Checked before every batch: true stops training there; fit writes the checkpoint (resume
  /// continues at that batch) and returns with FitResult::stopped. With data parallelism a stop
  /// on any rank stops all of them at the same batch.
  TORCH_ARG(std::function<bool()>, stop) = nullptr;
};

struct FitResult {
  TrainState state;        ///< where training ended (state.epoch == epochs unless stopped)
  double best_top1 = 0.0;  ///< best test top-1 over all epochs (including those before a resume)
  bool stopped = false;    ///< the stop callback ended training early
  double train_seconds = 0.0;         ///< time in train_epoch (this call only)
  std::vector<EpochRecord> epochs;    ///< the epochs this call ran
  std::string checkpoint;             ///< path of the last checkpoint written ("" when none)
};

/// Trains `model` on `train_data` for FitOptions::epochs, evaluating on `test_data` after each
/// epoch. Moves the model to the training device (channels_last when asked; with a data-parallel
/// group every rank starts from rank 0's weights). Throws NonFiniteLoss when the loss becomes
/// NaN or Inf (the last checkpoint stays as it was), c10::Error for a mismatch between model,
/// data and checkpoint, naming the file.
FitResult fit(ModelImpl& model, const DatasetPtr& train_data, const DatasetPtr& test_data,
              const FitOptions& options);

}  // namespace rmnet
