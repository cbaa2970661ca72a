#pragma once
// Squeeze-and-excitation: the channel attention module some residual blocks carry in their branch.
#include <torch/nn/module.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/pimpl.h>

namespace rmnet {

/// Squeeze-and-excitation (Hu et al.), as torchvision's SqueezeExcitation:
/// x * sigmoid(fc2(relu(fc1(avgpool(x))))) with fc1/fc2 1x1 convs with bias.
class SqueezeExcitationImpl : public torch::nn::Module {
 public:
  SqueezeExcitationImpl(int64_t channels, int64_t hidden);
  torch::Tensor forward(const torch::Tensor& x);
  /// The per-channel scale sigmoid(fc2(relu(fc1(avgpool(x))))), shape [N, C, 1, 1].
  torch::Tensor scale(const torch::Tensor& x);
  torch::nn::Conv2d fc1{nullptr}, fc2{nullptr};
};
TORCH_MODULE(SqueezeExcitation);
/// Hidden width of an SE module on `channels` channels: max(1, channels / reduction).
int64_t se_hidden(int64_t channels, int64_t reduction);

}  // namespace rmnet
