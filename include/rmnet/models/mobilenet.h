#pragma once
// MobileNetV2 as torchvision defines it (width multiplier, ReLU6, inverted residuals), with an
// option for plain ReLU. Submodule names equal torchvision's: features.3.conv.1.0, classifier.1.
// Also the paper's MobileNetV2 that converts to MobileNetV1 (Section 3.3 / 4.3, Figure 3) and
// MobileNetV1 itself (Howard et al.) for training from scratch.
#include <vector>

#include <torch/nn/modules/batchnorm.h>
#include <torch/nn/modules/container/sequential.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/modules/linear.h>

#include "rmnet/models/model.h"
#include "rmnet/models/residual_block.h"

namespace rmnet {

class InvertedResidualImpl : public ResidualBlockBase {
 public:
  /// in_width/out_width (default: in/out) are the tensor widths when they differ from the
  /// block's nominal widths: the paper's MobileNetV1-shaped variant widens the pw-linear output
  /// ("free" channels) and adds the residual to the first `in` channels only.
  InvertedResidualImpl(int64_t in, int64_t out, int64_t stride, int64_t expand_ratio, bool relu6,
                       bool track_stats, int64_t in_width = 0, int64_t out_width = 0);
  torch::Tensor forward(torch::Tensor x);

  int64_t in_channels, out_channels, stride, hidden;
  int64_t in_width, out_width;  ///< tensor widths (== in/out_channels for torchvision's blocks)
  bool use_res_connect, relu6;
  torch::nn::Sequential conv{nullptr};
  // Views into `conv` (expand_* are null when expand_ratio == 1).
  torch::nn::Conv2d expand_conv{nullptr}, dw_conv{nullptr}, project_conv{nullptr};
  BatchNorm2d expand_bn{nullptr}, dw_bn{nullptr}, project_bn{nullptr};
};
TORCH_MODULE(InvertedResidual);

/// A Conv2d + BatchNorm2d + activation stage (torchvision's Conv2dNormActivation): a Sequential
/// with children "0" (conv), "1" (bn), "2" (ReLU6 or ReLU), with a non-template forward so it
/// can be nested in another Sequential.
class ConvBNActImpl : public torch::nn::SequentialImpl {
 public:
  ConvBNActImpl(int64_t in, int64_t out, int64_t kernel, int64_t stride, int64_t groups, bool relu6);
  torch::Tensor forward(torch::Tensor x) { return torch::nn::SequentialImpl::forward(x); }
  torch::nn::Conv2d conv{nullptr};
  BatchNorm2d bn{nullptr};
};
TORCH_MODULE(ConvBNAct);

/// A MobileNetV2 shape: inverted-residual stages (t, c, n, s) after a 3x3 stem, then a 1x1 conv.
struct MobileNetV2Config {
  struct Stage {
    int64_t t, c, n, s;  ///< expansion, output width, blocks, stride of the first block
  };
  std::vector<Stage> stages;
  int64_t stem_channels = 32, stem_stride = 2, last_channel = 1280;
  /// Width factor of the pw-linear outputs (the paper's t_free): block outputs are free * c wide
  /// and the residual covers the first c channels. 1 for torchvision's MobileNetV2.
  int64_t free = 1;
  bool round_widths = true;  ///< torchvision's make_divisible(8) on widths (false: int(c * width))
};

class MobileNetV2Impl : public ModelImpl {
 public:
  /// `cifar`: stem stride 1 and the second stage's stride 1 (for 32x32 inputs).
  MobileNetV2Impl(ModelOptions options, bool cifar = false);
  MobileNetV2Impl(ModelOptions options, MobileNetV2Config config);
  torch::Tensor forward(torch::Tensor x) override;
  std::string family() const override { return "mobilenet_v2"; }
  int64_t input_size() const override { return input_size_; }  ///< stem stride 1: 32, else 224

  torch::nn::Sequential features{nullptr};
  torch::nn::Sequential classifier{nullptr};
  int64_t last_channel = 1280;

 private:
  int64_t input_size_ = 224;
};
TORCH_MODULE(MobileNetV2);

/// mobilenet_v2, mobilenet_v2_cifar (torchvision's), mobilenet_v2_v1_cifar (the paper's variant
/// whose RM + pointwise fusion is exactly MobileNetV1's depth and widths, free = 4).
MobileNetV2Config mobilenet_v2_config(const std::string& arch);

/// MobileNetV1 (Howard et al.): 3x3 conv, then 13 depthwise-separable pairs (dw 3x3 + pw 1x1, each
/// conv-BN-ReLU), global pooling, linear. `features` holds ConvBNAct stages; `classifier` a Linear.
class MobileNetV1Impl : public ModelImpl {
 public:
  /// `cifar`: stem stride 1 (32x32 inputs), as the paper's Table 2.
  MobileNetV1Impl(ModelOptions options, bool cifar);
  torch::Tensor forward(torch::Tensor x) override;
  std::string family() const override { return "mobilenet_v1"; }
  int64_t input_size() const override { return input_size_; }  ///< 32 with the CIFAR stem, else 224

  torch::nn::Sequential features{nullptr};
  torch::nn::Linear classifier{nullptr};

 private:
  int64_t input_size_ = 224;
};
TORCH_MODULE(MobileNetV1);

/// torchvision's _make_divisible: round v to a multiple of divisor, not below 90% of v.
int64_t make_divisible(double v, int64_t divisor = 8);

}  // namespace rmnet
