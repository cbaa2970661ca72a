// Prunable units of a plain chain and the importance of their channels. See
// include/rmnet/prune/slim.h.
#include <functional>
#include <map>
#include <numeric>

#include <fmt/format.h>
#include <torch/torch.h>

#include "prune_internal.h"
#include "rmnet/ir/chain.h"
#include "rmnet/prune/slim.h"

namespace rmnet {

namespace {
constexpr std::pair<PruneImportance, const char*> kImportanceNames[] = {
    {PruneImportance::Gamma, "gamma"},
    {PruneImportance::Contribution, "contribution"},
    {PruneImportance::Measured, "measured"}};
constexpr std::pair<PruneGrouping, const char*> kGroupingNames[] = {{PruneGrouping::Stream, "stream"},
                                                                    {PruneGrouping::None, "none"}};
constexpr std::pair<PruneGroupReduction, const char*> kReductionNames[] = {{PruneGroupReduction::Sum, "sum"},
                                                                         {PruneGroupReduction::Mean, "mean"}};
constexpr std::pair<PruneScope, const char*> kScopeNames[] = {{PruneScope::Global, "global"},
                                                              {PruneScope::Layer, "layer"}};

/// The value named `name` in a name table; an unknown name is an error naming `what` and the names.
template <typename E, size_t N>
E from_name(const std::pair<E, const char*> (&table)[N], const std::string& name, const char* what) {
  std::string names;
  for (const auto& [v, n] : table) {
    if (name == n) return v;
    names += std::string(names.empty() ? "" : " or ") + n;
  }
  TORCH_CHECK(false, "unknown ", what, " '", name, "' (expected ", names, ")");
}
template <typename E, size_t N>
std::string name_of(const std::pair<E, const char*> (&table)[N], E value) {
  for (const auto& [v, n] : table)
    if (v == value) return n;
  return "?";
}
}  // namespace

PruneImportance prune_importance_from_string(const std::string& name) {
  return from_name(kImportanceNames, name, "importance rule");
}
std::string to_string(PruneImportance importance) { return name_of(kImportanceNames, importance); }
PruneGrouping prune_grouping_from_string(const std::string& name) {
  return from_name(kGroupingNames, name, "pruning grouping");
}
std::string to_string(PruneGrouping grouping) { return name_of(kGroupingNames, grouping); }
PruneGroupReduction prune_group_reduction_from_string(const std::string& name) {
  return from_name(kReductionNames, name, "group reduction");
}
std::string to_string(PruneGroupReduction reduction) { return name_of(kReductionNames, reduction); }
PruneScope prune_scope_from_string(const std::string& name) { return from_name(kScopeNames, name, "pruning scope"); }
std::string to_string(PruneScope scope) { return name_of(kScopeNames, scope); }

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

namespace {

/// For each output channel o of a conv: the input channel its filter reads through one nonzero
/// centre tap and nothing else (a Dirac copy), or -1.
std::vector<int64_t> dirac_rows(const torch::Tensor& weight, int64_t groups) {
  const auto nz = weight.detach().to(torch::kCPU).ne(0);
  const int64_t out = nz.size(0), gin = nz.size(1), k = nz.size(2), gout = out / groups;
  const auto count = nz.sum({1, 2, 3}).to(torch::kLong).contiguous();
  const auto centre = nz.select(3, k / 2).select(2, k / 2).to(torch::kLong);  // [out, gin]
  const auto local = centre.argmax(1).contiguous();
  const auto csum = centre.sum(1).contiguous();
  const auto* cnt = count.data_ptr<int64_t>();
  const auto* loc = local.data_ptr<int64_t>();
  const auto* cs = csum.data_ptr<int64_t>();
  std::vector<int64_t> r(out, -1);
  for (int64_t o = 0; o < out; ++o)
    if (cnt[o] == 1 && cs[o] == 1) r[o] = (o / gout) * gin + loc[o];
  return r;
}

/// For each input channel c of a conv: the one output channel reading it through one nonzero centre
/// tap, when nothing else reads it, or -1.
std::vector<int64_t> dirac_columns(const torch::Tensor& weight, int64_t groups) {
  const auto nz = weight.detach().to(torch::kCPU).ne(0);
  const int64_t out = nz.size(0), gin = nz.size(1), k = nz.size(2), gout = out / groups;
  const auto g5 = nz.view({groups, gout, gin, k, k});
  const auto count = g5.sum({1, 3, 4}).to(torch::kLong).contiguous();               // [g, gin]
  const auto centre = g5.select(4, k / 2).select(3, k / 2).to(torch::kLong);        // [g, gout, gin]
  const auto which = centre.argmax(1).contiguous();                                 // [g, gin]
  const auto csum = centre.sum(1).contiguous();                                     // [g, gin]
  const auto* cnt = count.data_ptr<int64_t>();
  const auto* wh = which.data_ptr<int64_t>();
  const auto* cs = csum.data_ptr<int64_t>();
  std::vector<int64_t> r(groups * gin, -1);
  for (int64_t j = 0; j < groups; ++j)
    for (int64_t c = 0; c < gin; ++c) {
      const int64_t at = j * gin + c;
      if (cnt[at] == 1 && cs[at] == 1) r[at] = j * gout + wh[at];
    }
  return r;
}

}  // namespace

std::vector<std::vector<UnitChannel>> prune_groups(const PlainNetImpl& net, const std::vector<PruneUnit>& units) {
  torch::NoGradGuard no_grad;
  std::vector<int64_t> offset(units.size() + 1, 0);
  std::map<size_t, size_t> by_consumer, by_producer;
  for (size_t u = 0; u < units.size(); ++u) {
    offset[u + 1] = offset[u] + units[u].channels;
    by_consumer[units[u].consumer] = u;
    by_producer[units[u].producer] = u;
  }
  std::vector<int64_t> parent(offset.back());
  std::iota(parent.begin(), parent.end(), int64_t{0});
  const std::function<int64_t(int64_t)> find = [&](int64_t a) {
    while (parent[a] != a) a = parent[a] = parent[parent[a]];
    return a;
  };
  const auto join = [&](int64_t a, int64_t b) { parent[find(a)] = find(b); };
  for (size_t u = 0; u < units.size(); ++u) {
    const auto& unit = units[u];
    // producer rows copying a channel of the unit that feeds this producer
    auto prev = by_consumer.find(unit.producer);
    if (prev != by_consumer.end()) {
      const auto& s = net.spec(unit.producer);
      const auto rows = dirac_rows(net.layer_as<torch::nn::Conv2dImpl>(unit.producer)->weight, s.groups);
      for (int64_t o = 0; o < unit.channels; ++o)
        if (rows[o] >= 0) join(offset[u] + o, offset[prev->second] + rows[o]);
    }
    // consumer columns adding this unit's channel to one output of the unit the consumer produces
    auto next = by_producer.find(unit.consumer);
    if (next != by_producer.end()) {
      const auto& s = net.spec(unit.consumer);
      const auto cols = dirac_columns(net.layer_as<torch::nn::Conv2dImpl>(unit.consumer)->weight, s.groups);
      for (int64_t c = 0; c < unit.channels; ++c)
        if (cols[c] >= 0) join(offset[u] + c, offset[next->second] + cols[c]);
    }
  }
  std::map<int64_t, std::vector<UnitChannel>> by_root;
  for (size_t u = 0; u < units.size(); ++u)
    for (int64_t c = 0; c < units[u].channels; ++c) by_root[find(offset[u] + c)].emplace_back(u, c);
  std::vector<std::vector<UnitChannel>> groups;
  for (auto& [root, members] : by_root)
    if (members.size() > 1) groups.push_back(std::move(members));
  return groups;
}

namespace {
/// The consumer's weights per input channel, scaled per output by the BN after it: float64
/// [channels, outputs of the channel's group, taps] (taps 1 for a linear consumer).
torch::Tensor scaled_consumer_weights(const PlainNetImpl& net, const PruneUnit& u) {
  const auto f64 = [](const torch::Tensor& t) { return t.detach().to(torch::kCPU, torch::kDouble); };
  const auto& cs = net.spec(u.consumer);
  if (cs.kind == LayerKind::Linear) {
    auto w = f64(net.layer_as<torch::nn::LinearImpl>(u.consumer)->weight);  // [out, in]
    return w.t().unsqueeze(2).contiguous();
  }
  auto w = f64(net.layer_as<torch::nn::Conv2dImpl>(u.consumer)->weight);  // [out, in / g, k, k]
  if (u.consumer + 1 < net.size() && net.spec(u.consumer + 1).kind == LayerKind::BatchNorm) {
    auto bn = net.layer_as<torch::nn::BatchNorm2dImpl>(u.consumer + 1);
    w = w * (f64(bn->weight) / torch::sqrt(f64(bn->running_var) + bn->options.eps())).view({-1, 1, 1, 1});
  }
  const int64_t g = cs.groups, gin = cs.in_channels / g, gout = cs.out_channels / g, taps = cs.kernel * cs.kernel;
  return w.view({g, gout, gin, taps}).permute({0, 2, 1, 3}).reshape({g * gin, gout, taps}).contiguous();
}
}  // namespace

torch::Tensor unit_importance(const PlainNetImpl& net, const PruneUnit& u, PruneImportance rule) {
  torch::NoGradGuard no_grad;
  const auto f64 = [](const torch::Tensor& t) { return t.detach().to(torch::kCPU, torch::kDouble); };
  auto gamma = f64(net.layer_as<torch::nn::BatchNorm2dImpl>(u.importance)->weight).abs();
  if (rule == PruneImportance::Gamma) return gamma;
  TORCH_CHECK(rule == PruneImportance::Contribution, "importance 'measured' needs calibration images (",
              "units_importance; on the command line --calib-dataset)");
  // per input channel: the norm of the consumer's weights reading it (its group's outputs, all taps),
  // scaled per output by the BN after the consumer
  return gamma * scaled_consumer_weights(net, u).pow(2).sum({1, 2}).sqrt();
}


std::vector<torch::Tensor> units_importance(const PlainNetImpl& net, const std::vector<PruneUnit>& units,
                                            PruneImportance rule, const torch::Tensor& calibration) {
  std::vector<torch::Tensor> out;
  if (rule != PruneImportance::Measured) {
    for (const auto& u : units) out.push_back(unit_importance(net, u, rule));
    return out;
  }
  TORCH_CHECK(calibration.defined() && calibration.dim() == 4 && calibration.size(0) > 0,
              "importance 'measured' needs calibration images [N, C, H, W] (got ",
              calibration.defined() ? calibration.sizes().vec() : std::vector<int64_t>{},
              "; on the command line --calib-dataset)");
  TORCH_CHECK(calibration.size(1) == net.options().in_channels(), "the calibration images have ",
              calibration.size(1), " channels, the network takes ", net.options().in_channels());
  torch::NoGradGuard no_grad;
  auto& chain = const_cast<PlainNetImpl&>(net);
  const auto [dtype, device] = ir::dtype_device(net);
  std::map<size_t, size_t> by_consumer;  // consumer layer -> unit
  size_t last = 0;
  for (size_t u = 0; u < units.size(); ++u) {
    by_consumer[units[u].consumer] = u;
    last = std::max(last, units[u].consumer);
  }
  // Two passes over the images in chunks: the mean of every channel a consumer reads, then per
  // channel the second moments of its centred k x k input patches, M_c [taps, taps]. The squared
  // importance is sum_o a_o^2 W[o, c] M_c W[o, c]^T / positions.
  constexpr int64_t kChunk = 16, kElements = int64_t{1} << 24;
  std::vector<torch::Tensor> mean(units.size()), moment(units.size());
  std::vector<double> positions(units.size(), 0.0), outputs(units.size(), 0.0);
  for (int pass = 0; pass < 2; ++pass) {
    for (int64_t n0 = 0; n0 < calibration.size(0); n0 += kChunk) {
      auto x = calibration.narrow(0, n0, std::min(kChunk, calibration.size(0) - n0)).to(device, dtype);
      for (size_t i = 0; i <= last; ++i) {
        auto it = by_consumer.find(i);
        if (it != by_consumer.end()) {
          const size_t u = it->second;
          const auto& cs = net.spec(i);
          auto xd = x.to(torch::kCPU, torch::kDouble);
          if (pass == 0) {
            auto s = xd.dim() == 4 ? xd.sum({0, 2, 3}) : xd.sum(0);
            mean[u] = mean[u].defined() ? mean[u] + s : s;
            positions[u] += static_cast<double>(xd.numel() / xd.size(1));
          } else {
            auto d = xd - (xd.dim() == 4 ? mean[u].view({1, -1, 1, 1}) : mean[u].view({1, -1}));
            if (cs.kind == LayerKind::Linear) {
              auto m = d.pow(2).sum(0).view({-1, 1, 1});
              moment[u] = moment[u].defined() ? moment[u] + m : m;
              outputs[u] += static_cast<double>(d.size(0));
            } else {
              const int64_t k = cs.kernel, taps = k * k, c = d.size(1);
              if (!moment[u].defined()) moment[u] = torch::zeros({c, taps, taps}, torch::kDouble);
              const int64_t per_channel = d.size(0) * taps * (d.size(2) * d.size(3));
              const int64_t block = std::max<int64_t>(1, kElements / std::max<int64_t>(per_channel, 1));
              for (int64_t c0 = 0; c0 < c; c0 += block) {
                const int64_t cb = std::min(block, c - c0);
                auto p = torch::nn::functional::unfold(
                    d.narrow(1, c0, cb),
                    torch::nn::functional::UnfoldFuncOptions({k, k}).padding(cs.padding).stride(cs.stride));
                // [n, cb * taps, L] -> [cb, taps, n * L]
                auto q = p.view({p.size(0), cb, taps, p.size(2)}).permute({1, 2, 0, 3}).reshape({cb, taps, -1});
                moment[u].narrow(0, c0, cb).add_(q.bmm(q.transpose(1, 2)));
                if (c0 == 0) outputs[u] += static_cast<double>(q.size(2));
              }
            }
          }
        }
        x = chain.forward_range(x, i, i + 1);
      }
    }
    if (pass == 0)
      for (size_t u = 0; u < units.size(); ++u) {
        TORCH_CHECK(mean[u].defined() && mean[u].size(0) == units[u].channels, "internal: unit ", u,
                    " consumer input has ", mean[u].defined() ? mean[u].size(0) : 0, " channels, expected ",
                    units[u].channels);
        mean[u] /= positions[u];
      }
  }
  for (size_t u = 0; u < units.size(); ++u) {
    auto w = scaled_consumer_weights(net, units[u]);          // [c, outs, taps]
    auto gram = w.transpose(1, 2).bmm(w);                     // [c, taps, taps]
    auto sq = (gram * moment[u]).sum({1, 2}) / outputs[u];    // mean over images and output positions
    out.push_back(sq.clamp_min(0.0).sqrt());
  }
  return out;
}

}  // namespace rmnet
