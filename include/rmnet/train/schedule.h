#pragma once
// Learning-rate schedules, evaluated per iteration.
#include <string>
#include <vector>

#include <torch/arg.h>

namespace rmnet {

struct ScheduleOptions {
  /// "constant", "step", "multistep" or "cosine" (cosine is per iteration).
  TORCH_ARG(std::string, kind) = "cosine";
  TORCH_ARG(double, lr) = 0.1;
  TORCH_ARG(int64_t, epochs) = 1;
  TORCH_ARG(int64_t, steps_per_epoch) = 1;
  /// step: multiply by gamma every step_size epochs.
  TORCH_ARG(int64_t, step_size) = 30;
  /// multistep: multiply by gamma at each of these epochs.
  TORCH_ARG(std::vector<int64_t>, milestones) = {};
  TORCH_ARG(double, gamma) = 0.1;
  /// Linear warm-up from lr * warmup_factor to lr over this many epochs (counted in iterations).
  TORCH_ARG(double, warmup_epochs) = 0.0;
  TORCH_ARG(double, warmup_factor) = 0.1;
};

/// The learning rate at iteration `step` (0-based, counting from the start of training).
double learning_rate(const ScheduleOptions& s, int64_t step);

}  // namespace rmnet
