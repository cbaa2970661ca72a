// Prunable units of a plain chain and the importance of their channels. See
// include/rmnet/prune/slim.h.
#include <functional>
#include <map>
#include <numeric>

#include <fmt/format.h>
#include <torch/torch.h>

#include "prune_internal.h"
#include "rmnet/prune/slim.h"

namespace rmnet {

namespace {
constexpr std::pair<PruneImportance, const char*> kImportanceNames[] = {
    {PruneImportance::Gamma, "gamma"}, {PruneImportance::Contribution, "contribution"}};
constexpr std::pair<PruneGrouping, const char*> kGroupingNames[] = {{PruneGrouping::Stream, "stream"},
                                                                    {PruneGrouping::None, "none"}};
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
