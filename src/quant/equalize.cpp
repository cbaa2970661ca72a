// Cross-layer equalization (see rmnet/quant/equalize.h for the formula and why it is exact).
#include "rmnet/quant/equalize.h"

#include <algorithm>
#include <cmath>

#include <torch/torch.h>

#include "../convert/chain.h"

namespace rmnet {
namespace {

bool passes_channels(LayerKind k) {
  return k == LayerKind::ReLU || k == LayerKind::PReLU || k == LayerKind::Clamp || k == LayerKind::MaxPool ||
         k == LayerKind::AvgPool || k == LayerKind::Flatten;
}

// Largest |W_B[:, c]| per input channel c of a conv (grouped: over the output channels of c's group)
// or a Linear (over its rows).
torch::Tensor input_ranges(const detail::ChainLayer& b) {
  const auto w = b.at("weight").to(torch::kDouble).abs();
  if (b.spec.kind == LayerKind::Linear) return std::get<0>(w.max(0));
  const int64_t g = b.spec.groups, out_g = b.spec.out_channels / g, in_g = w.size(1);
  // [g, out_g, in_g, k, k] -> max over out_g, k, k -> [g, in_g] -> [in]
  return w.view({g, out_g, in_g, -1}).amax({1, 3}).reshape({-1});
}

// Multiplies input channel c of consumer B by s[c].
void scale_inputs(detail::ChainLayer& b, const torch::Tensor& s) {
  auto& w = b.tensors.at("weight");
  const auto sd = s.to(w.scalar_type());
  if (b.spec.kind == LayerKind::Linear) {
    w = w * sd.view({1, -1});
    return;
  }
  const int64_t g = b.spec.groups, out_g = b.spec.out_channels / g, in_g = w.size(1);
  w = (w.view({g, out_g, in_g, -1}) * sd.view({g, 1, in_g, 1})).view(w.sizes());
}

// Divides output channel c of producer A (weight, bias) and of the layers in between (clamp bounds) by s[c].
void scale_outputs(detail::Chain& ch, size_t a, size_t consumer, const torch::Tensor& s) {
  auto& la = ch.layers[a];
  auto& w = la.tensors.at("weight");
  w = w / s.to(w.scalar_type()).view({-1, 1, 1, 1});
  if (la.tensors.count("bias")) la.tensors["bias"] = la.tensors["bias"] / s;
  for (size_t j = a + 1; j < consumer; ++j) {
    auto& l = ch.layers[j];
    if (l.spec.kind == LayerKind::Clamp) {
      l.tensors["min"] = l.tensors.at("min") / s;  // +-inf stays +-inf (s > 0)
      l.tensors["max"] = l.tensors.at("max") / s;
    }
  }
}

}  // namespace

std::vector<EqualizePair> equalization_pairs(const std::vector<LayerSpec>& layers) {
  std::vector<EqualizePair> pairs;
  for (size_t i = 0; i < layers.size(); ++i) {
    if (layers[i].kind != LayerKind::Conv) continue;
    bool pooled = false, flat = false;
    size_t j = i + 1;
    for (; j < layers.size() && passes_channels(layers[j].kind); ++j) {
      if (layers[j].kind == LayerKind::AvgPool) pooled = true;
      if (layers[j].kind == LayerKind::Flatten) {
        if (!pooled) break;  // C*H*W features: channel c is not feature c
        flat = true;
      }
    }
    if (j >= layers.size()) continue;
    if (j < layers.size() && layers[j].kind == LayerKind::Flatten) continue;
    const auto& b = layers[j];
    const bool conv_ok = b.kind == LayerKind::Conv && !flat && b.in_channels == layers[i].out_channels;
    const bool linear_ok = b.kind == LayerKind::Linear && flat && b.in_channels == layers[i].out_channels;
    if (conv_ok || linear_ok) pairs.push_back({i, j});
  }
  return pairs;
}

PlainNet equalize(const PlainNetImpl& net, const EqualizeOptions& options) {
  TORCH_CHECK(options.iterations() >= 0, "equalize: iterations must be >= 0 (got ", options.iterations(), ")");
  TORCH_CHECK(options.max_scale() >= 1.0, "equalize: max_scale must be >= 1 (got ", options.max_scale(), ")");
  auto [dtype, device] = detail::dtype_device(net);
  detail::Chain ch;
  {
    detail::WorkDtypeGuard work(torch::kDouble);  // every tensor in float64; rounded once at build
    ch = detail::fold_batchnorm(detail::Chain::from(net));
  }
  std::vector<LayerSpec> specs;
  for (const auto& l : ch.layers) specs.push_back(l.spec);
  const auto pairs = equalization_pairs(specs);
  const double hi = options.max_scale(), lo = 1.0 / hi;
  for (int64_t it = 0; it < options.iterations(); ++it) {
    for (const auto& p : pairs) {
      auto& a = ch.layers[p.producer];
      auto& b = ch.layers[p.consumer];
      const auto ra = a.at("weight").to(torch::kDouble).abs().flatten(1).amax(1);
      const auto rb = input_ranges(b);
      // s = sqrt(ra / rb); a channel with a zero range on either side keeps s = 1.
      auto s = torch::sqrt(ra / rb);
      s = torch::where((ra > 0) & (rb > 0) & torch::isfinite(s), s, torch::ones_like(s)).clamp(lo, hi);
      scale_outputs(ch, p.producer, p.consumer, s);
      scale_inputs(b, s);
    }
  }
  auto out = ch.build(net.options(), dtype, device);
  out->metadata() = net.metadata();
  out->metadata()["quant.equalized_pairs"] = std::to_string(pairs.size());
  return out;
}

std::vector<std::pair<size_t, torch::Tensor>> weight_ranges(const PlainNetImpl& net) {
  std::vector<std::pair<size_t, torch::Tensor>> r;
  for (size_t i = 0; i < net.size(); ++i)
    if (net.spec(i).kind == LayerKind::Conv)
      r.emplace_back(i, net.layer_as<torch::nn::Conv2dImpl>(i)->weight.detach().abs().flatten(1).amax(1).cpu());
  return r;
}

}  // namespace rmnet
