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
  bn = nn::BatchNorm2d(out);
  push_back(conv);
  push_back(bn);
  if (relu6)
    push_back(nn::ReLU6());
  else
    push_back(nn::ReLU());
}

InvertedResidualImpl::InvertedResidualImpl(int64_t in, int64_t out, int64_t stride_, int64_t expand_ratio,
                                           bool relu6_, bool track_stats)
    : in_channels(in), out_channels(out), stride(stride_), relu6(relu6_) {
  TORCH_CHECK(stride == 1 || stride == 2, "InvertedResidual stride must be 1 or 2 (got ", stride, ")");
  hidden = in * expand_ratio;
  use_res_connect = stride == 1 && in == out;
  conv = nn::Sequential();
  if (expand_ratio != 1) {
    ConvBNAct pw(in, hidden, 1, 1, 1, relu6);
    expand_conv = pw->conv;
    expand_bn = pw->bn;
    conv->push_back(pw);
  }
  ConvBNAct dw(hidden, hidden, 3, stride, hidden, relu6);
  dw_conv = dw->conv;
  dw_bn = dw->bn;
  conv->push_back(dw);
  project_conv = nn::Conv2d(nn::Conv2dOptions(hidden, out, 1).bias(false));
  project_bn = nn::BatchNorm2d(out);
  conv->push_back(project_conv);
  conv->push_back(project_bn);
  register_module("conv", conv);
  if (track_stats) init_stats(in, out);
}

torch::Tensor InvertedResidualImpl::forward(torch::Tensor x) {
  track(x, true);
  auto y = conv->forward(x);
  if (use_res_connect) y = x + y;
  track(y, false);
  return y;
}

MobileNetV2Impl::MobileNetV2Impl(ModelOptions options, bool cifar) : ModelImpl(std::move(options)) {
  const auto& o = options_;
  TORCH_CHECK(o.width_mult() > 0, "MobileNetV2 width_mult must be positive (got ", o.width_mult(), ")");
  struct Setting {
    int64_t t, c, n, s;
  };
  std::vector<Setting> settings = {{1, 16, 1, 1},  {6, 24, 2, 2},  {6, 32, 3, 2}, {6, 64, 4, 2},
                                   {6, 96, 3, 1},  {6, 160, 3, 2}, {6, 320, 1, 1}};
  if (cifar) settings[1].s = 1;
  const bool relu6 = o.relu6();
  int64_t input_channel = make_divisible(32 * o.width_mult());
  last_channel = make_divisible(1280 * std::max(1.0, o.width_mult()));
  features = nn::Sequential();
  features->push_back(ConvBNAct(o.in_channels(), input_channel, 3, cifar ? 1 : 2, 1, relu6));
  for (const auto& st : settings) {
    const int64_t out = make_divisible(st.c * o.width_mult());
    for (int64_t i = 0; i < st.n; ++i) {
      features->push_back(
          InvertedResidual(input_channel, out, i == 0 ? st.s : 1, st.t, relu6, o.track_block_stats()));
      input_channel = out;
    }
  }
  features->push_back(ConvBNAct(input_channel, last_channel, 1, 1, 1, relu6));
  register_module("features", features);
  classifier = nn::Sequential(nn::Dropout(0.2), nn::Linear(last_channel, o.num_classes()));
  register_module("classifier", classifier);

  // torchvision's initialisation
  torch::NoGradGuard no_grad;
  for (auto& m : modules(false)) {
    if (auto* c = m->as<nn::Conv2dImpl>()) {
      nn::init::kaiming_normal_(c->weight, 0.0, torch::kFanOut);
    } else if (auto* bn = m->as<nn::BatchNorm2dImpl>()) {
      bn->weight.fill_(1.0);
      bn->bias.zero_();
    } else if (auto* l = m->as<nn::LinearImpl>()) {
      nn::init::normal_(l->weight, 0, 0.01);
      l->bias.zero_();
    }
  }
}

torch::Tensor MobileNetV2Impl::forward(torch::Tensor x) {
  x = features->forward(x);
  x = torch::adaptive_avg_pool2d(x, {1, 1});
  return classifier->forward(torch::flatten(x, 1));
}

}  // namespace rmnet
