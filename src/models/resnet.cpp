#include "rmnet/models/resnet.h"

#include <fmt/format.h>
#include <torch/torch.h>

#include "arch_table.h"

namespace rmnet {
namespace nn = torch::nn;
namespace {

nn::Conv2d conv3x3(int64_t in, int64_t out, int64_t stride) {
  return nn::Conv2d(nn::Conv2dOptions(in, out, 3).stride(stride).padding(1).bias(false));
}
nn::Conv2d conv1x1(int64_t in, int64_t out, int64_t stride = 1) {
  return nn::Conv2d(nn::Conv2dOptions(in, out, 1).stride(stride).bias(false));
}
nn::Sequential make_downsample(int64_t in, int64_t out, int64_t stride) {
  if (stride == 1 && in == out) return nullptr;
  return nn::Sequential(conv1x1(in, out, stride), BatchNorm2d(out));
}

const detail::ArchTable<ResNetConfig>& arch_table() {
  using B = BlockType;
  using S = StemType;
  static const detail::ArchTable<ResNetConfig> table("ResNet architecture", {
      {"resnet18", {B::Basic, {2, 2, 2, 2}, {64, 128, 256, 512}, S::ImageNet, 64}},
      {"resnet34", {B::Basic, {3, 4, 6, 3}, {64, 128, 256, 512}, S::ImageNet, 64}},
      {"resnet50", {B::Bottleneck, {3, 4, 6, 3}, {64, 128, 256, 512}, S::ImageNet, 64}},
      {"resnet101", {B::Bottleneck, {3, 4, 23, 3}, {64, 128, 256, 512}, S::ImageNet, 64}},
      {"resnet152", {B::Bottleneck, {3, 8, 36, 3}, {64, 128, 256, 512}, S::ImageNet, 64}},
      {"resnet18_cifar", {B::Basic, {2, 2, 2, 2}, {64, 128, 256, 512}, S::Cifar, 64}},
      {"resnet34_cifar", {B::Basic, {3, 4, 6, 3}, {64, 128, 256, 512}, S::Cifar, 64}},
      {"resnet8", {B::Basic, {1, 1, 1}, {16, 32, 64}, S::Cifar, 16}},
      {"resnet14", {B::Basic, {2, 2, 2}, {16, 32, 64}, S::Cifar, 16}},
      {"resnet20", {B::Basic, {3, 3, 3}, {16, 32, 64}, S::Cifar, 16}},
      {"resnet32", {B::Basic, {5, 5, 5}, {16, 32, 64}, S::Cifar, 16}},
      {"resnet44", {B::Basic, {7, 7, 7}, {16, 32, 64}, S::Cifar, 16}},
      {"resnet56", {B::Basic, {9, 9, 9}, {16, 32, 64}, S::Cifar, 16}},
      {"resnet110", {B::Basic, {18, 18, 18}, {16, 32, 64}, S::Cifar, 16}},
      {"se_resnet18_cifar", {B::Basic, {2, 2, 2, 2}, {64, 128, 256, 512}, S::Cifar, 64, 16}},
      {"se_resnet20", {B::Basic, {3, 3, 3}, {16, 32, 64}, S::Cifar, 16, 4}},
      {"se_resnet50", {B::Bottleneck, {3, 4, 6, 3}, {64, 128, 256, 512}, S::ImageNet, 64, 16}},
  });
  return table;
}

}  // namespace

BasicBlockImpl::BasicBlockImpl(int64_t in_planes, int64_t planes, int64_t stride_, bool track_stats,
                               int64_t se_reduction)
    : stride(stride_) {
  conv1 = register_module("conv1", conv3x3(in_planes, planes, stride));
  bn1 = register_module("bn1", BatchNorm2d(planes));
  conv2 = register_module("conv2", conv3x3(planes, planes, 1));
  bn2 = register_module("bn2", BatchNorm2d(planes));
  downsample = make_downsample(in_planes, planes * expansion, stride);
  if (downsample) register_module("downsample", downsample);
  if (se_reduction > 0) se = register_module("se", SqueezeExcitation(planes, se_hidden(planes, se_reduction)));
  if (track_stats) init_stats(in_planes, planes * expansion);
}

torch::Tensor BasicBlockImpl::forward(torch::Tensor x) {
  track(x, true);
  auto out = torch::relu(bn1(conv1(x)));
  out = bn2(conv2(out));
  if (se) out = se(out);
  const auto sc = shortcut_input(x);
  out = torch::relu(out + (downsample ? downsample->forward(sc) : sc));
  track(out, false);
  return out;
}

BottleneckImpl::BottleneckImpl(int64_t in_planes, int64_t planes, int64_t stride, bool track_stats,
                               int64_t se_reduction)
    : BottleneckImpl(in_planes, planes, planes * expansion, stride, 1, track_stats, se_reduction) {}

BottleneckImpl::BottleneckImpl(int64_t in_planes, int64_t width, int64_t out_planes, int64_t stride_,
                               int64_t groups, bool track_stats, int64_t se_reduction)
    : stride(stride_) {
  TORCH_CHECK(groups >= 1 && width % groups == 0, "Bottleneck: groups (", groups, ") must divide the width (",
              width, ")");
  conv1 = register_module("conv1", conv1x1(in_planes, width));
  bn1 = register_module("bn1", BatchNorm2d(width));
  conv2 = register_module(
      "conv2", nn::Conv2d(nn::Conv2dOptions(width, width, 3).stride(stride).padding(1).groups(groups).bias(false)));
  bn2 = register_module("bn2", BatchNorm2d(width));
  conv3 = register_module("conv3", conv1x1(width, out_planes));
  bn3 = register_module("bn3", BatchNorm2d(out_planes));
  downsample = make_downsample(in_planes, out_planes, stride);
  if (downsample) register_module("downsample", downsample);
  if (se_reduction > 0)
    se = register_module("se", SqueezeExcitation(out_planes, se_hidden(out_planes, se_reduction)));
  if (track_stats) init_stats(in_planes, out_planes);
}

torch::Tensor BottleneckImpl::forward(torch::Tensor x) {
  track(x, true);
  auto out = torch::relu(bn1(conv1(x)));
  out = torch::relu(bn2(conv2(out)));
  out = bn3(conv3(out));
  if (se) out = se(out);
  const auto sc = shortcut_input(x);
  out = torch::relu(out + (downsample ? downsample->forward(sc) : sc));
  track(out, false);
  return out;
}

ResNetImpl::ResNetImpl(ResNetConfig config, ModelOptions options)
    : ModelImpl(std::move(options)), config_(std::move(config)) {
  const auto& o = options_;
  TORCH_CHECK(config_.layers.size() == config_.widths.size() && !config_.layers.empty(),
              "ResNet config needs one width per stage");
  const bool imagenet = config_.stem == StemType::ImageNet;
  conv1 = register_module(
      "conv1", nn::Conv2d(nn::Conv2dOptions(o.in_channels(), config_.stem_width, imagenet ? 7 : 3)
                              .stride(imagenet ? 2 : 1)
                              .padding(imagenet ? 3 : 1)
                              .bias(false)));
  bn1 = register_module("bn1", BatchNorm2d(config_.stem_width));
  if (imagenet) maxpool = register_module("maxpool", nn::MaxPool2d(nn::MaxPool2dOptions(3).stride(2).padding(1)));

  const bool basic = config_.block == BlockType::Basic;
  const int64_t expansion = basic ? BasicBlockImpl::expansion : BottleneckImpl::expansion;
  int64_t in_planes = config_.stem_width;
  for (size_t s = 0; s < config_.layers.size(); ++s) {
    nn::Sequential stage;
    const int64_t planes = config_.widths[s];
    for (int64_t b = 0; b < config_.layers[s]; ++b) {
      const int64_t stride = (s > 0 && b == 0) ? 2 : 1;
      if (basic) {
        BasicBlock block(in_planes, planes, stride, o.track_block_stats(), config_.se_reduction);
        if (o.shortcut_scale()) block->enable_shortcut_scale(in_planes);
        stage->push_back(block);
      } else {
        Bottleneck block(in_planes, planes, stride, o.track_block_stats(), config_.se_reduction);
        if (o.shortcut_scale()) block->enable_shortcut_scale(in_planes);
        stage->push_back(block);
      }
      in_planes = planes * expansion;
    }
    stages.push_back(register_module(fmt::format("layer{}", s + 1), stage));
  }
  fc = register_module("fc", nn::Linear(in_planes, o.num_classes()));

  // torchvision's initialisation
  init_conv_bn(*this);
  if (o.zero_init_residual()) {
    torch::NoGradGuard no_grad;
    for (auto& stage : stages)
      for (auto& blk : *stage) {
        if (auto* b = blk.ptr()->as<BasicBlockImpl>()) b->bn2->weight.zero_();
        if (auto* b = blk.ptr()->as<BottleneckImpl>()) b->bn3->weight.zero_();
      }
  }
}

torch::Tensor ResNetImpl::forward(torch::Tensor x) {
  x = torch::relu(bn1(conv1(x)));
  if (maxpool) x = maxpool(x);
  for (auto& stage : stages) x = stage->forward(x);
  x = torch::adaptive_avg_pool2d(x, {1, 1});
  return fc(torch::flatten(x, 1));
}

ResNetConfig resnet_config(const std::string& arch) { return arch_table().at(arch); }
bool is_resnet_arch(const std::string& arch) { return arch_table().contains(arch); }
std::vector<std::string> resnet_arch_names() { return arch_table().names(); }

}  // namespace rmnet
