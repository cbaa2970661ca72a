#pragma once
// ResNet as torchvision defines it (BasicBlock / Bottleneck, stride on the 3x3 conv), with the
// ImageNet stem or a CIFAR stem (3x3 conv, no max-pool). Submodule names equal torchvision's
// state_dict keys: conv1, bn1, layer1.0.conv1, layer2.0.downsample.0, fc, ...
#include <vector>

#include <torch/nn/modules/batchnorm.h>
#include <torch/nn/modules/container/sequential.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/modules/pooling.h>

#include "rmnet/models/model.h"

namespace rmnet {

enum class BlockType { Basic, Bottleneck };
enum class StemType { ImageNet, Cifar };

/// The depth table entry of one ResNet variant.
struct ResNetConfig {
  BlockType block = BlockType::Basic;
  std::vector<int64_t> layers;  ///< blocks per stage
  std::vector<int64_t> widths;  ///< base width per stage (Bottleneck outputs 4x)
  StemType stem = StemType::ImageNet;
  int64_t stem_width = 64;
};

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

 protected:
  void init_stats(int64_t in_channels, int64_t out_channels);
  void track(const torch::Tensor& x, bool input);
  BlockStats stats_;
};

class BasicBlockImpl : public ResidualBlockBase {
 public:
  static constexpr int64_t expansion = 1;
  BasicBlockImpl(int64_t in_planes, int64_t planes, int64_t stride, bool track_stats);
  torch::Tensor forward(torch::Tensor x);

  int64_t stride;
  torch::nn::Conv2d conv1{nullptr}, conv2{nullptr};
  torch::nn::BatchNorm2d bn1{nullptr}, bn2{nullptr};
  torch::nn::Sequential downsample{nullptr};  ///< empty holder when the shortcut is the identity
};
TORCH_MODULE(BasicBlock);

class BottleneckImpl : public ResidualBlockBase {
 public:
  static constexpr int64_t expansion = 4;
  BottleneckImpl(int64_t in_planes, int64_t planes, int64_t stride, bool track_stats);
  torch::Tensor forward(torch::Tensor x);

  int64_t stride;
  torch::nn::Conv2d conv1{nullptr}, conv2{nullptr}, conv3{nullptr};
  torch::nn::BatchNorm2d bn1{nullptr}, bn2{nullptr}, bn3{nullptr};
  torch::nn::Sequential downsample{nullptr};
};
TORCH_MODULE(Bottleneck);

class ResNetImpl : public ModelImpl {
 public:
  ResNetImpl(ResNetConfig config, ModelOptions options);
  torch::Tensor forward(torch::Tensor x) override;
  std::string family() const override { return "resnet"; }
  const ResNetConfig& config() const { return config_; }

  torch::nn::Conv2d conv1{nullptr};
  torch::nn::BatchNorm2d bn1{nullptr};
  torch::nn::MaxPool2d maxpool{nullptr};  ///< null for the CIFAR stem
  std::vector<torch::nn::Sequential> stages;  ///< layer1, layer2, ...
  torch::nn::Linear fc{nullptr};

 private:
  ResNetConfig config_;
};
TORCH_MODULE(ResNet);

/// The depth table: resnet18/34/50/101/152 (ImageNet stem), resnet18_cifar/resnet34_cifar
/// (the paper's CIFAR ResNets: 3x3 stem, no max-pool), resnet8/14/20/32/44/56/110 (He et al.'s CIFAR
/// family: widths 16/32/64, projection shortcuts). Throws for an unknown name.
ResNetConfig resnet_config(const std::string& arch);
bool is_resnet_arch(const std::string& arch);
std::vector<std::string> resnet_arch_names();

}  // namespace rmnet
