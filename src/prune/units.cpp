// Prunable units of a plain chain and the importance of their channels. See
// include/rmnet/prune/slim.h.
#include <numeric>

#include <fmt/format.h>
#include <torch/torch.h>

#include "prune_internal.h"
#include "rmnet/prune/slim.h"

namespace rmnet {

namespace {
constexpr std::pair<PruneImportance, const char*> kImportanceNames[] = {
    {PruneImportance::Gamma, "gamma"}, {PruneImportance::Contribution, "contribution"}};
constexpr std::pair<PruneScope, const char*> kScopeNames[] = {{PruneScope::Global, "global"},
                                                              {PruneScope::Layer, "layer"}};
}  // namespace

PruneImportance prune_importance_from_string(const std::string& name) {
  for (const auto& [v, n] : kImportanceNames)
    if (name == n) return v;
  TORCH_CHECK(false, "unknown importance rule '", name, "' (expected gamma or contribution)");
}
std::string to_string(PruneImportance importance) {
  for (const auto& [v, n] : kImportanceNames)
    if (v == importance) return n;
  return "?";
}
PruneScope prune_scope_from_string(const std::string& name) {
  for (const auto& [v, n] : kScopeNames)
    if (name == n) return v;
  TORCH_CHECK(false, "unknown pruning scope '", name, "' (expected global or layer)");
}
std::string to_string(PruneScope scope) {
  for (const auto& [v, n] : kScopeNames)
    if (v == scope) return n;
  return "?";
}

namespace detail {

bool is_depthwise(const LayerSpec& s) {
  return s.kind == LayerKind::Conv && s.groups > 1 && s.groups == s.in_channels && s.groups == s.out_channels;
}

std::string layer_name(const PlainNetImpl& net, size_t i) {
  return fmt::format("layer {} ({})", i, net.spec(i).describe());
}

}  // namespace detail

std::vector<PruneUnit> prune_units(const PlainNetImpl& net, std::vector<std::string>* notes) {
  using detail::is_depthwise;
  const auto& L = net.specs();
  auto note = [&](size_t p, const std::string& why) {
    if (notes) notes->push_back(fmt::format("{}: not prunable, {}", detail::layer_name(net, p), why));
  };
  std::vector<PruneUnit> units;
  for (size_t p = 0; p < L.size(); ++p) {
    const auto& s = L[p];
    if (s.kind != LayerKind::Conv || is_depthwise(s)) continue;
    if (p + 1 >= L.size() || L[p + 1].kind != LayerKind::BatchNorm) {
      note(p, "no BatchNorm follows it");
      continue;
    }
    PruneUnit u;
    u.producer = p;
    u.channels = s.out_channels;
    int64_t groups = s.groups;
    bool pooled = false, ok = false;
    std::string why = "its output is the network's output";
    for (size_t j = p + 1; j < L.size(); ++j) {
      const auto& t = L[j];
      if (t.kind == LayerKind::BatchNorm || t.kind == LayerKind::PReLU || t.kind == LayerKind::Clamp ||
          is_depthwise(t)) {
        if (t.kind == LayerKind::BatchNorm) u.importance = j;
        u.sliced.push_back(j);
        continue;
      }
      if (t.kind == LayerKind::ReLU || t.kind == LayerKind::MaxPool) continue;
      if (t.kind == LayerKind::AvgPool) {
        pooled = true;
        continue;
      }
      if (t.kind == LayerKind::Flatten) {
        if (pooled) continue;
        why = "it is flattened without global pooling";
        break;
      }
      if (t.kind == LayerKind::Conv) {
        u.consumer = j;
        groups = std::lcm(groups, t.groups);
        ok = true;
      } else if (t.kind == LayerKind::Linear) {
        u.consumer = j;
        ok = true;
      } else {
        why = fmt::format("a {} layer follows (layer {})", to_string(t.kind), j);
      }
      break;
    }
    if (!ok) {
      note(p, why);
      continue;
    }
    if (u.channels % groups != 0) {
      note(p, fmt::format("{} channels do not split into {} groups", u.channels, groups));
      continue;
    }
    u.groups = groups;
    units.push_back(std::move(u));
  }
  return units;
}

torch::Tensor unit_importance(const PlainNetImpl& net, const PruneUnit& u, PruneImportance rule) {
  torch::NoGradGuard no_grad;
  const auto f64 = [](const torch::Tensor& t) { return t.detach().to(torch::kCPU, torch::kDouble); };
  auto gamma = f64(net.layer_as<torch::nn::BatchNorm2dImpl>(u.importance)->weight).abs();
  if (rule == PruneImportance::Gamma) return gamma;
  // the consumer's weights reading each input channel, scaled per output by the BN after it
  const auto& cs = net.spec(u.consumer);
  torch::Tensor w;
  if (cs.kind == LayerKind::Linear) {
    w = f64(net.layer_as<torch::nn::LinearImpl>(u.consumer)->weight);  // [out, in]
    return gamma * w.pow(2).sum(0).sqrt();
  }
  w = f64(net.layer_as<torch::nn::Conv2dImpl>(u.consumer)->weight);  // [out, in / g, k, k]
  if (u.consumer + 1 < net.size() && net.spec(u.consumer + 1).kind == LayerKind::BatchNorm) {
    auto bn = net.layer_as<torch::nn::BatchNorm2dImpl>(u.consumer + 1);
    auto a = f64(bn->weight) / torch::sqrt(f64(bn->running_var) + bn->options.eps());
    w = w * a.view({-1, 1, 1, 1});
  }
  const int64_t g = cs.groups, gin = cs.in_channels / g, gout = cs.out_channels / g;
  // per (group, local input channel): sum over that group's outputs and the taps
  auto sq = w.pow(2).sum({2, 3}).view({g, gout, gin}).sum(1).reshape({g * gin});
  return gamma * sq.sqrt();
}

}  // namespace rmnet
