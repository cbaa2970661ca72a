// The onednn runtime: rmnet's own executor for a plain chain over LibTorch's registered fused
// oneDNN operators (the ones Inductor's CPU code calls), from C++, without TorchScript.
//
// The chain is compiled once, from the PlainNet's layers, into steps (onednn_plan.cpp; the steps
// and the executor are declared in onednn_steps.h): Conv [+ BatchNorm] [+ activation] as one
// mkldnn::_convolution_pointwise call, the rest as in-place or ATen steps. This file runs them.
// Activations are channels-last from the first conv to the pooling. Conv weights are prepacked for
// the input shape by mkldnn::_reorder_convolution_weight, once per shape (every conv's input shape
// follows from the network's by shape inference), and cached per shape, least recently used
// evicted; a new batch size or resolution packs anew. A conv on a map hardly larger than its kernel
// (DeployOptions::small_map_gemm) is packed instead as the dense matrix from its input map to its
// output map and runs as one GEMM: oneDNN's convolution kernels reach 40-70 GMAC/s on 2x2 and 1x1
// maps on this CPU, the GEMM 3-5x that.
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
  c10::TypedOperatorHandle<Tensor(const Tensor&, const Tensor&, const std::optional<Tensor>&, c10::string_view,
                                  c10::List<std::optional<at::Scalar>>, std::optional<c10::string_view>)>
      linear;
  c10::TypedOperatorHandle<Tensor(const Tensor&, std::optional<int64_t>)> reorder_linear;
  static const Ops& get() {
    static const Ops ops = [] {
      auto& d = c10::Dispatcher::singleton();
      Ops o{d.findSchemaOrThrow("mkldnn::_convolution_pointwise", "")
                .typed<Tensor(const Tensor&, const Tensor&, const std::optional<Tensor>&, at::IntArrayRef,
                              at::IntArrayRef, at::IntArrayRef, int64_t, c10::string_view,
                              c10::List<std::optional<at::Scalar>>, std::optional<c10::string_view>)>(),
            d.findSchemaOrThrow("mkldnn::_reorder_convolution_weight", "")
                .typed<Tensor(const Tensor&, at::IntArrayRef, at::IntArrayRef, at::IntArrayRef, int64_t,
                              at::OptionalIntArrayRef)>(),
            d.findSchemaOrThrow("mkldnn::_linear_pointwise", "")
                .typed<Tensor(const Tensor&, const Tensor&, const std::optional<Tensor>&, c10::string_view,
                              c10::List<std::optional<at::Scalar>>, std::optional<c10::string_view>)>(),
            d.findSchemaOrThrow("mkldnn::_reorder_linear_weight", "")
                .typed<Tensor(const Tensor&, std::optional<int64_t>)>()};
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
        const auto& p = (*packed)[s.conv_index];
        Tensor y;
        if (p.gemm) {  // the whole map as one row per image: [N, H*W*Cin] x T^T -> [N, Ho*Wo*Cout]
          const int64_t n = x.size(0);
          const auto rows = x.contiguous(torch::MemoryFormat::ChannelsLast).permute({0, 2, 3, 1}).reshape({n, -1});
          y = ops.linear.call(rows, p.weight, p.bias.defined() ? std::optional<Tensor>(p.bias) : std::nullopt, s.attr,
                              s.op_scalars, std::nullopt)
                  .view({n, p.ho, p.wo, s.out})
                  .permute({0, 3, 1, 2});  // channels-last [N, Cout, Ho, Wo], no copy
        } else {
          y = ops.conv.call(x, p.weight, s.bias.defined() ? std::optional<Tensor>(s.bias) : std::nullopt,
                            {s.padding, s.padding}, {s.stride, s.stride}, {1, 1}, s.groups, s.attr, s.op_scalars,
                            std::nullopt);
        }
        if (timings) macs = y.numel() * (s.in / s.groups) * s.kernel * s.kernel;
        x = std::move(y);
        owned = true;
        break;
      }
      case StepKind::Linear:
        if (x.dim() == 2) {  // the head: weights packed for the batch (1.6-2.2x at::linear at batch 1-32 here)
          x = ops.linear.call(x.contiguous(), (*packed)[s.conv_index].weight,
                              s.bias.defined() ? std::optional<Tensor>(s.bias) : std::nullopt, "none",
                              c10::List<std::optional<at::Scalar>>(), std::nullopt);
          if (timings) macs = x.numel() * s.in;
          owned = true;
          break;
        }
        run_aten_step(s, x, owned, timings ? &macs : nullptr);
        break;
      default:
        run_aten_step(s, x, owned, timings ? &macs : nullptr);
        break;
    }
    if (timings)
      timings->push_back(step_timing(
          s.kind == StepKind::Conv && (*packed)[s.conv_index].gemm ? s.name + " (as one GEMM)" : s.name, s.first,
          s.last, t0, macs, x));
  }
  return x;
}

void run_aten_step(const Step& s, Tensor& x, bool& owned, int64_t* macs) {
  switch (s.kind) {
    case StepKind::Conv:
      TORCH_INTERNAL_ASSERT(false, "run_aten_step: a Conv step");
      break;
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
      if (macs) *macs = x.numel() * s.in;
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
}

std::string OneDnnExecutor::plan() const {
  std::ostringstream os;
  os << "onednn runtime (" << c10::toString(dtype_) << ", channels-last, " << steps_.size() << " steps, "
     << num_convs_ << " fused oneDNN convolutions"
     << (options_.small_map_gemm() ? "; a conv on a map hardly larger than its kernel runs as one GEMM" : "")
     << ")\n";
  for (const auto& s : steps_)
    os << fmt::format("  [{}{}] {}\n", s.first, s.last != s.first ? fmt::format("-{}", s.last) : "", s.name);
  return os.str();
}

std::shared_ptr<const Packed> OneDnnExecutor::packed_for(at::IntArrayRef sizes) {
  std::vector<int64_t> key = sizes.vec();
  std::lock_guard<std::mutex> lock(mutex_);
  if (auto* cached = lru_find(cache_, key)) return *cached;
  auto packed = std::make_shared<Packed>(pack(key));
  lru_put(cache_, std::move(key), packed, options_.packed_shapes());
  return packed;
}

Tensor conv_as_matrix(const Tensor& w, int64_t h, int64_t wd, int64_t stride, int64_t padding) {
  const int64_t cout = w.size(0), cin = w.size(1), k = w.size(2), kw = w.size(3);
  const int64_t ho = (h + 2 * padding - k) / stride + 1, wo = (wd + 2 * padding - kw) / stride + 1;
  auto t = torch::zeros({ho, wo, cout, h, wd, cin}, w.options());
  for (int64_t a = 0; a < ho; ++a)
    for (int64_t b = 0; b < wo; ++b)
      for (int64_t i = 0; i < k; ++i)
        for (int64_t j = 0; j < kw; ++j) {
          const int64_t r = a * stride - padding + i, c = b * stride - padding + j;
          if (r < 0 || r >= h || c < 0 || c >= wd) continue;  // a padding tap: contributes zero
          t.select(0, a).select(0, b).select(1, r).select(1, c).copy_(w.select(2, i).select(2, j));
        }
  return t.reshape({ho * wo * cout, h * wd * cin});
}

Packed OneDnnExecutor::pack(const std::vector<int64_t>& shape) const {
  const auto& ops = Ops::get();
  Packed packed;
  int64_t n = shape[0], c = shape[1], h = shape[2], w = shape[3];
  auto spatial = [&](const Step& s, const char* what) {
    const int64_t ho = (h + 2 * s.padding - s.kernel) / s.stride + 1, wo = (w + 2 * s.padding - s.kernel) / s.stride + 1;
    TORCH_CHECK(h + 2 * s.padding >= s.kernel && w + 2 * s.padding >= s.kernel && ho > 0 && wo > 0,
                "deployed network: input ", shape, " is too small: plain layer ", s.first, " (", what, " ",
                s.kernel, "x", s.kernel, ") gets ", h, "x", w);
    h = ho;
    w = wo;
  };
  Packed linears;  // after the convs, in order (OneDnnExecutor::compile)
  for (const auto& s : steps_) {
    if (s.kind == StepKind::Linear) {
      PackedConv p;
      p.weight = ops.reorder_linear.call(s.weight, n);
      linears.push_back(std::move(p));
    } else if (s.kind == StepKind::Conv) {
      PackedConv p;
      const int64_t h_in = h, w_in = w;
      spatial(s, "conv");
      if (options_.small_map_gemm() && s.groups == 1 && tiny_map(h_in, w_in, h, w, s.kernel)) {
        p.gemm = true;
        p.ho = h;
        p.wo = w;
        p.weight = conv_as_matrix(s.weight, h_in, w_in, s.stride, s.padding).contiguous();
        if (s.bias.defined()) p.bias = s.bias.repeat({h * w}).contiguous();
      } else {
        p.weight = ops.reorder.call(s.weight, {s.padding, s.padding}, {s.stride, s.stride}, {1, 1}, s.groups,
                                    at::IntArrayRef({n, c, h_in, w_in}));
      }
      packed.push_back(std::move(p));
      c = s.out;
    } else if (s.kind == StepKind::MaxPool) {
      spatial(s, "maxpool");
    } else if (s.kind == StepKind::MeanFlatten || s.kind == StepKind::AvgPool) {
      h = w = 1;
    }
  }
  for (auto& p : linears) packed.push_back(std::move(p));
  return packed;
}

Tensor libtorch_pack_conv(const Step& s, at::IntArrayRef input_sizes) {
  return Ops::get().reorder.call(s.weight, {s.padding, s.padding}, {s.stride, s.stride}, {1, 1}, s.groups,
                                 input_sizes);
}

Tensor libtorch_conv(const Step& s, const Tensor& x, const Tensor& packed_weight) {
  return Ops::get().conv.call(x.contiguous(torch::MemoryFormat::ChannelsLast), packed_weight,
                              s.bias.defined() ? std::optional<Tensor>(s.bias) : std::nullopt, {s.padding, s.padding},
                              {s.stride, s.stride}, {1, 1}, s.groups, s.attr, s.op_scalars, std::nullopt);
}

std::shared_ptr<Executor> make_onednn_executor(const PlainNetImpl& net, const DeployOptions& options) {
  return std::make_shared<OneDnnExecutor>(net, options);
}

}  // namespace rmnet::detail
