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
#include "rmnet/models/residual_block.h"
#include "rmnet/models/se.h"

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
  int64_t se_reduction = 0;  ///< > 0: a squeeze-and-excitation module (this reduction) in every block
};

class BasicBlockImpl : public ResidualBlockBase {
 public:
  static constexpr int64_t expansion = 1;
  /// se_reduction > 0 adds an SE module (submodule "se") after bn2, inside the residual branch.
  BasicBlockImpl(int64_t in_planes, int64_t planes, int64_t stride, bool track_stats, int64_t se_reduction = 0);
  torch::Tensor forward(torch::Tensor x);

  int64_t stride;
  torch::nn::Conv2d conv1{nullptr}, conv2{nullptr};
  BatchNorm2d bn1{nullptr}, bn2{nullptr};
  torch::nn::Sequential downsample{nullptr};  ///< empty holder when the shortcut is the identity
  SqueezeExcitation se{nullptr};              ///< null without SE
};
TORCH_MODULE(BasicBlock);

class BottleneckImpl : public ResidualBlockBase {
 public:
  static constexpr int64_t expansion = 4;
  /// torchvision's Bottleneck: width `planes`, output 4 * planes.
  BottleneckImpl(int64_t in_planes, int64_t planes, int64_t stride, bool track_stats, int64_t se_reduction = 0);
  /// A general bottleneck (1x1 in -> width, grouped 3x3 width -> width with stride, 1x1 width -> out),
  /// e.g. the RMNet family's inverted residual block (width > out, many groups).
  BottleneckImpl(int64_t in_planes, int64_t width, int64_t out_planes, int64_t stride, int64_t groups,
                 bool track_stats, int64_t se_reduction = 0);
  torch::Tensor forward(torch::Tensor x);

  int64_t stride;
  torch::nn::Conv2d conv1{nullptr}, conv2{nullptr}, conv3{nullptr};
  BatchNorm2d bn1{nullptr}, bn2{nullptr}, bn3{nullptr};
  torch::nn::Sequential downsample{nullptr};
  SqueezeExcitation se{nullptr};  ///< null without SE (applied after bn3)
};
TORCH_MODULE(Bottleneck);

class ResNetImpl : public ModelImpl {
 public:
  ResNetImpl(ResNetConfig config, ModelOptions options);
  torch::Tensor forward(torch::Tensor x) override;
  std::string family() const override { return "resnet"; }
  int64_t input_size() const override { return config_.stem == StemType::Cifar ? 32 : 224; }
  const ResNetConfig& config() const { return config_; }

  torch::nn::Conv2d conv1{nullptr};
  BatchNorm2d bn1{nullptr};
  torch::nn::MaxPool2d maxpool{nullptr};  ///< null for the CIFAR stem
  std::vector<torch::nn::Sequential> stages;  ///< layer1, layer2, ...
  torch::nn::Linear fc{nullptr};

 private:
  ResNetConfig config_;
};
TORCH_MODULE(ResNet);

/// The depth table: resnet18/34/50/101/152 (ImageNet stem), resnet18_cifar/resnet34_cifar
/// (the paper's CIFAR ResNets: 3x3 stem, no max-pool), resnet8/14/20/32/44/56/110 (He et al.'s CIFAR
/// family: widths 16/32/64, projection shortcuts), and with squeeze-and-excitation in every block
/// (reduction 16; 4 for the 16/32/64-wide CIFAR family): se_resnet18_cifar, se_resnet20, se_resnet50.
/// Throws for an unknown name.
ResNetConfig resnet_config(const std::string& arch);
bool is_resnet_arch(const std::string& arch);
std::vector<std::string> resnet_arch_names();

}  // namespace rmnet
