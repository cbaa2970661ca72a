#include "rmnet/models/plain.h"

#include <limits>
#include <sstream>

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <torch/torch.h>

namespace rmnet {
namespace {

struct KindName {
  LayerKind kind;
  const char* name;
};
constexpr KindName kKindNames[] = {
    {LayerKind::Conv, "conv"},       {LayerKind::BatchNorm, "batchnorm"},
    {LayerKind::ReLU, "relu"},       {LayerKind::PReLU, "prelu"},
    {LayerKind::Clamp, "clamp"},     {LayerKind::MaxPool, "maxpool"},
    {LayerKind::AvgPool, "avgpool"}, {LayerKind::Flatten, "flatten"},
    {LayerKind::Linear, "linear"},   {LayerKind::SE, "se"},
};

std::shared_ptr<torch::nn::Module> make_layer(const LayerSpec& s) {
  namespace nn = torch::nn;
  switch (s.kind) {
    case LayerKind::Conv:
      return std::make_shared<nn::Conv2dImpl>(nn::Conv2dOptions(s.in_channels, s.out_channels, s.kernel)
                                                  .stride(s.stride)
                                                  .padding(s.padding)
                                                  .groups(s.groups)
                                                  .bias(s.bias));
    case LayerKind::BatchNorm:
      return std::make_shared<BatchNorm2dImpl>(
          nn::BatchNorm2dOptions(s.out_channels).eps(s.eps).momentum(s.momentum));
    case LayerKind::ReLU:
      return std::make_shared<nn::ReLUImpl>();
    case LayerKind::PReLU:
      return std::make_shared<nn::PReLUImpl>(nn::PReLUOptions().num_parameters(s.out_channels));
    case LayerKind::Clamp:
      return std::make_shared<ChannelClampImpl>(s.out_channels);
    case LayerKind::MaxPool:
      return std::make_shared<nn::MaxPool2dImpl>(
          nn::MaxPool2dOptions(s.kernel).stride(s.stride).padding(s.padding));
    case LayerKind::AvgPool:
      return std::make_shared<nn::AdaptiveAvgPool2dImpl>(nn::AdaptiveAvgPool2dOptions({1, 1}));
    case LayerKind::Flatten:
      return std::make_shared<nn::FlattenImpl>();
    case LayerKind::Linear:
      return std::make_shared<nn::LinearImpl>(nn::LinearOptions(s.in_channels, s.out_channels).bias(s.bias));
    case LayerKind::SE:
      return std::make_shared<ChannelSEImpl>(s.out_channels, s.scaled, s.hidden);
  }
  TORCH_CHECK(false, "unknown layer kind");
}

}  // namespace

std::string to_string(LayerKind kind) {
  for (const auto& kn : kKindNames)
    if (kn.kind == kind) return kn.name;
  return "?";
}

LayerKind layer_kind_from_string(const std::string& name) {
  for (const auto& kn : kKindNames)
    if (name == kn.name) return kn.kind;
  TORCH_CHECK(false, "unknown plain layer type '", name, "'");
}

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

std::optional<int64_t> LayerSpec::output_channels() const {
  switch (kind) {
    case LayerKind::Conv:
    case LayerKind::Linear:
      return out_channels;
    default:
      return std::nullopt;
  }
}

std::string LayerSpec::describe() const {
  switch (kind) {
    case LayerKind::Conv:
      return fmt::format("Conv2d({}, {}, k={}, s={}, p={}, g={}{})", in_channels, out_channels, kernel,
                         stride, padding, groups, bias ? ", bias" : "");
    case LayerKind::BatchNorm:
      return fmt::format("BatchNorm2d({}, eps={:g})", out_channels, eps);
    case LayerKind::ReLU:
      return "ReLU";
    case LayerKind::PReLU:
      return fmt::format("PReLU({})", out_channels);
    case LayerKind::Clamp:
      return fmt::format("ChannelClamp({})", out_channels);
    case LayerKind::MaxPool:
      return fmt::format("MaxPool2d(k={}, s={}, p={})", kernel, stride, padding);
    case LayerKind::AvgPool:
      return "AdaptiveAvgPool2d(1)";
    case LayerKind::Flatten:
      return "Flatten";
    case LayerKind::Linear:
      return fmt::format("Linear({}, {}{})", in_channels, out_channels, bias ? ", bias" : "");
    case LayerKind::SE:
      return scaled == out_channels ? fmt::format("SE({}, hidden={})", out_channels, hidden)
                                    : fmt::format("SE({} of {}, hidden={})", scaled, out_channels, hidden);
  }
  return "?";
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

void check_chain(const std::vector<LayerSpec>& layers, int64_t in_channels) {
  int64_t c = in_channels;
  bool flat = false;
  for (size_t i = 0; i < layers.size(); ++i) {
    const auto& s = layers[i];
    auto where = [&] { return fmt::format("plain layer {} ({})", i, s.describe()); };
    switch (s.kind) {
      case LayerKind::Conv:
        TORCH_CHECK(!flat, where(), " follows a Flatten");
        TORCH_CHECK(s.in_channels == c, where(), " expects ", s.in_channels, " input channels, but ",
                    c, " arrive");
        TORCH_CHECK(s.groups >= 1 && s.in_channels % s.groups == 0 && s.out_channels % s.groups == 0,
                    where(), ": groups must divide the input and output channels");
        TORCH_CHECK(s.kernel >= 1 && s.stride >= 1 && s.padding >= 0, where(), ": bad geometry");
        c = s.out_channels;
        break;
      case LayerKind::Linear:
        TORCH_CHECK(s.in_channels == c, where(), " expects ", s.in_channels, " features, but ", c,
                    " arrive");
        c = s.out_channels;
        break;
      case LayerKind::BatchNorm:
      case LayerKind::PReLU:
      case LayerKind::Clamp:
        TORCH_CHECK(s.out_channels == c, where(), " has ", s.out_channels, " channels, but ", c,
                    " arrive");
        break;
      case LayerKind::SE:
        TORCH_CHECK(!flat, where(), " follows a Flatten");
        TORCH_CHECK(s.out_channels == c, where(), " has ", s.out_channels, " channels, but ", c, " arrive");
        TORCH_CHECK(s.scaled >= 1 && s.scaled <= c && s.hidden >= 1, where(), ": bad SE widths");
        break;
      case LayerKind::Flatten:
        flat = true;
        break;
      default:
        break;
    }
    TORCH_CHECK(c >= 1, where(), " leaves no channels");
  }
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
    layers_.push_back(register_module(std::to_string(i), make_layer(specs_[i])));
}

const LayerOrigin& PlainNetImpl::origin(size_t i) const {
  static const LayerOrigin unknown;
  TORCH_CHECK(i < specs_.size(), "plain layer ", i, " does not exist (the chain has ", specs_.size(), " layers)");
  return provenance_.empty() ? unknown : provenance_[i];
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
    auto* m = layers_[i].get();
    switch (specs_[i].kind) {
      case LayerKind::Conv:
        x = static_cast<torch::nn::Conv2dImpl*>(m)->forward(x);
        break;
      case LayerKind::BatchNorm:
        x = static_cast<BatchNorm2dImpl*>(m)->forward(x);
        break;
      case LayerKind::ReLU:
        x = torch::relu(x);
        break;
      case LayerKind::PReLU:
        x = static_cast<torch::nn::PReLUImpl*>(m)->forward(x);
        break;
      case LayerKind::Clamp:
        x = static_cast<ChannelClampImpl*>(m)->forward(x);
        break;
      case LayerKind::MaxPool:
        x = static_cast<torch::nn::MaxPool2dImpl*>(m)->forward(x);
        break;
      case LayerKind::AvgPool:
        x = static_cast<torch::nn::AdaptiveAvgPool2dImpl*>(m)->forward(x);
        break;
      case LayerKind::Flatten:
        x = torch::flatten(x, 1);
        break;
      case LayerKind::Linear:
        x = static_cast<torch::nn::LinearImpl*>(m)->forward(x);
        break;
      case LayerKind::SE:
        x = static_cast<ChannelSEImpl*>(m)->forward(x);
        break;
    }
  }
  return x;
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
    if (shape.size() == 4) {
      auto out_hw = [&](int64_t h) { return (h + 2 * s.padding - s.kernel) / s.stride + 1; };
      switch (s.kind) {
        case LayerKind::Conv:
          shape = {shape[0], s.out_channels, out_hw(shape[2]), out_hw(shape[3])};
          macs = s.out_channels * (s.in_channels / s.groups) * s.kernel * s.kernel * shape[2] * shape[3];
          break;
        case LayerKind::SE:
          macs = 2 * s.scaled * s.hidden;
          break;
        case LayerKind::MaxPool:
          shape = {shape[0], shape[1], out_hw(shape[2]), out_hw(shape[3])};
          break;
        case LayerKind::AvgPool:
          shape = {shape[0], shape[1], 1, 1};
          break;
        case LayerKind::Flatten:
          shape = {shape[0], shape[1] * shape[2] * shape[3]};
          break;
        default:
          break;
      }
    } else if (shape.size() == 2 && s.kind == LayerKind::Linear) {
      shape = {shape[0], s.out_channels};
      macs = s.in_channels * s.out_channels;
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
