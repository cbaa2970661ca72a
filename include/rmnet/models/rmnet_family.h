#pragma once
// The paper's RMNet family (Section 4.2, Table 1, Appendix A.4; the authors call the code RMNeXt):
// "RMNet AxB_C" has A weighted layers, deploy width multiplier B and C channels per group in the
// first stage (doubling every stage). A RepVGG-block stem (one block for CIFAR, two stride-2 blocks
// for ImageNet), then stages of width 64/128/256/512 made of bottleneck blocks
//   1x1 conv in -> (B-1)*w, grouped 3x3 (C*2^s channels per group, stride on the first block of a
//   stage), 1x1 conv -> w, + shortcut (identity or 1x1 projection with BN), ReLU,
// the last BN of each block zero-initialised. The RM operation reserves the input in whole extra
// groups of the grouped conv, so the converted block is w -> B*w -> B*w -> w: the deploy width is
// B times the stage width. Submodules: layer0 (stem), layer1..layer4 (torchvision Bottleneck
// names), fc.
#include <string>
#include <vector>

#include <torch/nn/modules/container/sequential.h>
#include <torch/nn/modules/linear.h>

#include "rmnet/models/model.h"

namespace rmnet {

struct RMNetConfig {
  std::vector<int64_t> layers;  ///< blocks per stage
  int64_t multiplier = 2;       ///< B: the grouped conv is (B-1) * width wide before conversion
  int64_t channels_per_group = 32;  ///< C in stage 1, doubled every stage
  bool imagenet = true;         ///< two stride-2 stem blocks (ImageNet) or one stride-1 (CIFAR)
  int64_t base_width = 64;
};

class RMNetImpl : public ModelImpl {
 public:
  RMNetImpl(RMNetConfig config, ModelOptions options);
  torch::Tensor forward(torch::Tensor x) override;
  std::string family() const override { return "rmnet"; }
  int64_t input_size() const override { return config_.imagenet ? 224 : 32; }
  const RMNetConfig& config() const { return config_; }

  torch::nn::Sequential layer0{nullptr};      ///< RepVGG blocks
  std::vector<torch::nn::Sequential> stages;  ///< layer1 .. layer4 (Bottleneck blocks)
  torch::nn::Linear fc{nullptr};

 private:
  RMNetConfig config_;
};
TORCH_MODULE(RMNet);

/// rmnet26x3_32 (CIFAR), rmnet41x4_8, rmnet41x5_16, rmnet50x5_32, rmnet50x6_32, rmnet101x6_16,
/// rmnet152x6_32 (ImageNet). Throws for an unknown name.
RMNetConfig rmnet_config(const std::string& arch);
bool is_rmnet_arch(const std::string& arch);
std::vector<std::string> rmnet_arch_names();

}  // namespace rmnet
