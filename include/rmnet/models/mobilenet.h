#pragma once
// MobileNetV2 as torchvision defines it (width multiplier, ReLU6, inverted residuals), with an
// option for plain ReLU. Submodule names equal torchvision's: features.3.conv.1.0, classifier.1.
#include <vector>

#include <torch/nn/modules/batchnorm.h>
#include <torch/nn/modules/container/sequential.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/modules/linear.h>

#include "rmnet/models/resnet.h"

namespace rmnet {

class InvertedResidualImpl : public ResidualBlockBase {
 public:
  InvertedResidualImpl(int64_t in, int64_t out, int64_t stride, int64_t expand_ratio, bool relu6,
                       bool track_stats);
  torch::Tensor forward(torch::Tensor x);

  int64_t in_channels, out_channels, stride, hidden;
  bool use_res_connect, relu6;
  torch::nn::Sequential conv{nullptr};
  // Views into `conv` (expand_* are null when expand_ratio == 1).
  torch::nn::Conv2d expand_conv{nullptr}, dw_conv{nullptr}, project_conv{nullptr};
  torch::nn::BatchNorm2d expand_bn{nullptr}, dw_bn{nullptr}, project_bn{nullptr};
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
  torch::nn::BatchNorm2d bn{nullptr};
};
TORCH_MODULE(ConvBNAct);

class MobileNetV2Impl : public ModelImpl {
 public:
  /// `cifar`: stem stride 1 and the second stage's stride 1 (for 32x32 inputs).
  MobileNetV2Impl(ModelOptions options, bool cifar = false);
  torch::Tensor forward(torch::Tensor x) override;
  std::string family() const override { return "mobilenet_v2"; }

  torch::nn::Sequential features{nullptr};
  torch::nn::Sequential classifier{nullptr};
  int64_t last_channel = 1280;
};
TORCH_MODULE(MobileNetV2);

/// torchvision's _make_divisible: round v to a multiple of divisor, not below 90% of v.
int64_t make_divisible(double v, int64_t divisor = 8);

}  // namespace rmnet
