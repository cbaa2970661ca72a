// Cross-layer equalization (see rmnet/quant/equalize.h for the formula and why it is exact).
#include "rmnet/quant/equalize.h"

#include <algorithm>
#include <cmath>

#include <torch/torch.h>

#include "rmnet/ir/passes.h"

namespace rmnet {
namespace {

bool passes_channels(LayerKind k) {
  return k == LayerKind::ReLU || k == LayerKind::PReLU || k == LayerKind::Clamp || k == LayerKind::MaxPool ||
         k == LayerKind::AvgPool || k == LayerKind::Flatten;
}

// Largest |W_B[:, c]| per input channel c of a conv (grouped: over the output channels of c's group)
// or a Linear (over its rows).
torch::Tensor input_ranges(const ir::ChainLayer& b) {
  const auto w = b.at("weight").to(torch::kDouble).abs();
  if (b.spec.kind == LayerKind::Linear) return std::get<0>(w.max(0));
  const int64_t g = b.spec.groups, out_g = b.spec.out_channels / g, in_g = w.size(1);
  // [g, out_g, in_g, k, k] -> max over out_g, k, k -> [g, in_g] -> [in]
  return w.view({g, out_g, in_g, -1}).amax({1, 3}).reshape({-1});
}

// Multiplies input channel c of consumer B by s[c].
void scale_inputs(ir::ChainLayer& b, const torch::Tensor& s) {
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
void scale_outputs(ir::Chain& ch, size_t a, size_t consumer, const torch::Tensor& s) {
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

// Largest |W_B[o, c]| / max_c' |W_B[o, c']| per input channel c (over the rows o of c's group): the
// consumer's column ranges as the per-output-channel weight quantization sees them.
torch::Tensor relative_input_ranges(const ir::ChainLayer& b) {
  const auto w = b.at("weight").to(torch::kDouble).abs();
  const int64_t g = b.spec.groups, out_g = b.spec.out_channels / g, in_g = w.size(1);
  const auto cols = w.view({g, out_g, in_g, -1}).amax(3);  // [g, out_g, in_g]
  const auto rows = cols.amax(2, true).clamp_min(1e-300);   // [g, out_g, 1]
  return (cols / rows).amax(1).reshape({-1});
}

// The layer whose output is what the pair's consumer quantizes: the last layer before it that is
// not an AvgPool / Flatten.
size_t range_layer(const std::vector<LayerSpec>& specs, const EqualizePair& p) {
  size_t j = p.consumer - 1;
  while (j > p.producer && (specs[j].kind == LayerKind::AvgPool || specs[j].kind == LayerKind::Flatten)) --j;
  return j;
}

void check_bn_free(const std::vector<LayerSpec>& specs, const char* who) {
  for (size_t i = 0; i < specs.size(); ++i)
    TORCH_CHECK(specs[i].kind != LayerKind::BatchNorm, who, ": layer ", i,
                " is a BatchNorm; fold it first (fold_batchnorm) so the layer indices are the equalized chain's");
}

}  // namespace

EqualizeBy equalize_by_from_string(const std::string& s) {
  if (s == "activations") return EqualizeBy::Activations;
  if (s == "weights") return EqualizeBy::Weights;
  TORCH_CHECK(false, "unknown equalization criterion '", s, "' (expected activations or weights)");
}

std::string to_string(EqualizeBy by) { return by == EqualizeBy::Activations ? "activations" : "weights"; }

std::map<size_t, torch::Tensor> activation_ranges(PlainNetImpl& net, const torch::Tensor& images, int64_t batch_size) {
  check_bn_free(net.specs(), "activation_ranges");
  TORCH_CHECK(batch_size > 0, "activation_ranges: batch_size must be positive (got ", batch_size, ")");
  TORCH_CHECK(images.defined() && images.dim() == 4 && images.size(0) > 0,
              "activation_ranges: expected images [N, C, H, W] with N >= 1");
  const auto pairs = equalization_pairs(net.specs());
  std::map<size_t, size_t> watch;  // range layer -> producer
  for (const auto& p : pairs) watch[range_layer(net.specs(), p)] = p.producer;
  std::map<size_t, torch::Tensor> ranges;
  if (watch.empty()) return ranges;
  const size_t last = watch.rbegin()->first;
  auto [dtype, device] = ir::dtype_device(net);
  torch::NoGradGuard ng;
  const int64_t n = images.size(0);
  for (int64_t b = 0; b < n; b += batch_size) {
    auto x = images.narrow(0, b, std::min(batch_size, n - b)).to(device, dtype);
    for (size_t i = 0; i <= last; ++i) {
      x = net.forward_range(x, i, i + 1);
      auto it = watch.find(i);
      if (it == watch.end()) continue;
      auto r = x.abs().amax({0, 2, 3}).to(torch::kCPU, torch::kDouble);
      auto& slot = ranges[it->second];
      slot = slot.defined() ? torch::maximum(slot, r) : r;
    }
  }
  return ranges;
}

PlainNet equalize_activations(const PlainNetImpl& net, const std::map<size_t, torch::Tensor>& ranges,
                              const EqualizeOptions& options) {
  TORCH_CHECK(options.alpha() >= 0 && options.alpha() <= 1, "equalize: alpha must be in [0, 1] (got ",
              options.alpha(), ")");
  TORCH_CHECK(options.max_scale() >= 1.0, "equalize: max_scale must be >= 1 (got ", options.max_scale(), ")");
  check_bn_free(net.specs(), "equalize_activations");
  auto [dtype, device] = ir::dtype_device(net);
  ir::Chain ch;
  {
    ir::WorkDtypeGuard work(torch::kDouble);
    ch = ir::Chain::from(net);
  }
  const auto pairs = equalization_pairs(net.specs());
  size_t done = 0;
  for (const auto& p : pairs) {
    auto it = ranges.find(p.producer);
    if (it == ranges.end()) continue;
    auto& b = ch.layers[p.consumer];
    const auto a = it->second.to(torch::kCPU, torch::kDouble).flatten();
    TORCH_CHECK(a.numel() == net.spec(p.producer).out_channels, "equalize_activations: the ranges of layer ",
                p.producer, " have ", a.numel(), " channels, the layer has ", net.spec(p.producer).out_channels);
    torch::Tensor s;
    if (b.spec.kind == LayerKind::Linear) {
      s = a.clone();  // a float32 consumer: no weight quantization to trade against
    } else {
      const auto w = relative_input_ranges(b);
      s = torch::pow(a, options.alpha()) / torch::pow(w, 1.0 - options.alpha());
    }
    const bool active = (a > 0).any().item<bool>();
    if (!active) continue;
    s = torch::where((a > 0) & (s > 0) & torch::isfinite(s), s, torch::zeros_like(s));
    s = s / s.max();
    s = torch::where(s > 0, s, torch::ones_like(s)).clamp(1.0 / options.max_scale(), 1.0);
    scale_outputs(ch, p.producer, p.consumer, s);
    scale_inputs(b, s);
    ++done;
  }
  auto out = ch.build(net.options(), dtype, device);
  out->metadata() = net.metadata();
  out->metadata()["quant.equalized_pairs"] = std::to_string(done);
  return out;
}

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
  auto [dtype, device] = ir::dtype_device(net);
  ir::Chain ch;
  {
    ir::WorkDtypeGuard work(torch::kDouble);  // every tensor in float64; rounded once at build
    ch = ir::fold_batchnorm(ir::Chain::from(net));
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
