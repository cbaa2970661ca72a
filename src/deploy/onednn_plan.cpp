// The onednn runtime's compilation (see onednn.cpp; the steps are declared in onednn_steps.h):
// once, from the PlainNet's layers, the chain is grouped into steps:
//   Conv [+ BatchNorm] [+ activation]  ->  one mkldnn::_convolution_pointwise call. BN is folded
//       into the weights (scale = gamma / sqrt(var + eps), in float64); the activation becomes the
//       oneDNN post-op where it is one: ReLU -> "relu", a clamp with the same bounds on every channel
//       -> "hardtanh"(lo, hi) (or "relu" for [0, inf), nothing for (-inf, inf)), PReLU with every
//       slope 0 -> "relu". What oneDNN's post-ops cannot express exactly runs as the next step, in
//       place: a per-channel clamp (ReLU6 networks after the RM operation: [0, 6] on the block's
//       own channels, (-inf, inf) on the reserved ones), PReLU with mixed slopes (slopes in {0, 1}
//       become such a clamp).
//   BatchNorm not after a conv -> an in-place per-channel affine; ReLU/clamp/PReLU alone -> in place;
//   MaxPool -> at::max_pool2d (channels-last kernel; a oneDNN pooling primitive on the direct path);
//   AvgPool + Flatten -> a mean over H, W;
//   Linear -> at::linear; SE -> squeeze, excitation and an in-place scale of the first channels.
#include <cmath>
#include <cstddef>
#include <limits>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <fmt/format.h>
#include <torch/torch.h>

#include "onednn_steps.h"
#include "rmnet/ir/chain.h"

namespace rmnet::detail {
namespace {

using torch::Tensor;

constexpr double kInf = std::numeric_limits<double>::infinity();

/// A per-channel view for channels-last broadcasting.
Tensor channel_view(const Tensor& t, torch::ScalarType dt) { return t.detach().to(torch::kCPU, dt).reshape({1, -1, 1, 1}).contiguous(); }

bool is_uniform(const Tensor& t) { return t.numel() > 0 && t.eq(t.flatten()[0]).all().item<bool>(); }

/// A clamp of (-inf, inf): the identity, no step at all.
bool is_identity(const Step& s) { return s.kind == StepKind::Clamp && s.lo == -kInf && s.hi == kInf; }

}  // namespace

std::string act_name(const Step& s) {
  if (s.attr == "relu") return " + relu";
  if (s.attr == "hardtanh") return fmt::format(" + clamp[{:g}, {:g}]", s.scalars[0], s.scalars[1]);
  return "";
}

bool clamp_as_post_op(Step& conv, double lo, double hi) {
  if (lo == -kInf && hi == kInf) return true;  // the identity: nothing to do
  if (lo == 0.0 && hi == kInf) {
    conv.attr = "relu";
    return true;
  }
  if (!std::isfinite(lo) || !std::isfinite(hi)) return false;
  conv.attr = "hardtanh";
  conv.scalars = {lo, hi};
  conv.op_scalars = c10::List<std::optional<at::Scalar>>();
  for (double v : conv.scalars) conv.op_scalars.push_back(at::Scalar(v));
  return true;
}

std::string clamp_channels_name(const Tensor& lo, const Tensor& hi) {
  const auto clipped = (lo.isfinite() | hi.isfinite()).sum().item<int64_t>();
  return fmt::format("per-channel clamp ({} of {} channels bounded, in place)", clipped, lo.numel());
}

void OneDnnExecutor::compile(const PlainNetImpl& net) {
  steps_ = compile_chain(net, dtype_);
  num_convs_ = 0;
  for (const auto& s : steps_) num_convs_ += s.kind == StepKind::Conv;
  // Linear steps: their weights packed per input shape after the convs' (Packed[num_convs_ + k])
  size_t k = 0;
  for (auto& s : steps_)
    if (s.kind == StepKind::Linear) s.conv_index = num_convs_ + k++;
}

std::vector<Step> compile_chain(const PlainNetImpl& net, torch::ScalarType dtype) {
  torch::NoGradGuard no_grad;
  std::vector<Step> steps;
  size_t num_convs = 0;
  const auto& specs = net.specs();
  const size_t n = specs.size();
  auto dbl = [](const Tensor& t) { return t.detach().to(torch::kCPU, torch::kDouble); };
  for (size_t i = 0; i < n; ++i) {
    const auto& sp = specs[i];
    Step s;
    s.first = s.last = i;
    switch (sp.kind) {
      case LayerKind::Conv: {
        auto conv = net.layer_as<torch::nn::Conv2dImpl>(i);
        s.kind = StepKind::Conv;
        s.in = sp.in_channels;
        s.out = sp.out_channels;
        s.kernel = sp.kernel;
        s.stride = sp.stride;
        s.padding = sp.padding;
        s.groups = sp.groups;
        // BN folded here rather than by fold_batchnorm (convert/fuse.h, the same formula) so that
        // every step keeps the source network's layer indices for the plan and the profile
        Tensor w = dbl(conv->weight);
        Tensor b = conv->bias.defined() ? dbl(conv->bias) : Tensor();
        if (i + 1 < n && specs[i + 1].kind == LayerKind::BatchNorm) {
          const auto bn = ir::BNParams::from(*net.layer_as<torch::nn::BatchNorm2dImpl>(i + 1));
          w = w * bn.scale().view({-1, 1, 1, 1});
          b = bn.fold_bias(b);
          s.last = ++i;
        }
        s.weight = w.to(dtype).contiguous();
        if (b.defined()) s.bias = b.to(dtype).contiguous();
        s.conv_index = num_convs++;
        s.name = fmt::format("conv {}x{} s{} {}->{}{}", s.kernel, s.kernel, s.stride, s.in, s.out,
                             s.groups > 1 ? fmt::format(" g{}", s.groups) : "");
        // the activation as a post-op where oneDNN expresses it exactly
        std::optional<Step> rest;
        if (i + 1 < n) {
          const auto& a = specs[i + 1];
          if (a.kind == LayerKind::ReLU) {
            s.attr = "relu";
            s.last = ++i;
          } else if (a.kind == LayerKind::Clamp || a.kind == LayerKind::PReLU) {
            auto act = activation_step(net, i + 1, dtype);
            s.last = ++i;
            const bool uniform = act.kind == StepKind::ReLU || act.kind == StepKind::Clamp;
            if (!uniform || !clamp_as_post_op(s, act.kind == StepKind::ReLU ? 0.0 : act.lo,
                                              act.kind == StepKind::ReLU ? kInf : act.hi))
              rest = act;  // runs in place after the conv
          }
        }
        s.name += act_name(s);
        steps.push_back(std::move(s));
        if (rest) steps.push_back(std::move(*rest));
        break;
      }
      case LayerKind::BatchNorm: {
        const auto bn = ir::BNParams::from(*net.layer_as<torch::nn::BatchNorm2dImpl>(i));
        s.kind = StepKind::Affine;
        s.scale = channel_view(bn.scale(), dtype);
        s.shift = channel_view(bn.shift(), dtype);
        s.name = fmt::format("batchnorm {} (in place)", sp.out_channels);
        steps.push_back(std::move(s));
        break;
      }
      case LayerKind::ReLU:
      case LayerKind::Clamp:
      case LayerKind::PReLU: {
        auto act = activation_step(net, i, dtype);
        if (!is_identity(act)) steps.push_back(std::move(act));
        break;
      }
      case LayerKind::MaxPool:
        s.kind = StepKind::MaxPool;
        s.kernel = sp.kernel;
        s.stride = sp.stride;
        s.padding = sp.padding;
        s.name = fmt::format("maxpool {}x{} s{} p{}", sp.kernel, sp.kernel, sp.stride, sp.padding);
        steps.push_back(std::move(s));
        break;
      case LayerKind::AvgPool:
        if (i + 1 < n && specs[i + 1].kind == LayerKind::Flatten) {
          s.kind = StepKind::MeanFlatten;
          s.last = ++i;
          s.name = "global average pool + flatten";
        } else {
          s.kind = StepKind::AvgPool;
          s.name = "global average pool";
        }
        steps.push_back(std::move(s));
        break;
      case LayerKind::Flatten:
        s.kind = StepKind::Flatten;
        s.name = "flatten";
        steps.push_back(std::move(s));
        break;
      case LayerKind::Linear: {
        auto lin = net.layer_as<torch::nn::LinearImpl>(i);
        s.kind = StepKind::Linear;
        s.in = sp.in_channels;
        s.out = sp.out_channels;
        s.weight = lin->weight.detach().to(torch::kCPU, dtype).contiguous();
        if (lin->bias.defined()) s.bias = lin->bias.detach().to(torch::kCPU, dtype).contiguous();
        s.name = fmt::format("linear {}->{}", sp.in_channels, sp.out_channels);
        steps.push_back(std::move(s));
        break;
      }
      case LayerKind::SE: {
        auto se = net.layer_as<ChannelSEImpl>(i);
        s.kind = StepKind::SE;
        s.scaled = sp.scaled;
        auto cvt = [&](const Tensor& t) { return t.detach().to(torch::kCPU, dtype).contiguous(); };
        s.w1 = cvt(se->w1);
        s.b1 = cvt(se->b1);
        s.w2 = cvt(se->w2);
        s.b2 = cvt(se->b2);
        s.name = fmt::format("squeeze-excitation on {} of {} channels (in place)", sp.scaled, sp.out_channels);
        steps.push_back(std::move(s));
        break;
      }
    }
  }  return steps;
}

Step activation_step(const PlainNetImpl& net, size_t i, torch::ScalarType dtype) {
  const auto& sp = net.spec(i);
  Step s;
  s.first = s.last = i;
  if (sp.kind == LayerKind::ReLU) {
    s.kind = StepKind::ReLU;
    s.name = "relu (in place)";
    return s;
  }
  Tensor lo, hi;
  if (sp.kind == LayerKind::Clamp) {
    auto c = net.layer_as<ChannelClampImpl>(i);
    lo = c->min.detach().to(torch::kCPU, torch::kDouble);
    hi = c->max.detach().to(torch::kCPU, torch::kDouble);
  } else {  // PReLU
    auto p = net.layer_as<torch::nn::PReLUImpl>(i);
    const auto a = p->weight.detach().to(torch::kCPU, torch::kDouble).flatten();
    const bool zero_one = (a.eq(0) | a.eq(1)).all().item<bool>();
    if (!zero_one) {
      s.kind = StepKind::PReLU;
      s.slope = p->weight.detach().to(torch::kCPU, dtype).contiguous();
      s.name = fmt::format("prelu {}", sp.out_channels);
      return s;
    }
    // slope 0 -> max(x, 0); slope 1 -> x: a per-channel clamp [0 or -inf, inf]
    lo = torch::where(a.eq(0), torch::zeros_like(a), torch::full_like(a, -kInf));
    hi = torch::full_like(a, kInf);
  }
  if (is_uniform(lo) && is_uniform(hi)) {
    const double l = lo.flatten()[0].item<double>(), h = hi.flatten()[0].item<double>();
    if (l == 0.0 && h == kInf) {
      s.kind = StepKind::ReLU;
      s.name = "relu (in place)";
    } else {
      s.kind = StepKind::Clamp;
      s.lo = l;
      s.hi = h;
      s.name = fmt::format("clamp [{:g}, {:g}] (in place)", l, h);
    }
    return s;
  }
  s.kind = StepKind::ClampChannels;
  s.lo_t = channel_view(lo, dtype);
  s.hi_t = channel_view(hi, dtype);
  s.name = clamp_channels_name(lo, hi);
  return s;
}

}  // namespace rmnet::detail
