#include "rmnet/models/rmnet_family.h"

#include <fmt/format.h>
#include <torch/torch.h>

#include "arch_table.h"
#include "rmnet/models/repvgg.h"
#include "rmnet/models/resnet.h"

namespace rmnet {
namespace nn = torch::nn;

RMNetImpl::RMNetImpl(RMNetConfig config, ModelOptions options)
    : ModelImpl(std::move(options)), config_(std::move(config)) {
  const auto& c = config_;
  TORCH_CHECK(!c.layers.empty(), "RMNet config needs at least one stage");
  TORCH_CHECK(c.multiplier >= 2, "RMNet width multiplier B must be at least 2 (got ", c.multiplier, ")");
  const int64_t stem = std::min<int64_t>(64, c.base_width);
  layer0 = nn::Sequential();
  if (c.imagenet) {
    layer0->push_back(RepVGGBlock(options_.in_channels(), stem, 2));
    layer0->push_back(RepVGGBlock(stem, stem, 2));
  } else {
    layer0->push_back(RepVGGBlock(options_.in_channels(), stem, 1));
  }
  register_module("layer0", layer0);
  int64_t in = stem;
  for (size_t s = 0; s < c.layers.size(); ++s) {
    const int64_t planes = c.base_width << s, cpg = c.channels_per_group << s;
    const int64_t width = (c.multiplier - 1) * planes;
    TORCH_CHECK(width % cpg == 0, "RMNet stage ", s + 1, ": width ", width, " is not a whole number of groups of ",
                cpg);
    nn::Sequential stage;
    for (int64_t b = 0; b < c.layers[s]; ++b) {
      // The RM operation reserves the block input in whole groups of the grouped conv.
      TORCH_CHECK(in % cpg == 0, "RMNet stage ", s + 1, ": input width ", in, " is not a whole number of groups of ",
                  cpg, ", so the input cannot be reserved in extra groups");
      stage->push_back(Bottleneck(in, width, planes, (s > 0 && b == 0) ? 2 : 1, width / cpg,
                                  options_.track_block_stats()));
      in = planes;
    }
    stages.push_back(register_module(fmt::format("layer{}", s + 1), stage));
  }
  fc = register_module("fc", nn::Linear(in, options_.num_classes()));

  init_conv_bn(*this);
  torch::NoGradGuard no_grad;
  for (auto& stage : stages)
    for (auto& blk : *stage) blk.ptr()->as<BottleneckImpl>()->bn3->weight.zero_();  // paper: last BN zero
}

torch::Tensor RMNetImpl::forward(torch::Tensor x) {
  x = layer0->forward(x);
  for (auto& s : stages) x = s->forward(x);
  x = torch::adaptive_avg_pool2d(x, {1, 1});
  return fc(torch::flatten(x, 1));
}

namespace {

const detail::ArchTable<RMNetConfig>& rmnet_table() {
  static const detail::ArchTable<RMNetConfig> table("RMNet architecture", {
      {"rmnet26x3_32", {{2, 2, 2, 2}, 3, 32, false}},   {"rmnet41x4_8", {{2, 3, 5, 3}, 4, 8, true}},
      {"rmnet41x5_16", {{2, 3, 5, 3}, 5, 16, true}},    {"rmnet50x5_32", {{3, 4, 6, 3}, 5, 32, true}},
      {"rmnet50x6_32", {{3, 4, 6, 3}, 6, 32, true}},    {"rmnet101x6_16", {{3, 4, 23, 3}, 6, 16, true}},
      {"rmnet152x6_32", {{3, 8, 36, 3}, 6, 32, true}},
  });
  return table;
}

}  // namespace

RMNetConfig rmnet_config(const std::string& arch) { return rmnet_table().at(arch); }
bool is_rmnet_arch(const std::string& arch) { return rmnet_table().contains(arch); }
std::vector<std::string> rmnet_arch_names() { return rmnet_table().names(); }

}  // namespace rmnet
