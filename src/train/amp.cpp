#include "rmnet/train/amp.h"

#include <ATen/autocast_mode.h>
#include <torch/torch.h>

namespace rmnet {

torch::ScalarType parse_amp_dtype(const std::string& name) {
  if (name == "off" || name == "fp32" || name == "float32" || name == "none") return torch::kFloat;
  if (name == "bf16" || name == "bfloat16") return torch::kBFloat16;
  if (name == "fp16" || name == "float16" || name == "half") return torch::kHalf;
  TORCH_CHECK(false, "autocast dtype '", name, "' is not one of off, bf16, fp16");
}

AutocastGuard::AutocastGuard(torch::Device device, torch::ScalarType dtype) : type_(device.type()) {
  if (dtype == torch::kFloat) return;
  TORCH_CHECK(dtype == torch::kBFloat16 || dtype == torch::kHalf, "autocast dtype must be bf16 or fp16 (got ",
              dtype, ")");
  active_ = true;
  prev_enabled_ = at::autocast::is_autocast_enabled(type_);
  prev_dtype_ = at::autocast::get_autocast_dtype(type_);
  at::autocast::set_autocast_enabled(type_, true);
  at::autocast::set_autocast_dtype(type_, dtype);
  at::autocast::increment_nesting();
}

AutocastGuard::~AutocastGuard() {
  if (!active_) return;
  if (at::autocast::decrement_nesting() == 0) at::autocast::clear_cache();
  at::autocast::set_autocast_enabled(type_, prev_enabled_);
  at::autocast::set_autocast_dtype(type_, prev_dtype_);
}

bool LossScaler::unscale_and_check(const std::vector<torch::Tensor>& params) const {
  torch::NoGradGuard no_grad;
  const double inv = 1.0 / scale;
  std::vector<torch::Tensor> flags;
  for (const auto& p : params) {
    if (!p.grad().defined()) continue;
    auto g = p.mutable_grad();
    g.mul_(inv);
    flags.push_back(torch::isfinite(g).all());
  }
  if (flags.empty()) return true;
  return torch::stack(flags).all().item<bool>();
}

void LossScaler::update(bool finite) {
  if (!finite) {
    scale *= backoff_factor;
    good_steps = 0;
    ++skipped_steps;
    return;
  }
  if (++good_steps >= growth_interval) {
    scale *= growth_factor;
    good_steps = 0;
  }
}

void to_channels_last(torch::nn::Module& module) {
  torch::NoGradGuard no_grad;
  for (auto p : module.parameters())
    if (p.dim() == 4) p.set_data(p.data().contiguous(torch::MemoryFormat::ChannelsLast));
  for (auto b : module.buffers())
    if (b.dim() == 4) b.set_data(b.data().contiguous(torch::MemoryFormat::ChannelsLast));
}

}  // namespace rmnet
