#include "rmnet/models/mobilenet.h"

#include <torch/torch.h>

namespace rmnet {
namespace nn = torch::nn;

int64_t make_divisible(double v, int64_t divisor) {
  int64_t new_v = std::max<int64_t>(divisor, static_cast<int64_t>(v + divisor / 2.0) / divisor * divisor);
  if (new_v < 0.9 * v) new_v += divisor;
  return new_v;
}

ConvBNActImpl::ConvBNActImpl(int64_t in, int64_t out, int64_t kernel, int64_t stride, int64_t groups, bool relu6) {
  conv = nn::Conv2d(nn::Conv2dOptions(in, out, kernel).stride(stride).padding((kernel - 1) / 2).groups(groups).bias(false));
  bn = BatchNorm2d(out);
  push_back(conv);
  push_back(bn);
  if (relu6)
    push_back(nn::ReLU6());
  else
    push_back(nn::ReLU());
}

InvertedResidualImpl::InvertedResidualImpl(int64_t in, int64_t out, int64_t stride_, int64_t expand_ratio,
                                           bool relu6_, bool track_stats, int64_t in_width_, int64_t out_width_)
    : in_channels(in), out_channels(out), stride(stride_), relu6(relu6_) {
  TORCH_CHECK(stride == 1 || stride == 2, "InvertedResidual stride must be 1 or 2 (got ", stride, ")");
  in_width = in_width_ > 0 ? in_width_ : in;
  out_width = out_width_ > 0 ? out_width_ : out;
  TORCH_CHECK(in_width >= in && out_width >= out, "InvertedResidual tensor widths must cover the block widths");
  hidden = expand_ratio == 1 ? in_width : in * expand_ratio;
  // torchvision: a residual when the shape is kept. The widened ("free") variant's t = 1 block has none.
  use_res_connect = stride == 1 && in == out && !(expand_ratio == 1 && out_width != out);
  conv = nn::Sequential();
  if (expand_ratio != 1) {
    ConvBNAct pw(in_width, hidden, 1, 1, 1, relu6);
    expand_conv = pw->conv;
    expand_bn = pw->bn;
    conv->push_back(pw);
  }
  ConvBNAct dw(hidden, hidden, 3, stride, hidden, relu6);
  dw_conv = dw->conv;
  dw_bn = dw->bn;
  conv->push_back(dw);
  project_conv = nn::Conv2d(nn::Conv2dOptions(hidden, out_width, 1).bias(false));
  project_bn = BatchNorm2d(out_width);
  conv->push_back(project_conv);
  conv->push_back(project_bn);
  register_module("conv", conv);
  if (track_stats) init_stats(in, out_width);
}

torch::Tensor InvertedResidualImpl::forward(torch::Tensor x) {
  const bool partial = in_width != in_channels || out_width != out_channels;
  track(partial ? x.narrow(1, 0, in_channels) : x, true);
  auto y = conv->forward(x);
  if (use_res_connect) {
    if (partial)
      y = torch::cat({y.narrow(1, 0, in_channels) + x.narrow(1, 0, in_channels),
                      y.narrow(1, in_channels, out_width - in_channels)},
                     1);
    else
      y = x + y;
  }
  track(y, false);
  return y;
}

MobileNetV2Config mobilenet_v2_config(const std::string& arch) {
  MobileNetV2Config c;
  if (arch == "mobilenet_v2" || arch == "mobilenet_v2_cifar") {
    c.stages = {{1, 16, 1, 1}, {6, 24, 2, 2}, {6, 32, 3, 2}, {6, 64, 4, 2}, {6, 96, 3, 1}, {6, 160, 3, 2}, {6, 320, 1, 1}};
    if (arch == "mobilenet_v2_cifar") {
      c.stem_stride = 1;
      c.stages[1].s = 1;
    }
    return c;
  }
  if (arch == "mobilenet_v2_v1_cifar") {
    // Each block's hidden width + its reserved input = the width of a MobileNetV1 layer; the
    // pw-linear then fuses with the next pw-expand into MobileNetV1's pointwise conv.
    c.stages = {{1, 32, 1, 1}, {2, 32, 1, 2},  {3, 32, 1, 1}, {4, 64, 1, 2}, {3, 64, 1, 1},
                {4, 128, 1, 2}, {3, 128, 5, 1}, {4, 256, 1, 2}, {3, 256, 1, 1}};
    c.stem_channels = 32;
    c.stem_stride = 1;
    c.last_channel = 1024;
    c.free = 4;
    c.round_widths = false;
    return c;
  }
  TORCH_CHECK(false, "unknown MobileNetV2 architecture '", arch, "'");
}

MobileNetV2Impl::MobileNetV2Impl(ModelOptions options, bool cifar)
    : MobileNetV2Impl(std::move(options), mobilenet_v2_config(cifar ? "mobilenet_v2_cifar" : "mobilenet_v2")) {}

namespace {
void init_mobilenet(nn::Module& m) {
  // torchvision's initialisation
  torch::NoGradGuard no_grad;
  for (auto& sub : m.modules(false)) {
    if (auto* c = sub->as<nn::Conv2dImpl>()) {
      nn::init::kaiming_normal_(c->weight, 0.0, torch::kFanOut);
    } else if (auto* bn = sub->as<nn::BatchNorm2dImpl>()) {
      bn->weight.fill_(1.0);
      bn->bias.zero_();
    } else if (auto* l = sub->as<nn::LinearImpl>()) {
      nn::init::normal_(l->weight, 0, 0.01);
      l->bias.zero_();
    }
  }
}
}  // namespace

MobileNetV2Impl::MobileNetV2Impl(ModelOptions options, MobileNetV2Config cfg) : ModelImpl(std::move(options)) {
  input_size_ = cfg.stem_stride == 1 ? 32 : 224;
  const auto& o = options_;
  TORCH_CHECK(o.width_mult() > 0, "MobileNetV2 width_mult must be positive (got ", o.width_mult(), ")");
  TORCH_CHECK(cfg.free >= 1, "MobileNetV2 free factor must be at least 1 (got ", cfg.free, ")");
  const auto width = [&](int64_t c) {
    return cfg.round_widths ? make_divisible(c * o.width_mult()) : std::max<int64_t>(1, c * o.width_mult());
  };
  const bool relu6 = o.relu6();
  int64_t input_channel = width(cfg.stem_channels);
  last_channel = cfg.round_widths ? make_divisible(cfg.last_channel * std::max(1.0, o.width_mult())) : cfg.last_channel;
  features = nn::Sequential();
  features->push_back(ConvBNAct(o.in_channels(), input_channel, 3, cfg.stem_stride, 1, relu6));
  int64_t in_width = input_channel;
  for (const auto& st : cfg.stages) {
    const int64_t out = width(st.c);
    for (int64_t i = 0; i < st.n; ++i) {
      features->push_back(InvertedResidual(input_channel, out, i == 0 ? st.s : 1, st.t, relu6, o.track_block_stats(),
                                           in_width, out * cfg.free));
      input_channel = out;
      in_width = out * cfg.free;
    }
  }
  features->push_back(ConvBNAct(in_width, last_channel, 1, 1, 1, relu6));
  register_module("features", features);
  classifier = nn::Sequential(nn::Dropout(0.2), nn::Linear(last_channel, o.num_classes()));
  register_module("classifier", classifier);
  init_mobilenet(*this);
}

torch::Tensor MobileNetV2Impl::forward(torch::Tensor x) {
  x = features->forward(x);
  x = torch::adaptive_avg_pool2d(x, {1, 1});
  return classifier->forward(torch::flatten(x, 1));
}

MobileNetV1Impl::MobileNetV1Impl(ModelOptions options, bool cifar) : ModelImpl(std::move(options)) {
  input_size_ = cifar ? 32 : 224;
  const auto& o = options_;
  TORCH_CHECK(o.width_mult() > 0, "MobileNetV1 width_mult must be positive (got ", o.width_mult(), ")");
  const auto width = [&](int64_t c) { return std::max<int64_t>(1, c * o.width_mult()); };
  struct Pair {
    int64_t out, stride;  // pointwise output width, depthwise stride
  };
  const std::vector<Pair> pairs = {{64, 1},  {128, 2}, {128, 1}, {256, 2}, {256, 1}, {512, 2},  {512, 1},
                                   {512, 1}, {512, 1}, {512, 1}, {512, 1}, {1024, 2}, {1024, 1}};
  features = nn::Sequential();
  int64_t c = width(32);
  features->push_back(ConvBNAct(o.in_channels(), c, 3, cifar ? 1 : 2, 1, o.relu6()));
  for (const auto& p : pairs) {
    features->push_back(ConvBNAct(c, c, 3, p.stride, c, o.relu6()));
    features->push_back(ConvBNAct(c, width(p.out), 1, 1, 1, o.relu6()));
    c = width(p.out);
  }
  register_module("features", features);
  classifier = register_module("classifier", nn::Linear(c, o.num_classes()));
  init_mobilenet(*this);
}

torch::Tensor MobileNetV1Impl::forward(torch::Tensor x) {
  x = features->forward(x);
  x = torch::adaptive_avg_pool2d(x, {1, 1});
  return classifier(torch::flatten(x, 1));
}

}  // namespace rmnet
