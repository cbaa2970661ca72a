#include "rmnet/models/registry.h"

#include <algorithm>

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <torch/torch.h>

#include "rmnet/models/mobilenet.h"
#include "rmnet/models/resnet.h"

namespace rmnet {

std::vector<std::string> model_names() {
  auto names = resnet_arch_names();
  names.emplace_back("mobilenet_v2");
  names.emplace_back("mobilenet_v2_cifar");
  std::sort(names.begin(), names.end());
  return names;
}

bool is_model_name(const std::string& arch) {
  auto names = model_names();
  return std::find(names.begin(), names.end(), arch) != names.end();
}

std::string model_description(const std::string& arch) {
  if (arch == "mobilenet_v2") return "MobileNetV2 (torchvision), ImageNet stem";
  if (arch == "mobilenet_v2_cifar") return "MobileNetV2 for 32x32 inputs (stem and stage-2 stride 1)";
  auto cfg = resnet_config(arch);
  int64_t depth = 2;
  for (auto n : cfg.layers) depth += n * (cfg.block == BlockType::Basic ? 2 : 3);
  return fmt::format("ResNet-{} ({}, {} stem, widths {})", depth,
                     cfg.block == BlockType::Basic ? "BasicBlock" : "Bottleneck",
                     cfg.stem == StemType::ImageNet ? "ImageNet" : "CIFAR", fmt::join(cfg.widths, "/"));
}

ModelPtr create_model(const ModelOptions& o) {
  TORCH_CHECK(is_model_name(o.arch()), "unknown architecture '", o.arch(), "'; available: ",
              fmt::format("{}", fmt::join(model_names(), ", ")));
  TORCH_CHECK(o.num_classes() >= 1, "num_classes must be at least 1 (got ", o.num_classes(), ")");
  TORCH_CHECK(o.in_channels() >= 1, "in_channels must be at least 1 (got ", o.in_channels(), ")");
  TORCH_CHECK(o.width_mult() > 0 && o.width_mult() <= 16, "width_mult must be in (0, 16] (got ",
              o.width_mult(), ")");
  if (o.arch() == "mobilenet_v2" || o.arch() == "mobilenet_v2_cifar")
    return std::make_shared<MobileNetV2Impl>(o, o.arch() == "mobilenet_v2_cifar");
  return std::make_shared<ResNetImpl>(resnet_config(o.arch()), o);
}

}  // namespace rmnet
