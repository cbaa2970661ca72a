#include "rmnet/models/preact.h"

#include <fmt/format.h>
#include <torch/torch.h>

#include "arch_table.h"

namespace rmnet {
namespace nn = torch::nn;

PreActBlockImpl::PreActBlockImpl(int64_t in_planes, int64_t planes, int64_t stride_, bool track_stats)
    : stride(stride_) {
  bn1 = register_module("bn1", BatchNorm2d(in_planes));
  conv1 = register_module("conv1", nn::Conv2d(nn::Conv2dOptions(in_planes, planes, 3).stride(stride).padding(1).bias(false)));
  bn2 = register_module("bn2", BatchNorm2d(planes));
  conv2 = register_module("conv2", nn::Conv2d(nn::Conv2dOptions(planes, planes, 3).padding(1).bias(false)));
  if (stride != 1 || in_planes != planes)
    shortcut = register_module("shortcut", nn::Conv2d(nn::Conv2dOptions(in_planes, planes, 1).stride(stride).bias(false)));
  if (track_stats) init_stats(in_planes, planes);
}

torch::Tensor PreActBlockImpl::forward(torch::Tensor x) {
  track(x, true);
  auto a = torch::relu(bn1(x));
  auto sc = shortcut ? shortcut(a) : x;
  auto out = conv2(torch::relu(bn2(conv1(a)))) + sc;
  track(out, false);
  return out;
}

PreActResNetImpl::PreActResNetImpl(ResNetConfig config, ModelOptions options)
    : ModelImpl(std::move(options)), config_(std::move(config)) {
  TORCH_CHECK(config_.block == BlockType::Basic, "pre-activation ResNets use basic blocks");
  conv1 = register_module(
      "conv1", nn::Conv2d(nn::Conv2dOptions(options_.in_channels(), config_.stem_width, 3).padding(1).bias(false)));
  int64_t in = config_.stem_width;
  for (size_t s = 0; s < config_.layers.size(); ++s) {
    nn::Sequential stage;
    for (int64_t b = 0; b < config_.layers[s]; ++b) {
      stage->push_back(PreActBlock(in, config_.widths[s], (s > 0 && b == 0) ? 2 : 1, options_.track_block_stats()));
      in = config_.widths[s];
    }
    stages.push_back(register_module(fmt::format("layer{}", s + 1), stage));
  }
  bn = register_module("bn", BatchNorm2d(in));
  fc = register_module("fc", nn::Linear(in, options_.num_classes()));
  init_conv_bn(*this);
}

torch::Tensor PreActResNetImpl::forward(torch::Tensor x) {
  x = conv1(x);
  for (auto& s : stages) x = s->forward(x);
  x = torch::relu(bn(x));
  x = torch::adaptive_avg_pool2d(x, {1, 1});
  return fc(torch::flatten(x, 1));
}

namespace {
const detail::ArchTable<ResNetConfig>& table() {
  using B = BlockType;
  using S = StemType;
  static const detail::ArchTable<ResNetConfig> t("pre-activation ResNet", {
      {"preact_resnet18_cifar", {B::Basic, {2, 2, 2, 2}, {64, 128, 256, 512}, S::Cifar, 64}},
      {"preact_resnet34_cifar", {B::Basic, {3, 4, 6, 3}, {64, 128, 256, 512}, S::Cifar, 64}},
      {"preact_resnet20", {B::Basic, {3, 3, 3}, {16, 32, 64}, S::Cifar, 16}},
      {"preact_resnet56", {B::Basic, {9, 9, 9}, {16, 32, 64}, S::Cifar, 16}},
  });
  return t;
}
}  // namespace

ResNetConfig preact_config(const std::string& arch) { return table().at(arch); }
bool is_preact_arch(const std::string& arch) { return table().contains(arch); }
std::vector<std::string> preact_arch_names() { return table().names(); }

}  // namespace rmnet
