#pragma once
// Mixed precision and memory layout for training: autocast (bf16 on CPU, fp16 or bf16 on CUDA),
// dynamic loss scaling for fp16, channels_last.
#include <string>
#include <vector>

#include <torch/types.h>

namespace torch::nn {
class Module;
}

namespace rmnet {

/// "off" (or "fp32"), "bf16" or "fp16" -> the autocast dtype (kFloat for off). Throws,
/// naming --amp, for anything else.
torch::ScalarType parse_amp_dtype(const std::string& name);

/// Turns autocast on for `device`'s type with `dtype` for its lifetime (nothing for kFloat);
/// restores the previous state and clears the cast cache afterwards.
class AutocastGuard {
 public:
  AutocastGuard(torch::Device device, torch::ScalarType dtype);
  ~AutocastGuard();
  AutocastGuard(const AutocastGuard&) = delete;
  AutocastGuard& operator=(const AutocastGuard&) = delete;

 private:
  bool active_ = false;
  c10::DeviceType type_;
  bool prev_enabled_ = false;
  torch::ScalarType prev_dtype_ = torch::kFloat;
};

/// Dynamic loss scaling (as torch.amp.GradScaler): the loss is multiplied by scale() before
/// backward; unscale_and_check() divides the gradients back and reports whether they are all
/// finite; update() halves the scale after an overflow (the step is skipped) and doubles it after
/// growth_interval finite steps.
struct LossScaler {
  double scale = 65536.0;
  double growth_factor = 2.0;
  double backoff_factor = 0.5;
  int64_t growth_interval = 2000;
  int64_t good_steps = 0;
  int64_t skipped_steps = 0;

  /// Divides every gradient by scale; true when all of them are finite.
  bool unscale_and_check(const std::vector<torch::Tensor>& params) const;
  void update(bool finite);
};

/// Converts the 4-D parameters and buffers of `module` to channels_last memory format.
void to_channels_last(torch::nn::Module& module);

}  // namespace rmnet
