#pragma once
// RepVGG (Ding et al., 2021): training-time blocks with a 3x3 conv+BN, a 1x1 conv+BN and (when the
// shape allows) an identity BN branch, summed and followed by ReLU; at deploy time each block is
// re-parameterised into one 3x3 conv (convert() does this through the plain network). Submodule
// names follow the official implementation: stage0, stage1.0.rbr_dense.conv, ...rbr_1x1.bn,
// ...rbr_identity, linear.
#include <string>
#include <vector>

#include <torch/nn/modules/batchnorm.h>
#include <torch/nn/modules/container/sequential.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/modules/linear.h>

#include "rmnet/models/model.h"

namespace rmnet {

/// A conv (no bias) followed by a BatchNorm: children "conv" and "bn".
class ConvBNImpl : public torch::nn::Module {
 public:
  ConvBNImpl(int64_t in, int64_t out, int64_t kernel, int64_t stride, int64_t padding, int64_t groups = 1);
  torch::Tensor forward(const torch::Tensor& x) { return bn(conv(x)); }
  torch::nn::Conv2d conv{nullptr};
  BatchNorm2d bn{nullptr};
};
TORCH_MODULE(ConvBN);

/// relu(BN(conv3x3(x)) + BN(conv1x1(x)) [+ BN(x) when in == out and stride == 1]).
class RepVGGBlockImpl : public torch::nn::Module {
 public:
  RepVGGBlockImpl(int64_t in, int64_t out, int64_t stride, bool identity = true);
  torch::Tensor forward(torch::Tensor x);
  int64_t in_channels, out_channels, stride;
  ConvBN rbr_dense{nullptr}, rbr_1x1{nullptr};
  BatchNorm2d rbr_identity{nullptr};  ///< null when the shape changes
};
TORCH_MODULE(RepVGGBlock);

/// One RepVGG variant: blocks and widths per stage (stage 0 is the single stem block).
struct RepVGGConfig {
  std::vector<int64_t> blocks;   ///< blocks per stage, stage0 included
  std::vector<int64_t> widths;   ///< output width per stage
  std::vector<int64_t> strides;  ///< stride of the first block of each stage
};

class RepVGGImpl : public ModelImpl {
 public:
  RepVGGImpl(RepVGGConfig config, ModelOptions options);
  torch::Tensor forward(torch::Tensor x) override;
  std::string family() const override { return "repvgg"; }
  int64_t input_size() const override { return config_.strides.at(0) == 1 ? 32 : 224; }  ///< stem stride 1: CIFAR
  const RepVGGConfig& config() const { return config_; }

  std::vector<torch::nn::Sequential> stages;  ///< stage0, stage1, ... (each a Sequential of blocks)
  torch::nn::Linear linear{nullptr};

 private:
  RepVGGConfig config_;
};
TORCH_MODULE(RepVGG);

/// repvgg_a0 .. repvgg_a2, repvgg_b0 .. repvgg_b3 (ImageNet, the official widths and depths) and
/// repvgg<D>_cifar for D = 6n + 2 (8, 14, 20, 32, 44, 56, 110, ...): the depth-study variant with
/// the shape of He et al.'s CIFAR ResNet-D (stem 16, 2n blocks at 16/32/64), one 3x3 conv per
/// block, so a RepVGG and a ResNet of the same name have the same depth and widths.
RepVGGConfig repvgg_config(const std::string& arch);
bool is_repvgg_arch(const std::string& arch);
std::vector<std::string> repvgg_arch_names();

}  // namespace rmnet
