// Network slimming on plain networks: rank the channels of the prunable units, select, fold what
// the removed channels leave behind into their consumers, slice the layers. See
// include/rmnet/prune/slim.h.
#include "rmnet/prune/slim.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <tuple>

#include <fmt/format.h>
#include <torch/torch.h>

#include "rmnet/ir/passes.h"
#include "prune_internal.h"
#include "rmnet/convert/verify.h"

namespace rmnet {
using ir::Chain;
using ir::dtype_device;
using ir::WorkDtypeGuard;
using detail::is_depthwise;

namespace {

torch::Tensor take(const torch::Tensor& t, int64_t dim, const torch::Tensor& idx) {
  if (!t.defined() || t.dim() == 0) return t;
  return t.index_select(dim, idx).contiguous();
}

/// Slices the tensors of chain layer `l` along dim 0 (per-channel tensors of BN/PReLU/Clamp, a
/// conv's weight and bias) and its provenance.
void slice_out(ir::ChainLayer& l, const torch::Tensor& keep, const std::vector<int64_t>& kept) {
  for (auto& [name, t] : l.tensors) {
    if (t.dim() == 0) continue;  // num_batches_tracked
    t = take(t, 0, keep);
  }
  const int64_t k = keep.size(0);
  if (is_depthwise(l.spec)) l.spec.in_channels = l.spec.groups = k;
  l.spec.out_channels = k;
  l.origin = l.origin.select(kept);
}

/// Slices the input channels of a (possibly grouped) conv or the input features of a linear.
void slice_in(ir::ChainLayer& l, const torch::Tensor& keep) {
  auto& w = l.tensors.at("weight");
  const int64_t k = keep.size(0);
  if (l.spec.kind == LayerKind::Conv && l.spec.groups > 1) {
    const int64_t g = l.spec.groups, gin = l.spec.in_channels / g, gout = l.spec.out_channels / g;
    std::vector<torch::Tensor> parts;
    for (int64_t j = 0; j < g; ++j) {
      auto mask = keep.ge(j * gin).logical_and(keep.lt((j + 1) * gin));
      auto local = keep.masked_select(mask) - j * gin;
      TORCH_CHECK(local.size(0) == k / g, "internal: uneven channels per group in layer ", l.spec.describe());
      parts.push_back(w.narrow(0, j * gout, gout).index_select(1, local));
    }
    w = torch::cat(parts, 0).contiguous();
  } else {
    w = take(w, 1, keep);
  }
  l.spec.in_channels = k;
}

/// v_c: what each channel of a unit becomes at the consumer's input when its BN outputs beta_c (its
/// gamma set to 0): beta through the layers between the importance BN and the consumer (float64 [C]).
torch::Tensor constant_at_consumer(const Chain& ch, const PruneUnit& u) {
  auto v = ch.layers[u.importance].at("bias").clone();
  for (size_t j = u.importance + 1; j < u.consumer; ++j) {
    const auto& l = ch.layers[j];
    switch (l.spec.kind) {
      case LayerKind::ReLU:
        v = v.clamp_min(0.0);
        break;
      case LayerKind::PReLU:
        v = torch::where(v >= 0, v, v * l.at("weight"));
        break;
      case LayerKind::Clamp:
        v = torch::maximum(torch::minimum(v, l.at("max")), l.at("min"));
        break;
      case LayerKind::Conv: {  // a tied depthwise conv without a BN after it: sum of the taps, bias
        v = v * l.at("weight").to(torch::kDouble).sum({1, 2, 3});
        if (l.tensors.count("bias")) v = v + l.at("bias");
        break;
      }
      default:  // poolings and Flatten keep a constant
        break;
    }
  }
  return v;
}

/// Does the consumer get a bias it lacks when a channel with a nonzero constant is folded into it?
bool folds_into_bias(const Chain& ch, const PruneUnit& u) {
  return !(ch.layers[u.consumer].spec.kind == LayerKind::Conv && u.consumer + 1 < ch.layers.size() &&
           ch.layers[u.consumer + 1].spec.kind == LayerKind::BatchNorm);
}

/// Folds the constants `v` of the removed channels (kept[c] false) into the consumer: for a conv
/// followed by a BN, its running mean -= sum_taps W[o, c] v_c; otherwise the consumer's bias +=
/// (conv: sum_taps W[o, c] v_c, linear: W[o, c] v_c). Returns {folded, folded at a padded border}.
std::pair<int64_t, int64_t> fold_removed(Chain& ch, const PruneUnit& u, const torch::Tensor& v,
                                         const std::vector<bool>& kept) {
  auto& cl = ch.layers[u.consumer];
  const auto& cs = cl.spec;
  const auto w = cl.at("weight").to(torch::kDouble);
  torch::Tensor shift = torch::zeros({cs.out_channels}, torch::kDouble);
  int64_t folded = 0, border = 0;
  const int64_t g = cs.kind == LayerKind::Conv ? cs.groups : 1, gin = cs.in_channels / g, gout = cs.out_channels / g;
  const bool padded = cs.kind == LayerKind::Conv && cs.padding > 0 && cs.kernel > 1;
  for (int64_t c = 0; c < u.channels; ++c) {
    const double vc = v[c].item<double>();
    if (kept[c] || vc == 0.0) continue;
    ++folded;
    const int64_t j = c / gin, local = c % gin;
    auto rows = w.narrow(0, j * gout, gout).select(1, local);  // [gout, k, k] or [out]
    if (cs.kind == LayerKind::Conv) {
      shift.narrow(0, j * gout, gout).add_(rows.sum({1, 2}) * vc);
      if (padded) {  // off-centre taps read zero padding on the border pixels
        auto off = rows.clone();
        off.select(1, cs.kernel / 2).select(1, cs.kernel / 2).zero_();
        if (off.abs().max().item<double>() > 0) ++border;
      }
    } else {
      shift.add_(rows * vc);
    }
  }
  if (folded == 0) return {0, 0};
  if (!folds_into_bias(ch, u)) {
    auto& mean = ch.layers[u.consumer + 1].tensors.at("running_mean");
    mean = mean - shift;
  } else {
    if (!cl.spec.bias) {
      cl.spec.bias = true;
      cl.tensors["bias"] = torch::zeros({cs.out_channels}, torch::kDouble);
    }
    cl.tensors["bias"] = cl.tensors["bias"] + shift;
  }
  return {folded, border};
}

void check_options(const PruneOptions& o) {
  TORCH_CHECK(!std::holds_alternative<std::monostate>(o.criterion()), "give exactly one of threshold, ratio, target_macs, target_params, target_latency_ms or "
              "target_speedup (got threshold ", o.threshold(), ", ratio ", o.ratio(), ", target_macs ", o.target_macs(),
              ", target_params ", o.target_params(), ", target_latency_ms ", o.target_latency_ms(), ", target_speedup ",
              o.target_speedup(), ")");
  for (double v : {o.threshold(), o.ratio(), o.target_macs(), o.target_params(), o.max_layer_ratio(),
                   o.target_latency_ms(), o.target_speedup()})
    TORCH_CHECK(std::isfinite(v), "pruning options must be finite numbers");
  TORCH_CHECK(o.ratio() < 1.0, "ratio must be in [0, 1) (got ", o.ratio(), ")");
  TORCH_CHECK(o.target_macs() < 0 || (o.target_macs() > 0 && o.target_macs() <= 1.0),
              "target_macs must be in (0, 1] (got ", o.target_macs(), ")");
  TORCH_CHECK(o.target_params() < 0 || (o.target_params() > 0 && o.target_params() <= 1.0),
              "target_params must be in (0, 1] (got ", o.target_params(), ")");
  TORCH_CHECK(o.max_layer_ratio() > 0 && o.max_layer_ratio() <= 1.0, "max_layer_ratio must be in (0, 1] (got ",
              o.max_layer_ratio(), ")");
  TORCH_CHECK(o.target_latency_ms() < 0 || o.target_latency_ms() > 0, "target_latency_ms must be positive (got ",
              o.target_latency_ms(), ")");
  TORCH_CHECK(o.target_speedup() < 0 || o.target_speedup() >= 1.0, "target_speedup must be at least 1 (got ",
              o.target_speedup(), ")");
  TORCH_CHECK(o.round_to() >= 1, "round_to must be at least 1 (got ", o.round_to(), ")");
  TORCH_CHECK(o.input_size() >= 0, "input_size must be non-negative (got ", o.input_size(), ")");
  TORCH_CHECK(o.scope() == PruneScope::Global || o.ratio() >= 0,
              "scope 'layer' applies a ratio to every layer; it needs ratio (not a threshold or a target)");
  TORCH_CHECK(!o.executed_macs() || !o.reconstruct() || o.reconstruct_keep_dirac(),
              "executed_macs with reconstruct needs reconstruct_keep_dirac: a free refit moves the Dirac copies, and the "
              "runtime then computes them as convolutions");
}

}  // namespace

PruneCriterion PruneOptions::criterion() const {
  const int set = (threshold() >= 0) + (ratio() >= 0) + (target_macs() >= 0) + (target_params() >= 0) +
                  (target_latency_ms() >= 0) + (target_speedup() >= 0);
  if (set != 1) return std::monostate{};
  if (threshold() >= 0) return criterion::Threshold{threshold()};
  if (ratio() >= 0) return criterion::Ratio{ratio()};
  if (target_macs() >= 0) return criterion::TargetMacs{target_macs()};
  if (target_params() >= 0) return criterion::TargetParams{target_params()};
  if (target_latency_ms() >= 0) return criterion::TargetLatencyMs{target_latency_ms()};
  return criterion::TargetSpeedup{target_speedup()};
}

PruneOptions& PruneOptions::criterion(const PruneCriterion& c) {
  threshold(-1.0).ratio(-1.0).target_macs(-1.0).target_params(-1.0).target_latency_ms(-1.0).target_speedup(-1.0);
  struct Set {
    PruneOptions& o;
    void operator()(std::monostate) const {}
    void operator()(criterion::Threshold v) const { o.threshold(v.value); }
    void operator()(criterion::Ratio v) const { o.ratio(v.fraction); }
    void operator()(criterion::TargetMacs v) const { o.target_macs(v.fraction); }
    void operator()(criterion::TargetParams v) const { o.target_params(v.fraction); }
    void operator()(criterion::TargetLatencyMs v) const { o.target_latency_ms(v.ms); }
    void operator()(criterion::TargetSpeedup v) const { o.target_speedup(v.factor); }
  };
  std::visit(Set{*this}, c);
  return *this;
}

namespace {
/// The "prune_criterion" metadata entry.
std::string describe_criterion(const PruneOptions& o) {
  struct Describe {
    const PruneOptions& o;
    std::string operator()(std::monostate) const { return "none"; }
    std::string operator()(criterion::Threshold v) const { return fmt::format("threshold {}", v.value); }
    std::string operator()(criterion::Ratio v) const { return fmt::format("ratio {} ({})", v.fraction, to_string(o.scope())); }
    std::string operator()(criterion::TargetMacs v) const { return fmt::format("target_macs {}", v.fraction); }
    std::string operator()(criterion::TargetParams v) const { return fmt::format("target_params {}", v.fraction); }
    std::string operator()(criterion::TargetLatencyMs v) const {
      return fmt::format("target_latency_ms {} (batch {})", v.ms, o.latency().batch());
    }
    std::string operator()(criterion::TargetSpeedup v) const {
      return fmt::format("target_speedup {} (batch {})", v.factor, o.latency().batch());
    }
  };
  return std::visit(Describe{o}, o.criterion());
}
}  // namespace

namespace detail {

PruneResult prune_plain(const PlainNetImpl& net, const PruneOptions& o, const EligibleFn& eligible,
                        const torch::Tensor& calibration) {
  check_options(o);
  TORCH_CHECK(!o.reconstruct() || calibration.defined(), "reconstruct needs calibration images (the prune overload ",
              "with a calibration tensor; on the command line --calib-dataset)");
  const bool has_bn = std::any_of(net.specs().begin(), net.specs().end(),
                                  [](const LayerSpec& s) { return s.kind == LayerKind::BatchNorm; });
  TORCH_CHECK(has_bn, "the plain network has no BatchNorm layers (fused/deploy form): the BN scales (gamma) that "
              "slimming ranks channels by are gone; prune the form with BatchNorms kept (ConvertOptions::keep_bn)");
  PruneReport rep;
  auto units = prune_units(net, &rep.notes);
  TORCH_CHECK(!units.empty(), "the plain network has no prunable unit (a conv followed by a BatchNorm whose "
              "channels reach a conv or a pooled linear)");

  ir::PassLog log;
  auto [dtype, device] = dtype_device(net);
  WorkDtypeGuard work(dtype);
  Chain ch = Chain::from(net);

  // importance (+inf where not removable) and the constant each channel leaves behind
  std::vector<std::vector<double>> imp(units.size());
  std::vector<torch::Tensor> constant(units.size());
  const auto importances = units_importance(net, units, o.importance(), calibration);
  for (size_t u = 0; u < units.size(); ++u) {
    auto t = importances[u].contiguous();
    imp[u].assign(t.data_ptr<double>(), t.data_ptr<double>() + t.numel());
    if (eligible) {
      auto el = eligible(units[u]).to(torch::kBool).contiguous();
      for (int64_t c = 0; c < units[u].channels; ++c)
        if (!el[c].item<bool>()) imp[u][c] = std::numeric_limits<double>::infinity();
    }
    constant[u] = constant_at_consumer(ch, units[u]);
  }
  // Exact zeros: a channel whose BN has gamma 0 and whose constant at the consumer is 0 (the reserve
  // of a shortcut scale <= 0) contributes nothing; it goes first (importance 0, nothing to fold) and
  // on its own, not with the stream group its Dirac weights tie it to.
  std::vector<std::vector<bool>> zero(units.size());
  int64_t zeros = 0;
  for (size_t u = 0; u < units.size(); ++u) {
    zero[u].assign(units[u].channels, false);
    const auto gamma = ch.layers[units[u].importance].at("weight").to(torch::kDouble).contiguous();
    const auto v = constant[u].to(torch::kDouble).contiguous();
    const auto g = gamma.accessor<double, 1>(), k = v.accessor<double, 1>();
    for (int64_t c = 0; c < units[u].channels; ++c)
      if (!std::isinf(imp[u][c]) && g[c] == 0.0 && k[c] == 0.0) {
        zero[u][c] = true;
        imp[u][c] = 0.0;
        ++zeros;
      }
  }
  if (zeros > 0)
    rep.notes.push_back(fmt::format("{} channel(s) exactly zero (BN gamma 0 and nothing left at the consumer, "
                                    "e.g. the reserve of a shortcut scale <= 0), removed first",
                                    zeros));
  // executed MACs: an RM block runs as a shortcut only while its first and middle convs keep a
  // branch channel (a conv of copies alone is computed whole), so each keeps its most important one
  const auto shortcuts = dirac_shortcuts(net);
  if (o.executed_macs()) {
    for (const auto& sc : shortcuts)
      for (size_t k = 0; k + 1 < sc.convs.size(); ++k)
        for (size_t u = 0; u < units.size(); ++u) {
          if (units[u].producer != sc.convs[k]) continue;
          int64_t best = -1;
          for (int64_t c = 0; c < units[u].channels; ++c)
            if (sc.copies[k][c] < 0 && !std::isinf(imp[u][c]) && (best < 0 || imp[u][c] > imp[u][best])) best = c;
          if (best >= 0) imp[u][best] = std::numeric_limits<double>::infinity();
        }
  }
  const auto adds_bias = [&](size_t u, const std::vector<int64_t>& kept) {
    if (!o.fold_removed() || !folds_into_bias(ch, units[u])) return false;
    std::vector<bool> k(units[u].channels, false);
    for (auto c : kept) k[c] = true;
    for (int64_t c = 0; c < units[u].channels; ++c)
      if (!k[c] && constant[u][c].item<double>() != 0.0) return true;
    return false;
  };
  rep.input_size = o.input_size() > 0 ? o.input_size() : default_input_size(net);
  rep.shortcuts_before = static_cast<int64_t>(shortcuts.size());
  rep.executed_macs_before = executed_macs(net, shortcuts, rep.input_size);
  const PruneCost cost(net, units, rep.input_size, adds_bias,
                       o.executed_macs() ? shortcuts : std::vector<DiracShortcut>{});
  std::vector<std::vector<int64_t>> all;
  for (const auto& u : units) {
    all.emplace_back(u.channels);
    std::iota(all.back().begin(), all.back().end(), int64_t{0});
  }
  const auto cost_before = cost(all);  // {parameters, MACs} as the cost model counts them (executed or not)
  std::tie(rep.params_before, rep.macs_before) = cost_before;
  if (o.executed_macs()) {
    TORCH_CHECK(rep.macs_before == rep.executed_macs_before, "internal: the pruning cost model counts ", rep.macs_before,
                " executed MACs for the original, the runtime's shortcuts ", rep.executed_macs_before);
    rep.macs_before = PruneCost(net, units, rep.input_size, adds_bias)(all).second;
  }

  // Targets: importance per unit of what removing the channel saves (MACs, or parameters for a
  // parameter target), so a cheap channel is not kept over an expensive one of about the same
  // importance. The saving is the cost model's, per channel (a unit's channels may differ: a reserved
  // copy the runtime runs as a shortcut saves no executed MACs, a branch channel its row and column)
  // and per stream group (its members removed together). Stream groups (targets only: a threshold or a
  // ratio keeps its per-channel meaning): one score, the sum or the mean of the members' importances
  // (group_reduction; per cost: over the group's saving). A member that may not be removed stays +inf.
  const bool by_target = o.target_macs() >= 0 || o.target_params() >= 0 || o.target_latency_ms() >= 0 ||
                         o.target_speedup() >= 0;
  const bool per_cost = by_target && o.per_cost();
  const bool by_params = o.target_params() >= 0;
  const auto saving_of = [&](const std::vector<std::pair<size_t, int64_t>>& removed) {
    auto k = all;
    for (const auto& [u, c] : removed) k[u].erase(std::find(k[u].begin(), k[u].end(), c));
    const auto [p, m] = cost(k);
    return std::max(static_cast<double>(by_params ? cost_before.first - p : cost_before.second - m), 1.0);
  };
  std::vector<std::vector<bool>> grouped(units.size());
  for (size_t u = 0; u < units.size(); ++u) grouped[u].assign(units[u].channels, false);
  if (o.grouping() == PruneGrouping::Stream && by_target) {
    for (const auto& group : prune_groups(net, units)) {
      double sum = 0.0;
      std::vector<std::pair<size_t, int64_t>> members;
      for (const auto& [u, c] : group)
        if (!std::isinf(imp[u][c]) && !zero[u][c]) {
          sum += imp[u][c];
          members.emplace_back(u, c);
        }
      const double reduced = o.group_reduction() == PruneGroupReduction::Mean && !members.empty()
                                 ? sum / static_cast<double>(members.size())
                                 : sum;
      const double score = per_cost && !members.empty() ? reduced / saving_of(members) : reduced;
      for (const auto& [u, c] : group) {
        if (zero[u][c]) continue;
        grouped[u][c] = true;
        if (!std::isinf(imp[u][c])) imp[u][c] = score;
      }
      ++rep.stream_groups;
    }
  }
  if (per_cost)
    for (size_t u = 0; u < units.size(); ++u)
      for (int64_t c = 0; c < units[u].channels; ++c)
        if (!grouped[u][c] && !std::isinf(imp[u][c]) && !zero[u][c]) imp[u][c] /= saving_of({{u, c}});
  // fold, then slice (folding reads the consumer's weights before they are sliced); builds the
  // network the units' current selection gives
  const auto apply = [&](const std::vector<PruneUnit>& us, PruneReport& rp) {
    Chain c = ch;
    for (size_t u = 0; u < us.size(); ++u) {
      const auto& unit = us[u];
      if (static_cast<int64_t>(unit.kept.size()) == unit.channels) continue;
      std::vector<bool> kept(unit.channels, false);
      for (auto k : unit.kept) kept[k] = true;
      const auto& origin = net.origin(unit.producer);
      for (int64_t k = 0; k < unit.channels; ++k)
        if (!kept[k]) ++rp.removed_by_role[origin.known() ? to_string(origin.role(k)) : "unknown"];
      if (o.fold_removed()) {
        auto [n, border] = fold_removed(c, unit, constant[u], kept);
        rp.folded += n;
        rp.folds_at_border += border;
      }
    }
    for (const auto& unit : us) {
      if (static_cast<int64_t>(unit.kept.size()) == unit.channels) continue;
      auto keep = torch::tensor(unit.kept, torch::kLong);
      slice_out(c.layers[unit.producer], keep, unit.kept);
      for (size_t j : unit.sliced) slice_out(c.layers[j], keep, unit.kept);
      for (size_t j = unit.producer + 1; j < unit.consumer; ++j)  // ReLU, poolings, Flatten: provenance only
        if (std::find(unit.sliced.begin(), unit.sliced.end(), j) == unit.sliced.end())
          c.layers[j].origin = c.layers[j].origin.select(unit.kept);
      slice_in(c.layers[unit.consumer], keep);
    }
    auto built = c.build(net.options(), dtype, device);
    built->metadata() = net.metadata();
    built->eval();
    return built;
  };
  const auto kept_lists = [](const std::vector<PruneUnit>& us) {
    std::vector<std::vector<int64_t>> k;
    for (const auto& u : us) k.push_back(u.kept);
    return k;
  };

  PruneResult r;
  if (o.target_latency_ms() >= 0 || o.target_speedup() >= 0) {
    // latency: select with the per-layer table, measure the result, rescale the prediction, repeat
    auto lo = o.latency();
    if (lo.input_size() == 0) lo.input_size(rep.input_size);
    // with executed MACs the table times and predicts the convs at the shapes the runtime executes
    const auto shapes_of = [&](const std::vector<std::vector<int64_t>>& kept) {
      return o.executed_macs() ? cost.executed_specs(kept) : cost.specs(kept);
    };
    const auto table = LatencyTable::measure(net, cost.resized(), lo,
                                             o.executed_macs() ? cost.executed_specs(all) : std::vector<LayerSpec>{});
    rep.latency_table_points = table.points();
    rep.latency_before_ms = table.whole_ms();
    rep.latency_target_ms = o.target_latency_ms() >= 0 ? o.target_latency_ms() : table.whole_ms() / o.target_speedup();
    const std::string what = o.target_latency_ms() >= 0
                                 ? fmt::format("target_latency_ms {}", o.target_latency_ms())
                                 : fmt::format("target_speedup {} ({:.4g} ms of the measured {:.4g} ms)",
                                               o.target_speedup(), rep.latency_target_ms, table.whole_ms());
    double scale = 1.0;
    constexpr int kRounds = 5;
    for (int round = 1;; ++round) {
      PruneReport rp = rep;
      auto us = units;
      ValueTarget vt{[&](const std::vector<std::vector<int64_t>>& kept) { return scale * table.estimate(shapes_of(kept)); },
                     rep.latency_target_ms, what};
      select_channels(net, us, imp, o, cost, rp, &vt);
      auto candidate = apply(us, rp);
      const double predicted = table.estimate(shapes_of(kept_lists(us)));
      const double measured = measure_latency_ms(*candidate, lo);
      rp.latency_rounds = round;
      rep.notes.push_back(fmt::format("latency round {}: {} channels removed, predicted {:.4g} ms, measured {:.4g} ms "
                                      "(target {:.4g} ms)", round, rp.channels_removed, scale * predicted, measured,
                                      rep.latency_target_ms));
      rp.notes = rep.notes;
      rp.latency_after_ms = measured;
      rp.latency_estimate_ms = scale * predicted;
      if (measured <= rep.latency_target_ms || round == kRounds) {
        std::string rounds;
        for (const auto& n : rep.notes)
          if (n.rfind("latency round", 0) == 0) rounds += "\n  " + n;
        TORCH_CHECK(measured <= rep.latency_target_ms * 1.05, what, " was not met after ", kRounds, " measured ",
                    "selections (the machine may be busy: time on an idle machine; or the target is below what ",
                    "pruning can reach; a round_to of 8 or 16 keeps channel counts the kernels run well):", rounds);
        if (measured > rep.latency_target_ms)
          rp.notes.push_back(fmt::format("latency {:.4g} ms is within 5% above the target {:.4g} ms after {} rounds",
                                         measured, rep.latency_target_ms, kRounds));
        rep = std::move(rp);
        units = std::move(us);
        r.net = candidate;
        break;
      }
      scale = measured / std::max(predicted, 1e-9) * (1.0 + 0.02 * round);  // a margin grows per miss
    }
  } else {
    select_channels(net, units, imp, o, cost, rep);
    r.net = apply(units, rep);
  }
  std::tie(rep.params_after, rep.macs_after) = cost(kept_lists(units));
  const int64_t modelled_executed = rep.macs_after;
  if (o.executed_macs()) rep.macs_after = PruneCost(net, units, rep.input_size, adds_bias)(kept_lists(units)).second;
  TORCH_CHECK(rep.params_before == count_parameters(net) && rep.params_after == count_parameters(*r.net),
              "internal: the pruning cost model counts ", rep.params_before, " -> ", rep.params_after,
              " parameters, the networks have ", count_parameters(net), " -> ", count_parameters(*r.net));
  log.lap("prune", ir::PassRecord::Kind::Transform);
  if (o.reconstruct()) {
    reconstruct_consumers(net, *r.net, units, calibration, o, rep);
    log.lap("reconstruct", ir::PassRecord::Kind::Transform);
  }
  {
    const auto after = dirac_shortcuts(*r.net);
    rep.shortcuts_after = static_cast<int64_t>(after.size());
    rep.executed_macs_after = executed_macs(*r.net, after, rep.input_size);
    if (o.executed_macs() && rep.executed_macs_after != modelled_executed)
      rep.notes.push_back(fmt::format("the runtime executes {} MACs per image, the selection counted {} (a shortcut it "
                                      "counted is not one the runtime finds, or the reverse)",
                                      rep.executed_macs_after, modelled_executed));
  }
  rep.units = std::move(units);
  auto& md = r.net->metadata();
  md["pruned_ratio"] = fmt::format("{:.6f}", rep.params_ratio_removed());
  md["pruned_channels"] = fmt::format("{}/{}", rep.channels_removed, rep.channels_total);
  md["prune_criterion"] = describe_criterion(o);
  md["prune_importance"] = to_string(o.importance());
  md["prune_grouping"] = to_string(o.grouping());
  if (o.grouping() == PruneGrouping::Stream) md["prune_group_reduction"] = to_string(o.group_reduction());
  if (o.reconstruct()) md["prune_reconstructed"] = fmt::format("{}", rep.reconstructed);
  md["prune_threshold"] = fmt::format("{}", rep.threshold);
  r.net->train(net.is_training());
  r.report = std::move(rep);
  r.passes = log.records();
  return r;
}

}  // namespace detail

PruneResult prune(const ModelImpl& model, const PruneOptions& options) {
  const auto* net = dynamic_cast<const PlainNetImpl*>(&model);
  TORCH_CHECK(net || model.kind() == ModelKind::Residual, "pruning needs a PlainNet with BatchNorms kept; this '",
              model.family(), "' network is another kind (", to_string(model.kind()), "): prune the model file's "
              "float plain network, before quantizing it or preparing it for inference");
  TORCH_CHECK(net, "pruning needs a plain network with BatchNorms kept, got a residual '", model.options().arch(),
              "' model (", model.family(), "): convert it first (ConvertOptions::keep_bn), or use the residual "
              "baseline (prune_residual)");
  return detail::prune_plain(*net, options, nullptr);
}

PruneResult prune(const ModelImpl& model, const PruneOptions& options, const torch::Tensor& calibration) {
  const auto* net = dynamic_cast<const PlainNetImpl*>(&model);
  if (!net) return prune(model, options);  // the same errors
  return detail::prune_plain(*net, options, nullptr, calibration);
}

std::string PruneReport::to_string() const {
  std::string roles;
  for (const auto& [role, n] : removed_by_role) roles += fmt::format("{}{} {}", roles.empty() ? "" : ", ", n, role);
  return fmt::format("removed {} of {} prunable channels in {} units{}{} (importance threshold {:.4g}); parameters "
                     "{} -> {} ({:.1f}% removed); MACs at {}x{}: {} -> {}; {} removed constants folded ({} on a "
                     "padded border)",
                     channels_removed, channels_total, units.size(), roles.empty() ? "" : " (" + roles + ")",
                     stream_groups > 0 ? fmt::format(", {} stream groups ranked as one", stream_groups) : "",
                     threshold, params_before, params_after, 100.0 * params_ratio_removed(), input_size, input_size,
                     macs_before, macs_after, folded, folds_at_border) +
         (shortcuts_before > 0 || shortcuts_after > 0
              ? fmt::format("; executed on onednn: {} -> {} MACs ({} -> {} Dirac shortcuts)", executed_macs_before,
                            executed_macs_after, shortcuts_before, shortcuts_after)
              : "") +
         (reconstructed > 0 ? fmt::format("; {} layers refitted by least squares (relative output error {:.4f} -> {:.4f})",
                                          reconstructed, reconstruction_error_before, reconstruction_error_after)
                            : "");
}

}  // namespace rmnet
