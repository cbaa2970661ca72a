// Which channels go: threshold, global or per-layer ratio, or a MACs/parameter target; the per-layer
// cap, equal counts per group, rounding to a multiple, never empty. And the cost model the targets
// are met with. See include/rmnet/prune/slim.h.
#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>

#include <fmt/format.h>

#include "prune_internal.h"

namespace rmnet::detail {

// ---------------------------------------------------------------------------------------------
// Cost model: parameters and MACs (conv: out * H * W * in / groups * k * k, linear: in * out, SE:
// its two linears), as count_parameters and profile_model count them.

PruneCost::PruneCost(const PlainNetImpl& net, const std::vector<PruneUnit>& units, int64_t input_size,
                     AddsBias adds_bias, std::vector<DiracShortcut> shortcuts)
    : specs_(net.specs()),
      pixels_(specs_.size(), 1),
      out_unit_(specs_.size(), -1),
      in_unit_(specs_.size(), -1),
      adds_bias_(std::move(adds_bias)),
      shortcuts_(std::move(shortcuts)) {
  const auto sides = output_sides(specs_, input_size);
  for (size_t i = 0; i < specs_.size(); ++i) pixels_[i] = sides[i] * sides[i];
  for (size_t u = 0; u < units.size(); ++u) {
    out_unit_[units[u].producer] = static_cast<int>(u);
    for (auto j : units[u].sliced) out_unit_[j] = static_cast<int>(u);
    in_unit_[units[u].consumer] = static_cast<int>(u);
    unit_channels_.push_back(units[u].channels);
  }
}

std::vector<LayerSpec> PruneCost::specs(const std::vector<std::vector<int64_t>>& kept) const {
  auto out = specs_;
  for (size_t i = 0; i < out.size(); ++i) {
    auto& s = out[i];
    if (out_unit_[i] >= 0) {
      const auto k = static_cast<int64_t>(kept[out_unit_[i]].size());
      if (is_depthwise(s)) s.in_channels = s.groups = k;
      s.out_channels = k;
    }
    if (in_unit_[i] >= 0) {
      const auto u = static_cast<size_t>(in_unit_[i]);
      s.in_channels = static_cast<int64_t>(kept[u].size());
      if (!s.bias && static_cast<int64_t>(kept[u].size()) < unit_channels_[u] && adds_bias_ && adds_bias_(u, kept[u]))
        s.bias = true;
    }
  }
  return out;
}

std::vector<LayerSpec> PruneCost::executed_specs(const std::vector<std::vector<int64_t>>& kept) const {
  auto all = specs(kept);
  if (shortcuts_.empty()) return all;
  std::vector<int64_t> free_rows(all.size(), 0), free_cols(all.size(), 0), extra(all.size(), 0);
  discount(kept, free_rows, free_cols, extra);
  for (size_t i = 0; i < all.size(); ++i) {
    auto& s = all[i];
    if (s.kind != LayerKind::Conv || (free_rows[i] == 0 && free_cols[i] == 0)) continue;
    if (s.groups == 1) {
      s.out_channels -= free_rows[i];
      s.in_channels -= free_cols[i];
    } else {  // the copies fill whole groups: fewer groups of the same size
      const int64_t out_g = s.out_channels / s.groups, in_g = s.in_channels / s.groups;
      s.out_channels -= free_rows[i];
      s.groups = s.out_channels / out_g;
      s.in_channels = s.groups * in_g;
    }
  }
  return all;
}

std::vector<bool> PruneCost::resized() const {
  std::vector<bool> r(specs_.size(), false);
  for (size_t i = 0; i < specs_.size(); ++i) r[i] = out_unit_[i] >= 0 || in_unit_[i] >= 0;
  return r;
}

void PruneCost::discount(const std::vector<std::vector<int64_t>>& kept, std::vector<int64_t>& free_rows,
                         std::vector<int64_t>& free_cols, std::vector<int64_t>& extra) const {
  // membership of an original channel among a layer's kept outputs / inputs
  std::vector<std::vector<bool>> keep_of(kept.size());
  for (size_t u = 0; u < kept.size(); ++u) {
    keep_of[u].assign(unit_channels_[u], false);
    for (auto c : kept[u]) keep_of[u][c] = true;
  }
  const auto row_kept = [&](size_t l, int64_t r) { return out_unit_[l] < 0 || keep_of[out_unit_[l]][r]; };
  const auto col_kept = [&](size_t l, int64_t c) {
    if (in_unit_[l] >= 0) return static_cast<bool>(keep_of[in_unit_[l]][c]);
    return is_depthwise(specs_[l]) ? row_kept(l, c) : true;  // a tied depthwise conv: its inputs are its outputs
  };
  const auto kept_count = [](const std::vector<bool>& v) { return static_cast<int64_t>(std::count(v.begin(), v.end(), true)); };
  for (const auto& sc : shortcuts_) {
    const size_t a = sc.convs.front(), b = sc.convs.back(), nc = sc.convs.size() - 1;  // nc: A and the Ms
    // each copy chain (one channel c of A's input) kept or removed whole; every conv keeps a branch row
    bool whole = true;
    std::vector<std::vector<bool>> copy_kept(nc);  // per conv (A, Ms): its rows that are kept copies
    for (size_t k = 0; k < nc && whole; ++k) {
      const size_t l = sc.convs[k];
      copy_kept[k].assign(sc.copies[k].size(), false);
      bool branch = false;
      for (size_t r = 0; r < sc.copies[k].size(); ++r) {
        const int64_t c = sc.copies[k][r];
        const bool rk = row_kept(l, static_cast<int64_t>(r));
        if (c < 0) {
          branch = branch || rk;
          continue;
        }
        copy_kept[k][r] = rk;
        whole = whole && rk == col_kept(a, c) && (sc.projection || rk == row_kept(b, c));
      }
      whole = whole && branch;
    }
    if (!whole || kept_count(copy_kept[0]) == 0) continue;  // broken, or no copy left: not a shortcut
    for (size_t k = 0; k < nc; ++k) {
      const size_t l = sc.convs[k];
      free_rows[l] = kept_count(copy_kept[k]);
      if (k > 0 && specs_[l].groups == 1) free_cols[l] = kept_count(copy_kept[k - 1]);
    }
    free_cols[b] = kept_count(copy_kept[nc - 1]);
    if (sc.projection) {
      int64_t outs = 0, ins = 0;
      for (int64_t r = 0; r < specs_[b].out_channels; ++r) outs += row_kept(b, r);
      for (int64_t c = 0; c < specs_[a].in_channels; ++c) ins += col_kept(a, c);
      extra[b] = pixels_[b] * outs * ins;
    }
  }
}

std::pair<int64_t, int64_t> PruneCost::operator()(const std::vector<std::vector<int64_t>>& kept) const {
  int64_t params = 0, macs = 0;
  const auto all = specs(kept);
  std::vector<int64_t> free_rows(all.size(), 0), free_cols(all.size(), 0), extra(all.size(), 0);
  if (!shortcuts_.empty()) discount(kept, free_rows, free_cols, extra);
  for (size_t i = 0; i < all.size(); ++i) {
    const auto& s = all[i];
    const bool bias = s.bias;
    switch (s.kind) {
      case LayerKind::Conv: {
        const int64_t per_out = s.in_channels / s.groups * s.kernel * s.kernel;
        params += s.out_channels * per_out + (bias ? s.out_channels : 0);
        macs += (s.out_channels - free_rows[i]) * pixels_[i] * ((s.in_channels - free_cols[i]) / s.groups) * s.kernel *
                    s.kernel + extra[i];
        break;
      }
      case LayerKind::Linear:
        params += s.in_channels * s.out_channels + (bias ? s.out_channels : 0);
        macs += s.in_channels * s.out_channels;
        break;
      case LayerKind::BatchNorm:
        params += 2 * s.out_channels;
        break;
      case LayerKind::PReLU:
        params += s.out_channels;
        break;
      case LayerKind::SE:
        params += 2 * s.hidden * s.scaled + s.hidden + s.scaled;
        macs += 2 * s.hidden * s.scaled;
        break;
      default:
        break;
    }
  }
  return {params, macs};
}

// ---------------------------------------------------------------------------------------------
// Selection.

namespace {

int64_t ceil_to(int64_t k, int64_t q) { return (k + q - 1) / q * q; }

/// Everything about one unit that does not depend on how many channels go.
struct UnitPlan {
  int64_t C = 0, G = 1, per = 0;
  int64_t cap = 0;         // at most this many channels removed (max_layer_ratio)
  int64_t lo = 1;          // kept per group at least: one, the cap, the non-removable channels
  int64_t q = 1;           // kept per group is a multiple of this (round_to), or `per`
  std::vector<int64_t> ascending;  // removable channels, least important first
  std::vector<std::vector<int64_t>> by_group;  // per group: channels, most important first
};

UnitPlan plan_unit(const PruneUnit& u, const std::vector<double>& imp, const PruneOptions& o) {
  UnitPlan p;
  p.C = u.channels;
  p.G = u.groups;
  p.per = p.C / p.G;
  p.cap = static_cast<int64_t>(std::floor(o.max_layer_ratio() * static_cast<double>(p.C) + 1e-9));
  p.q = std::lcm(p.G, o.round_to()) / p.G;
  int64_t fixed = 0;  // largest number of non-removable channels in a group
  p.by_group.resize(p.G);
  for (int64_t g = 0; g < p.G; ++g) {
    auto& idx = p.by_group[g];
    idx.resize(p.per);
    std::iota(idx.begin(), idx.end(), g * p.per);
    std::stable_sort(idx.begin(), idx.end(), [&](int64_t a, int64_t b) { return imp[a] > imp[b]; });
    fixed = std::max<int64_t>(fixed, std::count_if(idx.begin(), idx.end(), [&](int64_t c) { return std::isinf(imp[c]); }));
  }
  for (int64_t c = 0; c < p.C; ++c)
    if (!std::isinf(imp[c])) p.ascending.push_back(c);
  std::stable_sort(p.ascending.begin(), p.ascending.end(), [&](int64_t a, int64_t b) { return imp[a] < imp[b]; });
  p.lo = std::max<int64_t>({1, fixed, (p.C - p.cap + p.G - 1) / p.G});
  return p;
}

/// The smallest n in [0, most] with meets(n), given meets(most) (binary search; meets is taken to be
/// monotone: removing more channels never raises the cost).
size_t fewest(size_t most, const std::function<bool(size_t)>& meets) {
  size_t a = 0, b = most;
  while (a < b) {
    const size_t mid = a + (b - a) / 2;
    if (meets(mid))
      b = mid;
    else
      a = mid + 1;
  }
  return b;
}

struct Choice {
  std::vector<int64_t> kept;
  bool emptied = false;  // the selection left a group with nothing (kept the minimum instead)
};

/// The kept channels when the `removed` least important removable channels of the unit go.
Choice choose(const UnitPlan& p, int64_t removed, bool by_threshold) {
  std::vector<int64_t> left(p.G, p.per);
  for (int64_t j = 0; j < removed; ++j) --left[p.ascending[j] / p.per];
  const int64_t total = std::accumulate(left.begin(), left.end(), int64_t{0});
  // threshold: the largest count any group keeps (nothing above the threshold goes); otherwise the
  // mean, rounded
  int64_t k = by_threshold ? *std::max_element(left.begin(), left.end()) : (total + p.G / 2) / p.G;
  Choice c;
  c.emptied = k == 0;
  k = std::max(k, p.lo);
  if (p.q > 1) {
    k = by_threshold ? ceil_to(k, p.q) : (k + p.q / 2) / p.q * p.q;
    if (k < p.lo) k = ceil_to(p.lo, p.q);
  }
  k = std::min(k, p.per);
  for (int64_t g = 0; g < p.G; ++g) {
    c.kept.insert(c.kept.end(), p.by_group[g].begin(), p.by_group[g].begin() + k);
  }
  std::sort(c.kept.begin(), c.kept.end());
  return c;
}

}  // namespace

void select_channels(const PlainNetImpl& net, std::vector<PruneUnit>& units,
                     const std::vector<std::vector<double>>& imp, const PruneOptions& o, const PruneCost& cost,
                     PruneReport& rep, const ValueTarget* value_target) {
  const bool by_threshold = o.threshold() >= 0, by_ratio = o.ratio() >= 0;
  const bool by_target = o.target_macs() >= 0 || o.target_params() >= 0;
  std::vector<UnitPlan> plans;
  for (size_t u = 0; u < units.size(); ++u) plans.push_back(plan_unit(units[u], imp[u], o));

  // global order of the removable channels: (importance, unit, position in the unit's order)
  struct Cand {
    double v;
    size_t u;
  };
  std::vector<Cand> order;
  for (size_t u = 0; u < units.size(); ++u)
    for (auto c : plans[u].ascending) order.push_back({imp[u][c], u});
  std::stable_sort(order.begin(), order.end(), [](const Cand& a, const Cand& b) { return a.v < b.v; });
  rep.channels_total = static_cast<int64_t>(order.size());
  // channels of importance 0 (an exact zero, a constant, a channel no consumer reads) cost without
  // contributing: a target removes all of them even where fewer removals would meet it
  const size_t free_channels = static_cast<size_t>(
      std::find_if(order.begin(), order.end(), [](const Cand& c) { return c.v > 0.0; }) - order.begin());

  // how many of each unit's removable channels go, for the n globally least important (capped)
  const auto global_counts = [&](size_t n) {
    std::vector<int64_t> r(units.size(), 0);
    for (size_t j = 0, taken = 0; j < order.size() && taken < n; ++j) {
      auto& ru = r[order[j].u];
      if (ru < plans[order[j].u].cap) {
        ++ru;
        ++taken;
      }
    }
    return r;
  };
  const auto choose_all = [&](const std::vector<int64_t>& r) {
    std::vector<Choice> cs;
    for (size_t u = 0; u < units.size(); ++u) cs.push_back(choose(plans[u], r[u], by_threshold));
    return cs;
  };
  const auto kept_of = [](const std::vector<Choice>& cs) {
    std::vector<std::vector<int64_t>> k;
    for (const auto& c : cs) k.push_back(c.kept);
    return k;
  };

  // The fewest removals in the global order can overshoot a target by the last channel (group)
  // taken: a stream group or an expensive channel saves far more than is needed. Fill: walking the
  // removed channels back from the most important, put back each run of equal importance (a stream
  // group is one run) that is still the most important removed of its units, while the target still
  // holds (a run that does not fit blocks the rest of its units: kept channels stay a prefix).
  const auto fill = [&](size_t n, const std::function<bool(const std::vector<int64_t>&)>& fits) {
    std::vector<int64_t> counts(units.size(), 0);
    std::vector<size_t> taken;  // positions in `order` removed, as global_counts takes them
    for (size_t j = 0; j < order.size() && taken.size() < n; ++j)
      if (counts[order[j].u] < plans[order[j].u].cap) {
        ++counts[order[j].u];
        taken.push_back(j);
      }
    std::vector<bool> blocked(units.size(), false);
    constexpr int kTries = 256;
    int tries = 0;
    for (size_t t = taken.size(); t > 0 && tries < kTries;) {
      if (order[taken[t - 1]].v <= 0.0) break;  // the free channels stay removed
      size_t first = t - 1;  // the run [first, t) of equal importance
      while (first > 0 && order[taken[first - 1]].v == order[taken[t - 1]].v) --first;
      auto trial = counts;
      bool free = true;
      for (size_t k = first; k < t; ++k) {
        free = free && !blocked[order[taken[k]].u];
        --trial[order[taken[k]].u];
      }
      if (free) {
        ++tries;
        if (fits(trial)) {
          counts = std::move(trial);
          t = first;
          continue;
        }
      }
      for (size_t k = first; k < t; ++k) blocked[order[taken[k]].u] = true;
      t = first;
    }
    return counts;
  };

  std::vector<int64_t> r(units.size(), 0);
  if (value_target) {
    // the fewest removals whose value (the latency estimate) is at most the target; the value
    // falls as channels go (not strictly: a binary search on the global order)
    const auto value = [&](size_t n) { return value_target->value(kept_of(choose_all(global_counts(n)))); };
    const double least = value(order.size());
    TORCH_CHECK(least <= value_target->target, value_target->what, " cannot be reached: removing every removable ",
                "channel (within max_layer_ratio ", o.max_layer_ratio(), ", at least one channel per group",
                o.round_to() > 1 ? fmt::format(", multiples of {}", o.round_to()) : "", ") leaves ",
                fmt::format("{:.4g}", least), " against ", fmt::format("{:.4g}", value_target->target));
    r = fill(std::max(free_channels, fewest(order.size(), [&](size_t n) { return value(n) <= value_target->target; })),
             [&](const std::vector<int64_t>& c) { return value_target->value(kept_of(choose_all(c))) <= value_target->target; });
  } else if (by_threshold) {
    rep.threshold = o.threshold();
    for (size_t u = 0; u < units.size(); ++u) {
      int64_t n = 0;
      for (auto c : plans[u].ascending) n += imp[u][c] < o.threshold() ? 1 : 0;
      r[u] = std::min(n, plans[u].cap);
    }
  } else if (by_ratio && o.scope() == PruneScope::Layer) {
    for (size_t u = 0; u < units.size(); ++u) {
      const auto e = static_cast<double>(plans[u].ascending.size());
      r[u] = std::min(static_cast<int64_t>(std::floor(o.ratio() * e + 1e-9)), plans[u].cap);
    }
  } else if (by_ratio) {
    r = global_counts(static_cast<size_t>(std::floor(o.ratio() * static_cast<double>(order.size()) + 1e-9)));
  } else if (by_target) {
    const bool macs = o.target_macs() >= 0;
    const double frac = macs ? o.target_macs() : o.target_params();
    const auto measure = [&](size_t n) {
      auto c = cost(kept_of(choose_all(global_counts(n))));
      return macs ? c.second : c.first;
    };
    const int64_t full = measure(0);
    const auto target = static_cast<int64_t>(std::floor(frac * static_cast<double>(full)));
    const int64_t least = measure(order.size());
    TORCH_CHECK(least <= target, "target_", macs ? "macs " : "params ", frac, " cannot be reached: removing every ",
                "removable channel (within max_layer_ratio ", o.max_layer_ratio(), ", at least one channel per group",
                o.round_to() > 1 ? fmt::format(", multiples of {}", o.round_to()) : "", ") leaves ", least, " of ", full,
                macs ? " MACs" : " parameters", fmt::format(" ({:.3f})", static_cast<double>(least) / static_cast<double>(full)));
    r = fill(std::max(free_channels, fewest(order.size(), [&](size_t n) { return measure(n) <= target; })),
             [&](const std::vector<int64_t>& c) {
      const auto cost_c = cost(kept_of(choose_all(c)));
      return (macs ? cost_c.second : cost_c.first) <= target;
    });
  }

  auto choices = choose_all(r);
  double largest_removed = 0.0;
  for (size_t u = 0; u < units.size(); ++u) {
    auto& unit = units[u];
    const auto& c = choices[u];
    if (c.emptied) {
      TORCH_CHECK(o.keep_one(), "pruning would remove every channel of ", layer_name(net, unit.producer),
                  " (its channels are all among the least important: the largest importance of layer ",
                  unit.importance, " is ", *std::max_element(imp[u].begin(), imp[u].end()),
                  "); prune less (a lower ratio or threshold, a larger target, a max_layer_ratio below 1) or "
                  "keep one channel per group (keep_one)");
      rep.notes.push_back(fmt::format("{}: every channel selected, kept {} per group", layer_name(net, unit.producer),
                                      c.kept.size() / static_cast<size_t>(unit.groups)));
    }
    unit.kept = c.kept;
    std::vector<bool> keep(unit.channels, false);
    for (auto k : c.kept) keep[k] = true;
    for (int64_t ch = 0; ch < unit.channels; ++ch)
      if (!keep[ch]) largest_removed = std::max(largest_removed, imp[u][ch]);
    rep.channels_removed += unit.channels - static_cast<int64_t>(c.kept.size());
  }
  if (!by_threshold) rep.threshold = largest_removed;
}

}  // namespace rmnet::detail
