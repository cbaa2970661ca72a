#pragma once
// Training checkpoints: model (self-describing), optimizer state, training position, RNG state
// and the run's configuration, in one file written atomically.
#include <string>

#include <torch/optim/sgd.h>

#include "rmnet/models/model.h"
#include "rmnet/train/trainer.h"

namespace rmnet {

struct Checkpoint {
  ModelPtr model;
  TrainState state;
  double best_top1 = 0.0;
  std::string config;  ///< the run's configuration (JSON text)
};

/// Writes model, optimizer, state, RNG and config to `path` (temporary file, then rename).
void save_checkpoint(const std::string& path, const ModelImpl& model, const torch::optim::SGD& optimizer,
                     const TrainState& state, double best_top1, const std::string& config);

/// Reads a checkpoint: returns model, state, config; restores the global RNG. Call
/// load_optimizer_state afterwards with an optimizer built for the returned model.
Checkpoint load_checkpoint(const std::string& path);
/// Restores the optimizer state (momentum buffers) of a checkpoint into `optimizer`, each buffer
/// on its parameter's device and in its memory format.
void load_optimizer_state(const std::string& path, torch::optim::SGD& optimizer);

}  // namespace rmnet
