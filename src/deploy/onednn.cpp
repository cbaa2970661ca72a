// The onednn runtime: rmnet's own executor for a plain chain over LibTorch's registered fused
// oneDNN operators (the ones Inductor's CPU code calls), from C++, without TorchScript.
//
// The chain is compiled once, from the PlainNet's layers, into steps (onednn_plan.cpp; the steps
// and the executor are declared in onednn_steps.h): Conv [+ BatchNorm] [+ activation] as one
// mkldnn::_convolution_pointwise call, the rest as in-place or ATen steps. This file runs them.
// Activations are channels-last from the first conv to the pooling. Conv weights are prepacked for
// the input shape by mkldnn::_reorder_convolution_weight, once per shape (every conv's input shape
// follows from the network's by shape inference), and cached per shape, least recently used
// evicted; a new batch size or resolution packs anew.
#include <chrono>
#include <list>
#include <memory>
#include <mutex>
#include <optional>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include <ATen/core/dispatch/Dispatcher.h>
#include <fmt/format.h>
#include <torch/torch.h>

#include "onednn_steps.h"

namespace rmnet::detail {
namespace {

using torch::Tensor;

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

}  // namespace

OneDnnExecutor::OneDnnExecutor(const PlainNetImpl& net, const DeployOptions& o) : options_(o), dtype_(o.dtype()) {
  Ops::get();  // fail here, not at the first forward, if the operators are not registered
  compile(net);
}

Tensor OneDnnExecutor::run(const Tensor& x0, std::vector<StepTiming>* timings) {
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

std::string OneDnnExecutor::plan() const {
  std::ostringstream os;
  os << "onednn runtime (" << c10::toString(dtype_) << ", channels-last, " << steps_.size() << " steps, "
     << num_convs_ << " fused oneDNN convolutions)\n";
  for (const auto& s : steps_)
    os << fmt::format("  [{}{}] {}\n", s.first, s.last != s.first ? fmt::format("-{}", s.last) : "", s.name);
  return os.str();
}

std::shared_ptr<const std::vector<Tensor>> OneDnnExecutor::packed_for(at::IntArrayRef sizes) {
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

std::vector<Tensor> OneDnnExecutor::pack(const std::vector<int64_t>& shape) const {
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

std::shared_ptr<Executor> make_onednn_executor(const PlainNetImpl& net, const DeployOptions& options) {
  return std::make_shared<OneDnnExecutor>(net, options);
}

}  // namespace rmnet::detail
