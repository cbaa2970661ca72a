#pragma once
// Pre-activation ResNet (He et al., "Identity Mappings in Deep Residual Networks"): blocks
// BN-ReLU-conv3x3-BN-ReLU-conv3x3 + shortcut, where a projection shortcut (1x1 conv, stride s)
// takes the pre-activated input and the identity takes the raw input. The block input is a sum,
// not a ReLU output, so it can be negative: the RM operation reserves it through PReLUs of slope 1
// (and a 1x1 Dirac conv that duplicates it, since the block starts with BN-ReLU, not a conv).
// Submodules: conv1 (stem, no BN), layer1.., bn (final BN before pooling), fc.
#include <string>
#include <vector>

#include <torch/nn/modules/batchnorm.h>
#include <torch/nn/modules/container/sequential.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/modules/linear.h>

#include "rmnet/models/resnet.h"

namespace rmnet {

class PreActBlockImpl : public ResidualBlockBase {
 public:
  PreActBlockImpl(int64_t in_planes, int64_t planes, int64_t stride, bool track_stats);
  torch::Tensor forward(torch::Tensor x);

  int64_t stride;
  BatchNorm2d bn1{nullptr}, bn2{nullptr};
  torch::nn::Conv2d conv1{nullptr}, conv2{nullptr};
  torch::nn::Conv2d shortcut{nullptr};  ///< null for the identity
};
TORCH_MODULE(PreActBlock);

class PreActResNetImpl : public ModelImpl {
 public:
  /// Uses the layers/widths/stem width of a BasicBlock ResNetConfig (CIFAR stem: 3x3 conv).
  PreActResNetImpl(ResNetConfig config, ModelOptions options);
  torch::Tensor forward(torch::Tensor x) override;
  std::string family() const override { return "preact_resnet"; }
  int64_t input_size() const override { return 32; }  ///< always the CIFAR stem
  const ResNetConfig& config() const { return config_; }

  torch::nn::Conv2d conv1{nullptr};
  std::vector<torch::nn::Sequential> stages;
  BatchNorm2d bn{nullptr};
  torch::nn::Linear fc{nullptr};

 private:
  ResNetConfig config_;
};
TORCH_MODULE(PreActResNet);

/// preact_resnet18_cifar, preact_resnet34_cifar (widths 64..512), preact_resnet20,
/// preact_resnet56 (widths 16/32/64).
ResNetConfig preact_config(const std::string& arch);
bool is_preact_arch(const std::string& arch);
std::vector<std::string> preact_arch_names();

}  // namespace rmnet
