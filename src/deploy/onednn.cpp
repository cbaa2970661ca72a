// The onednn runtime: rmnet's own executor for a plain chain over LibTorch's registered fused
// oneDNN operators (the ones Inductor's CPU code calls), from C++, without TorchScript.
//
// Compilation (once, from the PlainNet's layers) groups the chain into steps:
//   Conv [+ BatchNorm] [+ activation]  ->  one mkldnn::_convolution_pointwise call. BN is folded
//       into the weights (scale = gamma / sqrt(var + eps), in float64); the activation becomes the
//       oneDNN post-op where it is one: ReLU -> "relu", a clamp with the same bounds on every channel
//       -> "hardtanh"(lo, hi) (or "relu" for [0, inf), nothing for (-inf, inf)), PReLU with every
//       slope 0 -> "relu". What oneDNN's post-ops cannot express exactly runs as the next step, in
//       place: a per-channel clamp (ReLU6 networks after the RM operation: [0, 6] on the block's
//       own channels, (-inf, inf) on the reserved ones), PReLU with mixed slopes (slopes in {0, 1}
//       become such a clamp).
//   BatchNorm not after a conv -> an in-place per-channel affine; ReLU/clamp/PReLU alone -> in place;
//   MaxPool -> at::max_pool2d (channels-last kernel); AvgPool + Flatten -> a mean over H, W;
//   Linear -> at::linear; SE -> squeeze, excitation and an in-place scale of the first channels.
// Activations are channels-last from the first conv to the pooling. Conv weights are prepacked for
// the input shape by mkldnn::_reorder_convolution_weight, once per shape (every conv's input shape
// follows from the network's by shape inference), and cached per shape, least recently used
// evicted; a new batch size or resolution packs anew.
#include <chrono>
#include <cmath>
#include <limits>
#include <list>
#include <mutex>
#include <sstream>

#include <ATen/core/dispatch/Dispatcher.h>
#include <fmt/format.h>
#include <torch/torch.h>

#include "executors.h"

namespace rmnet::detail {
namespace {

using torch::Tensor;

enum class StepKind { Conv, Affine, ReLU, Clamp, ClampChannels, PReLU, MaxPool, MeanFlatten, AvgPool, Flatten, Linear, SE };

struct Step {
  StepKind kind = StepKind::ReLU;
  size_t first = 0, last = 0;  // plain layers executed
  // Conv
  Tensor weight, bias;
  int64_t in = 0, out = 0, kernel = 1, stride = 1, padding = 0, groups = 1;
  std::string attr = "none";
  std::vector<double> scalars;                      // post-op scalars (hardtanh bounds)
  c10::List<std::optional<at::Scalar>> op_scalars;  // the same, built once for the operator
  size_t conv_index = 0;
  // Clamp (uniform): lo/hi; ClampChannels: lo_t/hi_t [1, C, 1, 1]; PReLU: slope [C];
  // Affine: scale/shift [1, C, 1, 1]
  double lo = 0.0, hi = 0.0;
  Tensor lo_t, hi_t, slope, scale, shift;
  // Linear: weight/bias; SE: w1, b1, w2, b2, scaled
  Tensor w1, b1, w2, b2;
  int64_t scaled = 0;
  std::string name;
};

struct Ops {
  c10::TypedOperatorHandle<Tensor(const Tensor&, const Tensor&, const std::optional<Tensor>&, at::IntArrayRef,
                                  at::IntArrayRef, at::IntArrayRef, int64_t, c10::string_view,
                                  c10::List<std::optional<at::Scalar>>, std::optional<c10::string_view>)>
      conv;
  c10::TypedOperatorHandle<Tensor(const Tensor&, at::IntArrayRef, at::IntArrayRef, at::IntArrayRef, int64_t,
                                  at::OptionalIntArrayRef)>
      reorder;
  static const Ops& get() {
    static const Ops ops = [] {
      auto& d = c10::Dispatcher::singleton();
      Ops o{d.findSchemaOrThrow("mkldnn::_convolution_pointwise", "")
                .typed<Tensor(const Tensor&, const Tensor&, const std::optional<Tensor>&, at::IntArrayRef,
                              at::IntArrayRef, at::IntArrayRef, int64_t, c10::string_view,
                              c10::List<std::optional<at::Scalar>>, std::optional<c10::string_view>)>(),
            d.findSchemaOrThrow("mkldnn::_reorder_convolution_weight", "")
                .typed<Tensor(const Tensor&, at::IntArrayRef, at::IntArrayRef, at::IntArrayRef, int64_t,
                              at::OptionalIntArrayRef)>()};
      return o;
    }();
    return ops;
  }
};

constexpr double kInf = std::numeric_limits<double>::infinity();

/// A per-channel view for channels-last broadcasting.
Tensor channel_view(const Tensor& t, torch::ScalarType dt) { return t.detach().to(torch::kCPU, dt).reshape({1, -1, 1, 1}).contiguous(); }

bool is_uniform(const Tensor& t) { return t.numel() > 0 && t.eq(t.flatten()[0]).all().item<bool>(); }

/// A clamp of (-inf, inf): the identity, no step at all.
bool is_identity(const Step& s) { return s.kind == StepKind::Clamp && s.lo == -kInf && s.hi == kInf; }

std::string act_name(const Step& s) {
  if (s.attr == "relu") return " + relu";
  if (s.attr == "hardtanh") return fmt::format(" + clamp[{:g}, {:g}]", s.scalars[0], s.scalars[1]);
  return "";
}

class OneDnnExecutor : public Executor {
 public:
  OneDnnExecutor(const PlainNetImpl& net, const DeployOptions& o) : options_(o), dtype_(o.dtype()) {
    Ops::get();  // fail here, not at the first forward, if the operators are not registered
    compile(net);
  }

  Tensor run(const Tensor& x0, std::vector<StepTiming>* timings) override {
    auto packed = packed_for(x0.sizes());
    const auto& ops = Ops::get();
    Tensor x = x0.contiguous(torch::MemoryFormat::ChannelsLast);
    bool owned = x.data_ptr() != x0.data_ptr();  // in-place steps never write into the caller's tensor
    for (const auto& s : steps_) {
      const auto t0 = timings ? std::chrono::steady_clock::now() : std::chrono::steady_clock::time_point();
      int64_t macs = 0;
      switch (s.kind) {
        case StepKind::Conv: {
          const auto& w = (*packed)[s.conv_index];
          auto y = ops.conv.call(x, w, s.bias.defined() ? std::optional<Tensor>(s.bias) : std::nullopt,
                                 {s.padding, s.padding}, {s.stride, s.stride}, {1, 1}, s.groups, s.attr,
                                 s.op_scalars, std::nullopt);
          if (timings) macs = y.numel() * (s.in / s.groups) * s.kernel * s.kernel;
          x = std::move(y);
          owned = true;
          break;
        }
        case StepKind::Affine:
          x = owned ? x.mul_(s.scale).add_(s.shift) : x.mul(s.scale).add_(s.shift);
          owned = true;
          break;
        case StepKind::ReLU:
          x = owned ? x.relu_() : x.relu();
          owned = true;
          break;
        case StepKind::Clamp:
          x = owned ? x.clamp_(s.lo, s.hi) : x.clamp(s.lo, s.hi);
          owned = true;
          break;
        case StepKind::ClampChannels:
          x = owned ? x.clamp_(s.lo_t, s.hi_t) : x.clamp(s.lo_t, s.hi_t);
          owned = true;
          break;
        case StepKind::PReLU:
          x = at::prelu(x, s.slope);
          owned = true;
          break;
        case StepKind::MaxPool:
          x = at::max_pool2d(x, {s.kernel, s.kernel}, {s.stride, s.stride}, {s.padding, s.padding});
          owned = true;
          break;
        case StepKind::MeanFlatten:
          x = x.mean({2, 3});
          owned = true;
          break;
        case StepKind::AvgPool:
          x = at::adaptive_avg_pool2d(x, {1, 1});
          owned = true;
          break;
        case StepKind::Flatten:
          x = x.flatten(1);
          break;
        case StepKind::Linear:
          x = at::linear(x, s.weight, s.bias.defined() ? std::optional<Tensor>(s.bias) : std::nullopt);
          if (timings) macs = x.numel() * s.in;
          owned = true;
          break;
        case StepKind::SE: {
          auto head = x.narrow(1, 0, s.scaled);
          auto z = head.mean({2, 3});
          z = at::linear(z, s.w1, s.b1).relu_();
          z = at::linear(z, s.w2, s.b2).sigmoid_();
          if (owned) {
            head.mul_(z.view({z.size(0), s.scaled, 1, 1}));
          } else {
            x = x.clone(torch::MemoryFormat::ChannelsLast);
            x.narrow(1, 0, s.scaled).mul_(z.view({z.size(0), s.scaled, 1, 1}));
            owned = true;
          }
          break;
        }
      }
      if (timings) {
        StepTiming t;
        t.name = s.name;
        t.first_layer = s.first;
        t.last_layer = s.last;
        t.ms = 1e3 * std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        t.macs = macs;
        t.output_shape = x.sizes().vec();
        timings->push_back(std::move(t));
      }
    }
    return x;
  }

  std::string plan() const override {
    std::ostringstream os;
    os << "onednn runtime (" << c10::toString(dtype_) << ", channels-last, " << steps_.size() << " steps, "
       << num_convs_ << " fused oneDNN convolutions)\n";
    for (const auto& s : steps_)
      os << fmt::format("  [{}{}] {}\n", s.first, s.last != s.first ? fmt::format("-{}", s.last) : "", s.name);
    return os.str();
  }

 private:
  void compile(const PlainNetImpl& net) {
    torch::NoGradGuard no_grad;
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
            auto bn = net.layer_as<torch::nn::BatchNorm2dImpl>(i + 1);
            const auto scale = dbl(bn->weight) / (dbl(bn->running_var) + specs[i + 1].eps).sqrt();
            w = w * scale.view({-1, 1, 1, 1});
            b = ((b.defined() ? b : torch::zeros_like(scale)) - dbl(bn->running_mean)) * scale + dbl(bn->bias);
            s.last = ++i;
          }
          s.weight = w.to(dtype_).contiguous();
          if (b.defined()) s.bias = b.to(dtype_).contiguous();
          s.conv_index = num_convs_++;
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
              auto act = activation_step(net, i + 1);
              s.last = ++i;
              if (act.kind == StepKind::ReLU) {
                s.attr = "relu";
              } else if (act.kind == StepKind::Clamp && std::isfinite(act.lo) && std::isfinite(act.hi)) {
                s.attr = "hardtanh";
                s.scalars = {act.lo, act.hi};
                for (double v : s.scalars) s.op_scalars.push_back(at::Scalar(v));
              } else if (!is_identity(act)) {
                rest = act;  // runs in place after the conv
              }
            }
          }
          s.name += act_name(s);
          steps_.push_back(std::move(s));
          if (rest) steps_.push_back(std::move(*rest));
          break;
        }
        case LayerKind::BatchNorm: {
          auto bn = net.layer_as<torch::nn::BatchNorm2dImpl>(i);
          const auto scale = dbl(bn->weight) / (dbl(bn->running_var) + sp.eps).sqrt();
          s.kind = StepKind::Affine;
          s.scale = channel_view(scale, dtype_);
          s.shift = channel_view(dbl(bn->bias) - dbl(bn->running_mean) * scale, dtype_);
          s.name = fmt::format("batchnorm {} (in place)", sp.out_channels);
          steps_.push_back(std::move(s));
          break;
        }
        case LayerKind::ReLU:
        case LayerKind::Clamp:
        case LayerKind::PReLU: {
          auto act = activation_step(net, i);
          if (!is_identity(act)) steps_.push_back(std::move(act));
          break;
        }
        case LayerKind::MaxPool:
          s.kind = StepKind::MaxPool;
          s.kernel = sp.kernel;
          s.stride = sp.stride;
          s.padding = sp.padding;
          s.name = fmt::format("maxpool {}x{} s{} p{}", sp.kernel, sp.kernel, sp.stride, sp.padding);
          steps_.push_back(std::move(s));
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
          steps_.push_back(std::move(s));
          break;
        case LayerKind::Flatten:
          s.kind = StepKind::Flatten;
          s.name = "flatten";
          steps_.push_back(std::move(s));
          break;
        case LayerKind::Linear: {
          auto lin = net.layer_as<torch::nn::LinearImpl>(i);
          s.kind = StepKind::Linear;
          s.in = sp.in_channels;
          s.out = sp.out_channels;
          s.weight = lin->weight.detach().to(torch::kCPU, dtype_).contiguous();
          if (lin->bias.defined()) s.bias = lin->bias.detach().to(torch::kCPU, dtype_).contiguous();
          s.name = fmt::format("linear {}->{}", sp.in_channels, sp.out_channels);
          steps_.push_back(std::move(s));
          break;
        }
        case LayerKind::SE: {
          auto se = net.layer_as<ChannelSEImpl>(i);
          s.kind = StepKind::SE;
          s.scaled = sp.scaled;
          auto cvt = [&](const Tensor& t) { return t.detach().to(torch::kCPU, dtype_).contiguous(); };
          s.w1 = cvt(se->w1);
          s.b1 = cvt(se->b1);
          s.w2 = cvt(se->w2);
          s.b2 = cvt(se->b2);
          s.name = fmt::format("squeeze-excitation on {} of {} channels (in place)", sp.scaled, sp.out_channels);
          steps_.push_back(std::move(s));
          break;
        }
      }
    }
  }

  /// A ReLU, clamp or PReLU layer as the simplest exact step: ReLU, a uniform Clamp (lo, hi), a
  /// per-channel clamp, or PReLU.
  Step activation_step(const PlainNetImpl& net, size_t i) const {
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
        s.slope = p->weight.detach().to(torch::kCPU, dtype_).contiguous();
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
    s.lo_t = channel_view(lo, dtype_);
    s.hi_t = channel_view(hi, dtype_);
    const auto clipped = (lo.isfinite() | hi.isfinite()).sum().item<int64_t>();
    s.name = fmt::format("per-channel clamp ({} of {} channels bounded, in place)", clipped, lo.numel());
    return s;
  }

  /// The prepacked conv weights for an input of shape `sizes` (packed on first use, cached).
  std::shared_ptr<const std::vector<Tensor>> packed_for(at::IntArrayRef sizes) {
    std::vector<int64_t> key = sizes.vec();
    std::lock_guard<std::mutex> lock(mutex_);
    for (auto it = cache_.begin(); it != cache_.end(); ++it)
      if (it->first == key) {
        cache_.splice(cache_.begin(), cache_, it);  // most recently used first
        return cache_.front().second;
      }
    auto packed = std::make_shared<std::vector<Tensor>>(pack(key));
    cache_.emplace_front(key, packed);
    while (static_cast<int64_t>(cache_.size()) > options_.packed_shapes()) cache_.pop_back();
    return packed;
  }

  /// Shape inference through the chain; every conv's weights reordered for its input shape.
  std::vector<Tensor> pack(const std::vector<int64_t>& shape) const {
    const auto& ops = Ops::get();
    std::vector<Tensor> packed;
    int64_t n = shape[0], c = shape[1], h = shape[2], w = shape[3];
    auto spatial = [&](const Step& s, const char* what) {
      const int64_t ho = (h + 2 * s.padding - s.kernel) / s.stride + 1, wo = (w + 2 * s.padding - s.kernel) / s.stride + 1;
      TORCH_CHECK(h + 2 * s.padding >= s.kernel && w + 2 * s.padding >= s.kernel && ho > 0 && wo > 0,
                  "deployed network: input ", shape, " is too small: plain layer ", s.first, " (", what, " ",
                  s.kernel, "x", s.kernel, ") gets ", h, "x", w);
      h = ho;
      w = wo;
    };
    for (const auto& s : steps_) {
      if (s.kind == StepKind::Conv) {
        packed.push_back(ops.reorder.call(s.weight, {s.padding, s.padding}, {s.stride, s.stride}, {1, 1}, s.groups,
                                          at::IntArrayRef({n, c, h, w})));
        spatial(s, "conv");
        c = s.out;
      } else if (s.kind == StepKind::MaxPool) {
        spatial(s, "maxpool");
      } else if (s.kind == StepKind::MeanFlatten || s.kind == StepKind::AvgPool) {
        h = w = 1;
      }
    }
    return packed;
  }

  DeployOptions options_;
  torch::ScalarType dtype_;
  std::vector<Step> steps_;
  size_t num_convs_ = 0;
  std::mutex mutex_;
  std::list<std::pair<std::vector<int64_t>, std::shared_ptr<const std::vector<Tensor>>>> cache_;
};

}  // namespace

std::shared_ptr<Executor> make_onednn_executor(const PlainNetImpl& net, const DeployOptions& options) {
  return std::make_shared<OneDnnExecutor>(net, options);
}

}  // namespace rmnet::detail
