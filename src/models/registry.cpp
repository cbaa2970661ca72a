#include "rmnet/models/registry.h"

#include <algorithm>

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <torch/torch.h>

#include "rmnet/models/mobilenet.h"
#include "rmnet/models/preact.h"
#include "rmnet/models/repvgg.h"
#include "rmnet/models/resnet.h"
#include "rmnet/models/rmnet_family.h"

namespace rmnet {

std::vector<std::string> model_names() {
  auto names = resnet_arch_names();
  for (const auto& list : {repvgg_arch_names(), rmnet_arch_names(), preact_arch_names()})
    names.insert(names.end(), list.begin(), list.end());
  for (const char* n : {"mobilenet_v2", "mobilenet_v2_cifar", "mobilenet_v2_v1_cifar", "mobilenet_v1", "mobilenet_v1_cifar"})
    names.emplace_back(n);
  std::sort(names.begin(), names.end());
  return names;
}

bool is_model_name(const std::string& arch) {
  auto names = model_names();
  return std::find(names.begin(), names.end(), arch) != names.end() || is_repvgg_arch(arch);
}

std::string model_description(const std::string& arch) {
  if (arch == "mobilenet_v2") return "MobileNetV2 (torchvision), ImageNet stem";
  if (arch == "mobilenet_v2_cifar") return "MobileNetV2 for 32x32 inputs (stem and stage-2 stride 1)";
  if (arch == "mobilenet_v2_v1_cifar")
    return "MobileNetV2 whose RM + pointwise fusion is MobileNetV1 (paper Sec. 4.3; free 4, 32x32 inputs)";
  if (arch == "mobilenet_v1") return "MobileNetV1, ImageNet stem";
  if (arch == "mobilenet_v1_cifar") return "MobileNetV1 for 32x32 inputs (stem stride 1)";
  if (is_rmnet_arch(arch)) {
    const auto c = rmnet_config(arch);
    int64_t blocks = 0;
    for (auto n : c.layers) blocks += n;
    return fmt::format("RMNet {} blocks/stage, deploy width x{}, {} channels/group ({} stem)", fmt::join(c.layers, "/"),
                       c.multiplier, c.channels_per_group, c.imagenet ? "ImageNet" : "CIFAR");
  }
  if (is_repvgg_arch(arch)) {
    const auto c = repvgg_config(arch);
    return fmt::format("RepVGG, blocks/stage {}, widths {}", fmt::join(c.blocks, "/"), fmt::join(c.widths, "/"));
  }
  if (is_preact_arch(arch)) {
    const auto c = preact_config(arch);
    return fmt::format("pre-activation ResNet, blocks/stage {}, widths {}", fmt::join(c.layers, "/"),
                       fmt::join(c.widths, "/"));
  }
  auto cfg = resnet_config(arch);
  int64_t depth = 2;
  for (auto n : cfg.layers) depth += n * (cfg.block == BlockType::Basic ? 2 : 3);
  return fmt::format("ResNet-{} ({}, {} stem, widths {}{})", depth,
                     cfg.block == BlockType::Basic ? "BasicBlock" : "Bottleneck",
                     cfg.stem == StemType::ImageNet ? "ImageNet" : "CIFAR", fmt::join(cfg.widths, "/"),
                     cfg.se_reduction > 0 ? fmt::format(", SE reduction {}", cfg.se_reduction) : "");
}

ModelPtr create_model(const ModelOptions& o) {
  TORCH_CHECK(is_model_name(o.arch()), "unknown architecture '", o.arch(), "'; available: ",
              fmt::format("{}", fmt::join(model_names(), ", ")));
  TORCH_CHECK(o.num_classes() >= 1, "num_classes must be at least 1 (got ", o.num_classes(), ")");
  TORCH_CHECK(o.in_channels() >= 1, "in_channels must be at least 1 (got ", o.in_channels(), ")");
  TORCH_CHECK(o.width_mult() > 0 && o.width_mult() <= 16, "width_mult must be in (0, 16] (got ",
              o.width_mult(), ")");
  const auto& a = o.arch();
  if (a == "mobilenet_v2" || a == "mobilenet_v2_cifar" || a == "mobilenet_v2_v1_cifar")
    return std::make_shared<MobileNetV2Impl>(o, mobilenet_v2_config(a));
  if (a == "mobilenet_v1" || a == "mobilenet_v1_cifar") return std::make_shared<MobileNetV1Impl>(o, a == "mobilenet_v1_cifar");
  if (is_rmnet_arch(a)) return std::make_shared<RMNetImpl>(rmnet_config(a), o);
  if (is_repvgg_arch(a)) return std::make_shared<RepVGGImpl>(repvgg_config(a), o);
  if (is_preact_arch(a)) return std::make_shared<PreActResNetImpl>(preact_config(a), o);
  return std::make_shared<ResNetImpl>(resnet_config(o.arch()), o);
}

}  // namespace rmnet
