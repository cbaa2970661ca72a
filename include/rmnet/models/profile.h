#pragma once
// Cost of a model: parameters and multiply-accumulates (MACs) of its conv and linear layers.
//
// FLOPs here are counted as MACs (one multiply-add = 1), as the RM paper and torchvision's model
// cards do: torchvision's resnet18 at 224x224 is 1.814 GMACs, mobilenet_v2 0.301 GMACs. Only
// Conv2d and Linear contribute; BatchNorm, activations, pooling and additions are not counted.
//
// How: LibTorch modules have no forward hooks, so profile_model runs one batch-1 forward and
// observes the ATen calls it makes (a thread-local RecordFunction callback on aten::conv2d and
// aten::linear, with their input and output shapes). Each call is named after the module whose
// parameter is the call's weight. This works for any torch::nn::Module whose forward uses
// torch::conv2d / torch::linear (every rmnet model), residual or plain, without model-specific
// code.
#include <functional>
#include <string>
#include <vector>

#include <torch/nn/module.h>

namespace rmnet {

/// One conv or linear call of a forward.
struct LayerCost {
  std::string name;                ///< module name ("layer1.0.conv1", "3"); "?" if not a parameter
  std::string kind;                ///< "conv" or "linear"
  int64_t params = 0;              ///< weight + bias elements
  int64_t flops = 0;               ///< MACs per image
  std::vector<int64_t> out_shape;  ///< output shape of the call (batch 1)
};

struct ModelCost {
  std::vector<LayerCost> layers;  ///< in call order
  int64_t params = 0;             ///< all parameters of the module (count_parameters)
  int64_t flops = 0;              ///< MACs per image: sum over layers
  std::string to_string() const;  ///< "11.69M params, 1.814 GMACs"
};

/// Profiles `m` on one [1, in_channels, input_size, input_size] input (eval mode and no grad for
/// the forward; training flags restored). `m` must be a model (ModelImpl) or any module with a
/// forward(Tensor) -> Tensor reachable through `forward`; the callable form below takes anything.
ModelCost profile_model(torch::nn::Module& m, int64_t in_channels, int64_t input_size);

/// Profiles an arbitrary forward: `forward` is called once with a [1, C, S, S] input on the
/// module's device and dtype. Names come from `m`'s parameters.
ModelCost profile_forward(torch::nn::Module& m, const std::function<torch::Tensor(torch::Tensor)>& forward,
                          int64_t in_channels, int64_t input_size);

/// Shorthand: MACs per image of `m` at the given input size.
int64_t count_flops(torch::nn::Module& m, int64_t in_channels, int64_t input_size);

/// "1.814 G", "300.8 M", "12.3 K": a count with an SI prefix.
std::string format_count(double value, int precision = 3);

}  // namespace rmnet
