#include "rmnet/models/repvgg.h"

#include <regex>

#include <fmt/format.h>
#include <torch/torch.h>

namespace rmnet {
namespace nn = torch::nn;

ConvBNImpl::ConvBNImpl(int64_t in, int64_t out, int64_t kernel, int64_t stride, int64_t padding, int64_t groups) {
  conv = register_module(
      "conv", nn::Conv2d(nn::Conv2dOptions(in, out, kernel).stride(stride).padding(padding).groups(groups).bias(false)));
  bn = register_module("bn", BatchNorm2d(out));
}

RepVGGBlockImpl::RepVGGBlockImpl(int64_t in, int64_t out, int64_t stride_, bool identity)
    : in_channels(in), out_channels(out), stride(stride_) {
  TORCH_CHECK(stride >= 1, "RepVGG block stride must be positive (got ", stride, ")");
  rbr_dense = register_module("rbr_dense", ConvBN(in, out, 3, stride, 1));
  rbr_1x1 = register_module("rbr_1x1", ConvBN(in, out, 1, stride, 0));
  if (identity && in == out && stride == 1) rbr_identity = register_module("rbr_identity", BatchNorm2d(out));
}

torch::Tensor RepVGGBlockImpl::forward(torch::Tensor x) {
  auto out = rbr_dense(x) + rbr_1x1(x);
  if (rbr_identity) out = out + rbr_identity(x);
  return torch::relu(out);
}

RepVGGImpl::RepVGGImpl(RepVGGConfig config, ModelOptions options)
    : ModelImpl(std::move(options)), config_(std::move(config)) {
  const auto& c = config_;
  TORCH_CHECK(!c.blocks.empty() && c.blocks.size() == c.widths.size() && c.blocks.size() == c.strides.size(),
              "RepVGG config needs blocks, widths and strides per stage");
  int64_t in = options_.in_channels();
  for (size_t s = 0; s < c.blocks.size(); ++s) {
    nn::Sequential stage;
    for (int64_t b = 0; b < c.blocks[s]; ++b) {
      stage->push_back(RepVGGBlock(in, c.widths[s], b == 0 ? c.strides[s] : 1));
      in = c.widths[s];
    }
    stages.push_back(register_module(fmt::format("stage{}", s), stage));
  }
  linear = register_module("linear", nn::Linear(in, options_.num_classes()));
  init_conv_bn(*this);
}

torch::Tensor RepVGGImpl::forward(torch::Tensor x) {
  for (auto& s : stages) x = s->forward(x);
  x = torch::adaptive_avg_pool2d(x, {1, 1});
  return linear(torch::flatten(x, 1));
}

namespace {

struct RepVGGEntry {
  const char* name;
  bool deep;  // B (4, 6, 16, 1) or A (2, 4, 14, 1)
  double a, b;
};
constexpr RepVGGEntry kImageNet[] = {
    {"repvgg_a0", false, 0.75, 2.5}, {"repvgg_a1", false, 1.0, 2.5}, {"repvgg_a2", false, 1.5, 2.75},
    {"repvgg_b0", true, 1.0, 2.5},   {"repvgg_b1", true, 2.0, 4.0},  {"repvgg_b2", true, 2.5, 5.0},
    {"repvgg_b3", true, 3.0, 5.0},
};
constexpr int64_t kCifarDepths[] = {8, 14, 20, 32, 44, 56, 110};

/// Depth D of "repvgg<D>_cifar", or 0 when the name is not of that form.
int64_t cifar_depth(const std::string& arch) {
  static const std::regex re("repvgg([0-9]{1,4})_cifar");
  std::smatch m;
  if (!std::regex_match(arch, m, re)) return 0;
  const int64_t d = std::stoll(m[1]);
  return (d >= 8 && (d - 2) % 6 == 0) ? d : 0;
}

}  // namespace

RepVGGConfig repvgg_config(const std::string& arch) {
  for (const auto& e : kImageNet) {
    if (arch != e.name) continue;
    const auto w = [](double x) { return static_cast<int64_t>(x); };
    RepVGGConfig c;
    c.blocks = e.deep ? std::vector<int64_t>{1, 4, 6, 16, 1} : std::vector<int64_t>{1, 2, 4, 14, 1};
    c.widths = {std::min<int64_t>(64, w(64 * e.a)), w(64 * e.a), w(128 * e.a), w(256 * e.a), w(512 * e.b)};
    c.strides = {2, 2, 2, 2, 2};
    return c;
  }
  if (const int64_t d = cifar_depth(arch)) {
    const int64_t n = (d - 2) / 6;
    return RepVGGConfig{{1, 2 * n, 2 * n, 2 * n}, {16, 16, 32, 64}, {1, 1, 2, 2}};
  }
  TORCH_CHECK(false, "unknown RepVGG architecture '", arch, "'");
}

bool is_repvgg_arch(const std::string& arch) {
  for (const auto& e : kImageNet)
    if (arch == e.name) return true;
  return cifar_depth(arch) > 0;
}

std::vector<std::string> repvgg_arch_names() {
  std::vector<std::string> names;
  for (const auto& e : kImageNet) names.emplace_back(e.name);
  for (auto d : kCifarDepths) names.push_back(fmt::format("repvgg{}_cifar", d));
  return names;
}

}  // namespace rmnet
