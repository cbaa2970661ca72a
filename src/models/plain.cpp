#include "rmnet/models/plain.h"

#include "rmnet/ir/traits.h"

#include <limits>
#include <sstream>

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <torch/torch.h>

namespace rmnet {
LayerSpec LayerSpec::conv(int64_t in, int64_t out, int64_t kernel, int64_t stride, int64_t padding,
                          int64_t groups, bool bias) {
  LayerSpec s;
  s.kind = LayerKind::Conv;
  s.in_channels = in;
  s.out_channels = out;
  s.kernel = kernel;
  s.stride = stride;
  s.padding = padding;
  s.groups = groups;
  s.bias = bias;
  return s;
}
LayerSpec LayerSpec::batchnorm(int64_t channels, double eps, double momentum) {
  LayerSpec s;
  s.kind = LayerKind::BatchNorm;
  s.out_channels = channels;
  s.eps = eps;
  s.momentum = momentum;
  return s;
}
LayerSpec LayerSpec::relu() { return LayerSpec{}; }
LayerSpec LayerSpec::prelu(int64_t channels) {
  LayerSpec s;
  s.kind = LayerKind::PReLU;
  s.out_channels = channels;
  return s;
}
LayerSpec LayerSpec::clamp(int64_t channels) {
  LayerSpec s;
  s.kind = LayerKind::Clamp;
  s.out_channels = channels;
  return s;
}
LayerSpec LayerSpec::maxpool(int64_t kernel, int64_t stride, int64_t padding) {
  LayerSpec s;
  s.kind = LayerKind::MaxPool;
  s.kernel = kernel;
  s.stride = stride;
  s.padding = padding;
  return s;
}
LayerSpec LayerSpec::avgpool() {
  LayerSpec s;
  s.kind = LayerKind::AvgPool;
  return s;
}
LayerSpec LayerSpec::flatten() {
  LayerSpec s;
  s.kind = LayerKind::Flatten;
  return s;
}
LayerSpec LayerSpec::linear(int64_t in, int64_t out, bool bias) {
  LayerSpec s;
  s.kind = LayerKind::Linear;
  s.in_channels = in;
  s.out_channels = out;
  s.bias = bias;
  return s;
}

LayerSpec LayerSpec::se(int64_t channels, int64_t scaled, int64_t hidden) {
  LayerSpec s;
  s.kind = LayerKind::SE;
  s.out_channels = channels;
  s.scaled = scaled;
  s.hidden = hidden;
  return s;
}

ChannelClampImpl::ChannelClampImpl(int64_t channels) {
  TORCH_CHECK(channels >= 1, "ChannelClamp needs at least one channel (got ", channels, ")");
  min = register_buffer("min", torch::zeros({channels}));
  max = register_buffer("max", torch::full({channels}, std::numeric_limits<float>::infinity()));
}

torch::Tensor ChannelClampImpl::forward(const torch::Tensor& x) {
  TORCH_CHECK(x.dim() >= 2 && x.size(1) == min.size(0), "ChannelClamp(", min.size(0),
              ") got an input with ", x.dim() >= 2 ? x.size(1) : 0, " channels");
  std::vector<int64_t> shape(x.dim(), 1);
  shape[1] = min.size(0);
  return torch::clamp(x, min.view(shape), max.view(shape));
}

ChannelSEImpl::ChannelSEImpl(int64_t channels_, int64_t scaled_, int64_t hidden) : channels(channels_), scaled(scaled_) {
  TORCH_CHECK(scaled >= 1 && scaled <= channels && hidden >= 1, "SE layer needs 1 <= scaled <= channels and hidden >= 1 (got ",
              scaled, " of ", channels, ", hidden ", hidden, ")");
  const double bound = 1.0 / std::sqrt(static_cast<double>(scaled));
  w1 = register_parameter("w1", torch::empty({hidden, scaled}).uniform_(-bound, bound));
  b1 = register_parameter("b1", torch::zeros({hidden}));
  w2 = register_parameter("w2", torch::empty({scaled, hidden}).uniform_(-bound, bound));
  b2 = register_parameter("b2", torch::zeros({scaled}));
}

torch::Tensor ChannelSEImpl::forward(const torch::Tensor& x) {
  TORCH_CHECK(x.dim() == 4 && x.size(1) == channels, "SE(", channels, ") got an input of shape ", x.sizes());
  auto a = scaled == channels ? x : x.narrow(1, 0, scaled);
  auto s = torch::sigmoid(torch::linear(torch::relu(torch::linear(a.mean({2, 3}), w1, b1)), w2, b2));
  auto y = a * s.unsqueeze(2).unsqueeze(3);
  return scaled == channels ? y : torch::cat({y, x.narrow(1, scaled, channels - scaled)}, 1);
}

int64_t PlainNetImpl::input_size() const {
  if (metadata_.count("input_size") || metadata_.count("verify_input_size")) return ModelImpl::input_size();
  for (const auto& s : specs_)
    if (s.kind == LayerKind::MaxPool) return 224;
  return 32;
}

PlainNetImpl::PlainNetImpl(std::vector<LayerSpec> layers, ModelOptions options)
    : ModelImpl(std::move(options)), specs_(std::move(layers)) {
  check_chain(specs_, options_.in_channels());
  layers_.reserve(specs_.size());
  for (size_t i = 0; i < specs_.size(); ++i)
    layers_.push_back(register_module(std::to_string(i), ir::traits(specs_[i].kind).make(specs_[i])));
}

const LayerOrigin& PlainNetImpl::origin(size_t i) const {
  static const LayerOrigin unknown;
  TORCH_CHECK(i < specs_.size(), "plain layer ", i, " does not exist (the chain has ", specs_.size(), " layers)");
  return provenance_.empty() ? unknown : provenance_[i];
}

std::shared_ptr<ModelImpl> PlainNetImpl::make_like() const {
  auto net = std::make_shared<PlainNetImpl>(specs_, options_);
  if (!provenance_.empty()) net->set_provenance(provenance_);
  return net;
}

void PlainNetImpl::set_provenance(std::vector<LayerOrigin> origins) {
  if (!origins.empty()) {
    TORCH_CHECK(origins.size() == specs_.size(), "provenance has ", origins.size(), " entries for a chain of ",
                specs_.size(), " layers");
    int64_t c = options_.in_channels();
    for (size_t i = 0; i < specs_.size(); ++i) {
      if (auto out = specs_[i].output_channels()) c = *out;
      TORCH_CHECK(!origins[i].known() || origins[i].channels() == c, "provenance of plain layer ", i, " (",
                  specs_[i].describe(), ") describes ", origins[i].channels(), " channels, the layer outputs ", c);
    }
  }
  provenance_ = std::move(origins);
}

torch::Tensor PlainNetImpl::forward(torch::Tensor x) { return forward_range(std::move(x), 0, specs_.size()); }

torch::Tensor PlainNetImpl::forward_range(torch::Tensor x, size_t begin, size_t end) {
  end = std::min(end, specs_.size());
  for (size_t i = begin; i < end; ++i) {
    if (!frozen_bn_.empty() && is_training()) {
      if (const auto it = frozen_bn_.find(i); it != frozen_bn_.end()) {
        // the frozen channels as in eval mode: (x - mean) / sqrt(var + eps) * gamma + beta
        auto bn = std::dynamic_pointer_cast<torch::nn::BatchNorm2dImpl>(layers_[i]);
        const auto& c = it->second;
        const auto xs = x.index_select(1, c);
        const auto view = [&](const torch::Tensor& t) { return t.index_select(0, c).view({1, -1, 1, 1}); };
        const auto ys = (xs - view(bn->running_mean)) / (view(bn->running_var) + bn->options.eps()).sqrt() *
                            view(bn->weight) + view(bn->bias);
        x = bn->forward(x).index_copy(1, c, ys);
        continue;
      }
    }
    x = ir::traits(specs_[i].kind).forward(*layers_[i], x);
  }
  return x;
}

void PlainNetImpl::set_frozen_bn_channels(size_t i, torch::Tensor channels) {
  TORCH_CHECK(i < specs_.size() && specs_[i].kind == LayerKind::BatchNorm, "set_frozen_bn_channels: layer ", i,
              " is not a BatchNorm");
  if (!channels.defined() || channels.numel() == 0) {
    frozen_bn_.erase(i);
    return;
  }
  frozen_bn_[i] = channels.to(torch::kLong).to(layers_[i]->buffers().front().device());
}

std::string PlainNetImpl::summary(const std::vector<int64_t>& input_shape) const {
  std::ostringstream os;
  std::vector<int64_t> shape = input_shape;
  const bool shapes = !shape.empty();
  os << fmt::format("{:>4}  {:<44} {:>20} {:>12} {:>14}\n", "#", "layer", shapes ? "output" : "", "params",
                    shapes ? "MACs" : "");
  int64_t total = 0, total_macs = 0;
  for (size_t i = 0; i < specs_.size(); ++i) {
    const auto& s = specs_[i];
    int64_t macs = 0;  // per image: conv and linear multiply-adds (the SE's two small linears too)
    // shapes follow [N, C, H, W] up to the Flatten, then [N, F] into the Linear
    const bool linear = s.kind == LayerKind::Linear;
    if ((shape.size() == 4 && !linear) || (shape.size() == 2 && linear)) {
      const auto& t = ir::traits(s.kind);
      macs = t.macs(s, shape);
      shape = t.output_shape(s, shape);
    }
    int64_t n = count_parameters(*layers_[i]);
    total += n;
    total_macs += macs;
    std::string shape_s;
    if (shapes) shape_s = fmt::format("[{}]", fmt::join(shape, ", "));
    os << fmt::format("{:>4}  {:<44} {:>20} {:>12} {:>14}\n", i, s.describe(), shape_s, n,
                      shapes ? std::to_string(macs) : "");
  }
  os << fmt::format("total parameters: {}", total);
  if (shapes) os << fmt::format(", MACs per image: {}", total_macs);
  os << "\n";
  return os.str();
}

}  // namespace rmnet
