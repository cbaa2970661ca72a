#pragma once
// The base of every residual block (ResNet's BasicBlock and Bottleneck, MobileNetV2's inverted
// residual, the pre-activation block): the running statistics of the block's input and output
// that the RM operation gives its identity BatchNorms, and the optional shortcut scale.
#include <torch/nn/module.h>
#include <torch/types.h>

namespace rmnet {

/// Running statistics of a block's input and output (ModelOptions::track_block_stats).
/// Registered as buffers rm_in_mean, rm_in_var, rm_out_mean, rm_out_var of the block.
struct BlockStats {
  torch::Tensor in_mean, in_var, out_mean, out_var;
  bool defined() const { return in_mean.defined(); }
};

/// Shared by every residual block: optional input/output statistics tracking.
class ResidualBlockBase : public torch::nn::Module {
 public:
  const BlockStats& stats() const { return stats_; }
  /// Learnable shortcut scale s ([in_channels]; undefined unless enabled): the shortcut sees
  /// relu(s * x) instead of x (ModelOptions::shortcut_scale).
  torch::Tensor shortcut_scale;
  void enable_shortcut_scale(int64_t in_channels);
  /// x, or relu(s * x) when the shortcut scale is enabled.
  torch::Tensor shortcut_input(const torch::Tensor& x) const;

 protected:
  void init_stats(int64_t in_channels, int64_t out_channels);
  void track(const torch::Tensor& x, bool input);
  BlockStats stats_;
};

}  // namespace rmnet
