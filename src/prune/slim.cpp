// Network slimming on plain networks: find the prunable units of a chain, select channels by
// |gamma| (threshold or global ratio), slice the layers. See include/rmnet/prune/slim.h.
#include "rmnet/prune/slim.h"

#include <algorithm>
#include <cmath>
#include <functional>
#include <limits>
#include <map>
#include <numeric>

#include <fmt/format.h>
#include <torch/torch.h>

#include "../convert/chain.h"
#include "rmnet/convert/rm.h"
#include "rmnet/io/model_file.h"
#include "rmnet/models/mobilenet.h"
#include "rmnet/models/resnet.h"

namespace rmnet {
using detail::Chain;

namespace {

bool is_depthwise(const LayerSpec& s) {
  return s.kind == LayerKind::Conv && s.groups > 1 && s.groups == s.in_channels && s.groups == s.out_channels;
}

/// Per unit: which channels may be removed (bool [C]); undefined = all.
using EligibleFn = std::function<torch::Tensor(const PruneUnit&)>;

torch::Tensor take(const torch::Tensor& t, int64_t dim, const torch::Tensor& idx) {
  if (!t.defined() || t.dim() == 0) return t;
  return t.index_select(dim, idx).contiguous();
}

/// Slices the tensors of chain layer `l` along `dim` (per-channel tensors of BN/PReLU/Clamp,
/// a conv's weight and bias along dim 0).
void slice_out(detail::ChainLayer& l, const torch::Tensor& keep) {
  for (auto& [name, t] : l.tensors) {
    if (t.dim() == 0) continue;  // num_batches_tracked
    t = take(t, 0, keep);
  }
  const int64_t k = keep.size(0);
  switch (l.spec.kind) {
    case LayerKind::Conv:
      if (is_depthwise(l.spec)) l.spec.in_channels = l.spec.groups = k;
      l.spec.out_channels = k;
      break;
    default:
      l.spec.out_channels = k;
  }
}

/// Slices the input channels of a (possibly grouped) conv or the input features of a linear.
void slice_in(detail::ChainLayer& l, const torch::Tensor& keep) {
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

std::string layer_name(const PlainNetImpl& net, size_t i) { return fmt::format("layer {} ({})", i, net.spec(i).describe()); }

PruneResult prune_impl(const ModelImpl& model, const PruneOptions& o, const EligibleFn& eligible) {
  const auto* plain = dynamic_cast<const PlainNetImpl*>(&model);
  TORCH_CHECK(plain || model.family() != "plain", "pruning needs a PlainNet with BatchNorms kept; this '",
              model.family(), "' network is another kind (a deployed or quantized form?): prune the model file's "
              "network before preparing it for inference");
  TORCH_CHECK(plain, "pruning needs a plain network with BatchNorms kept, got a residual '", model.options().arch(),
              "' model (", model.family(), "): convert it first (ConvertOptions::keep_bn), or use the residual "
              "baseline (prune_residual)");
  const auto& net = *plain;
  const bool by_ratio = o.ratio() >= 0, by_threshold = o.threshold() >= 0;
  TORCH_CHECK(by_ratio != by_threshold, "give exactly one of a threshold or a ratio (got threshold ", o.threshold(),
              ", ratio ", o.ratio(), ")");
  TORCH_CHECK(!by_ratio || o.ratio() < 1.0, "ratio must be in [0, 1) (got ", o.ratio(), ")");
  TORCH_CHECK(std::isfinite(o.threshold()) && std::isfinite(o.ratio()), "threshold and ratio must be finite");
  const bool has_bn = std::any_of(net.specs().begin(), net.specs().end(),
                                  [](const LayerSpec& s) { return s.kind == LayerKind::BatchNorm; });
  TORCH_CHECK(has_bn, "the plain network has no BatchNorm layers (fused/deploy form): the BN scales (gamma) that "
              "slimming ranks channels by are gone; prune the BN-kept form (rmnet convert --keep-bn)");

  PruneReport rep;
  auto units = prune_units(net, &rep.notes);
  TORCH_CHECK(!units.empty(), "the plain network has no prunable unit (a conv followed by a BatchNorm whose "
              "channels reach a conv or a pooled linear)");

  auto [dtype, device] = detail::dtype_device(net);
  detail::WorkDtypeGuard work(dtype);
  Chain ch = Chain::from(net);

  // Importance per unit (|gamma|, float64), +inf where not eligible.
  const double inf = std::numeric_limits<double>::infinity();
  std::vector<std::vector<double>> imp(units.size());
  struct Cand {
    double v;
    size_t u;
    int64_t c;
  };
  std::vector<Cand> cands;
  for (size_t i = 0; i < units.size(); ++i) {
    auto g = ch.layers[units[i].importance].at("weight").abs().contiguous();
    torch::Tensor el = eligible ? eligible(units[i]) : torch::Tensor();
    imp[i].assign(g.data_ptr<double>(), g.data_ptr<double>() + g.numel());
    for (int64_t c = 0; c < units[i].channels; ++c) {
      if (el.defined() && !el[c].item<bool>()) {
        imp[i][c] = inf;
        continue;
      }
      cands.push_back({imp[i][c], i, c});
    }
  }
  rep.channels_total = static_cast<int64_t>(cands.size());
  std::vector<std::vector<bool>> removed(units.size());
  for (size_t i = 0; i < units.size(); ++i) removed[i].assign(units[i].channels, false);
  if (by_threshold) {
    rep.threshold = o.threshold();
    for (const auto& c : cands)
      if (c.v < o.threshold()) removed[c.u][c.c] = true;
  } else {
    std::stable_sort(cands.begin(), cands.end(), [](const Cand& a, const Cand& b) { return a.v < b.v; });
    const auto n = static_cast<size_t>(std::floor(o.ratio() * static_cast<double>(cands.size())));
    for (size_t j = 0; j < n; ++j) removed[cands[j].u][cands[j].c] = true;
    rep.threshold = n == 0 ? 0.0 : cands[n - 1].v;
  }

  // Per unit: equal k per group, never empty.
  for (size_t i = 0; i < units.size(); ++i) {
    auto& u = units[i];
    const int64_t G = u.groups, per = u.channels / G;
    // threshold: k = the largest count any group keeps (no channel above the threshold goes);
    // ratio: k = the mean count, rounded (the global ratio is met on average)
    int64_t k = 0, total = 0;
    for (int64_t g = 0; g < G; ++g) {
      int64_t n = 0;
      for (int64_t c = g * per; c < (g + 1) * per; ++c) n += removed[i][c] ? 0 : 1;
      k = std::max(k, n);
      total += n;
    }
    if (by_ratio && total > 0) k = std::max<int64_t>(1, (total + G / 2) / G);
    if (k == 0) {
      TORCH_CHECK(o.keep_one(), "pruning would remove every channel of ", layer_name(net, u.producer), " (all ",
                  u.channels, " |gamma| of layer ", u.importance, " are below ", rep.threshold,
                  "); lower the ", by_ratio ? "ratio" : "threshold", " or keep one channel per layer (--keep-one)");
      k = 1;
      rep.notes.push_back(fmt::format("{}: every channel below the threshold, kept {} per group", layer_name(net, u.producer), k));
    }
    u.kept.clear();
    for (int64_t g = 0; g < G; ++g) {
      std::vector<int64_t> idx(per);
      std::iota(idx.begin(), idx.end(), g * per);
      std::stable_sort(idx.begin(), idx.end(), [&](int64_t a, int64_t b) { return imp[i][a] > imp[i][b]; });
      idx.resize(k);
      std::sort(idx.begin(), idx.end());
      u.kept.insert(u.kept.end(), idx.begin(), idx.end());
    }
    rep.channels_removed += u.channels - static_cast<int64_t>(u.kept.size());
  }

  // Slice.
  for (const auto& u : units) {
    if (static_cast<int64_t>(u.kept.size()) == u.channels) continue;
    auto keep = torch::tensor(u.kept, torch::kLong);
    slice_out(ch.layers[u.producer], keep);
    for (size_t j : u.sliced) slice_out(ch.layers[j], keep);
    slice_in(ch.layers[u.consumer], keep);
  }
  PruneResult r;
  r.net = ch.build(net.options(), dtype, device);
  r.net->metadata() = net.metadata();
  rep.params_before = count_parameters(net);
  rep.params_after = count_parameters(*r.net);
  rep.units = std::move(units);
  auto& md = r.net->metadata();
  md["pruned_ratio"] = fmt::format("{:.6f}", rep.params_ratio_removed());
  md["pruned_channels"] = fmt::format("{}/{}", rep.channels_removed, rep.channels_total);
  md["prune_criterion"] = by_ratio ? fmt::format("ratio {}", o.ratio()) : fmt::format("threshold {}", o.threshold());
  md["prune_threshold"] = fmt::format("{}", rep.threshold);
  r.net->train(net.is_training());
  r.report = std::move(rep);
  return r;
}

}  // namespace

std::vector<PruneUnit> prune_units(const PlainNetImpl& net, std::vector<std::string>* notes) {
  const auto& L = net.specs();
  auto note = [&](size_t p, const std::string& why) {
    if (notes) notes->push_back(fmt::format("{}: not prunable, {}", layer_name(net, p), why));
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

PruneResult prune(const ModelImpl& model, const PruneOptions& options) { return prune_impl(model, options, nullptr); }

std::string PruneReport::to_string() const {
  return fmt::format("removed {} of {} prunable channels in {} units (|gamma| threshold {:.4g}); parameters {} -> {} "
                     "({:.1f}% removed)",
                     channels_removed, channels_total, units.size(), threshold, params_before, params_after,
                     100.0 * params_ratio_removed());
}

namespace {

/// The in-block BatchNorms of a residual model with, per BN, the parameters one of its channels
/// costs in the residual network (its conv filter, BN affine, the next conv's input slice(s)).
struct InBlockBN {
  std::shared_ptr<torch::nn::BatchNorm2dImpl> bn;
  int64_t cost_per_channel = 0;
};

int64_t per_out(const torch::nn::Conv2d& c) { return c->weight.numel() / c->weight.size(0); }
int64_t per_in(const torch::nn::Conv2d& c) {
  return c->weight.numel() / c->options.in_channels();
}

std::vector<InBlockBN> in_block_bns(torch::nn::Module& m) {
  std::vector<InBlockBN> out;
  for (auto& mod : m.modules()) {
    if (auto b = std::dynamic_pointer_cast<BasicBlockImpl>(mod)) {
      out.push_back({b->bn1.ptr(), per_out(b->conv1) + 2 + per_in(b->conv2)});
    } else if (auto b = std::dynamic_pointer_cast<BottleneckImpl>(mod)) {
      out.push_back({b->bn1.ptr(), per_out(b->conv1) + 2 + per_in(b->conv2)});
      out.push_back({b->bn2.ptr(), per_out(b->conv2) + 2 + per_in(b->conv3)});
    } else if (auto b = std::dynamic_pointer_cast<InvertedResidualImpl>(mod)) {
      if (b->expand_conv)  // expand -> depthwise are tied: one importance (the depthwise BN)
        out.push_back({b->dw_bn.ptr(), per_out(b->expand_conv) + 2 + per_out(b->dw_conv) + 2 + per_in(b->project_conv)});
    }
  }
  return out;
}

}  // namespace

ResidualPruneResult prune_residual(const ModelImpl& model, const PruneOptions& options) {
  TORCH_CHECK(model.family() != "plain", "the residual baseline prunes a residual model; '", model.options().arch(),
              "' is already a plain network (prune it directly)");
  // A copy whose in-block BN weights are NaN and biases the BN's id: after the RM operation the
  // plain BNs carrying NaN gammas are exactly the in-block channels (the others are identity BNs
  // of reserved channels or BNs outside blocks).
  auto marked = deserialize_model(serialize_model(model), "residual model copy");
  auto bns = in_block_bns(*marked);
  TORCH_CHECK(!bns.empty(), "the residual baseline supports ResNet (Basic/Bottleneck) and MobileNetV2 blocks; '",
              model.options().arch(), "' has none");
  {
    torch::NoGradGuard g;
    for (size_t i = 0; i < bns.size(); ++i) {
      bns[i].bn->weight.fill_(std::numeric_limits<double>::quiet_NaN());
      bns[i].bn->bias.fill_(static_cast<double>(i));
    }
  }
  // Dense reserve convs (grouped_reserve off): in a grouped reserve conv the equal-k rule would tie
  // the in-block group to the reserved groups.
  auto plain = reserve_merge(model, DownsampleMode::Type2, false);
  auto mplain = reserve_merge(*marked, DownsampleMode::Type2, false);
  TORCH_CHECK(plain->specs() == mplain->specs(), "internal: marked conversion differs in structure");
  std::vector<std::string> notes;
  auto munits = prune_units(*mplain, &notes);
  std::map<size_t, std::pair<torch::Tensor, torch::Tensor>> marks;  // producer -> (eligible, bn id)
  for (const auto& u : munits) {
    auto bn = mplain->layer_as<torch::nn::BatchNorm2dImpl>(u.importance);
    auto w = bn->weight.detach().cpu(), b = bn->bias.detach().cpu().to(torch::kDouble);
    marks[u.producer] = {w.isnan(), b};
  }
  auto res = prune_impl(*plain, options, [&](const PruneUnit& u) { return marks.at(u.producer).first; });
  ResidualPruneResult out;
  out.residual_params_before = count_parameters(model);
  int64_t removed = 0;
  for (const auto& u : res.report.units) {
    const auto& [el, id] = marks.at(u.producer);
    std::vector<bool> kept(u.channels, false);
    for (auto c : u.kept) kept[c] = true;
    for (int64_t c = 0; c < u.channels; ++c)
      if (!kept[c] && el[c].item<bool>()) removed += bns.at(static_cast<size_t>(id[c].item<double>())).cost_per_channel;
  }
  out.residual_params_after = out.residual_params_before - removed;
  res.net->metadata()["pruned_from"] = "residual baseline (in-block channels only)";
  res.net->metadata()["residual_params_before"] = std::to_string(out.residual_params_before);
  res.net->metadata()["residual_params_after"] = std::to_string(out.residual_params_after);
  res.net->metadata()["pruned_ratio"] = fmt::format(
      "{:.6f}", 1.0 - static_cast<double>(out.residual_params_after) / static_cast<double>(out.residual_params_before));
  out.plain = std::move(res);
  return out;
}

}  // namespace rmnet
