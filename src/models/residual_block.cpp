#include "rmnet/models/residual_block.h"

#include <torch/torch.h>

namespace rmnet {

void ResidualBlockBase::init_stats(int64_t in_channels, int64_t out_channels) {
  stats_.in_mean = register_buffer("rm_in_mean", torch::zeros({in_channels}));
  stats_.in_var = register_buffer("rm_in_var", torch::ones({in_channels}));
  stats_.out_mean = register_buffer("rm_out_mean", torch::zeros({out_channels}));
  stats_.out_var = register_buffer("rm_out_var", torch::ones({out_channels}));
}

void ResidualBlockBase::track(const torch::Tensor& x, bool input) {
  if (!stats_.defined() || !is_training()) return;
  torch::NoGradGuard no_grad;
  // BatchNorm's own kernel updates running mean / unbiased running var exactly as a BatchNorm2d
  // with momentum 0.1 would, in one optimised pass (mean() + var() over (N, H, W) cost ~20% of a
  // ResNet-8 training step); its normalised output is discarded.
  auto& m = input ? stats_.in_mean : stats_.out_mean;
  auto& v = input ? stats_.in_var : stats_.out_var;
  torch::batch_norm(x.detach(), /*weight=*/{}, /*bias=*/{}, m, v, /*training=*/true, /*momentum=*/0.1,
                    /*eps=*/1e-5, /*cudnn_enabled=*/true);
}

void ResidualBlockBase::enable_shortcut_scale(int64_t in_channels) {
  shortcut_scale = register_parameter("shortcut_scale", torch::ones({in_channels}));
}

torch::Tensor ResidualBlockBase::shortcut_input(const torch::Tensor& x) const {
  if (!shortcut_scale.defined()) return x;
  return torch::relu(x * shortcut_scale.view({1, -1, 1, 1}));
}

}  // namespace rmnet
