// The residual baseline: slimming restricted to the channels inside residual blocks, read from the
// plain form's provenance. See include/rmnet/prune/residual_baseline.h.
#include "rmnet/prune/residual_baseline.h"

#include <map>

#include <fmt/format.h>
#include <torch/torch.h>

#include "prune_internal.h"
#include "rmnet/convert/rm.h"
#include "rmnet/convert/verify.h"
#include "rmnet/models/profile.h"
#include "rmnet/models/mobilenet.h"
#include "rmnet/models/preact.h"
#include "rmnet/models/resnet.h"

namespace rmnet {

namespace {

int64_t per_out(const torch::nn::Conv2d& c) { return c->weight.numel() / c->weight.size(0); }
int64_t per_in(const torch::nn::Conv2d& c) { return c->weight.numel() / c->options.in_channels(); }

/// Per branch conv (by qualified name): the parameters one of its output channels costs in the
/// residual network: its filter, its BN's two entries, the next conv's input slice (for MobileNetV2's
/// expand conv also the tied depthwise filter and its BN).
std::map<std::string, int64_t> branch_channel_costs(const ModelImpl& model) {
  std::map<const torch::nn::Module*, std::string> names;
  const auto modules = model.named_modules("", /*include_self=*/false);
  for (const auto& m : modules) names[m.value().get()] = m.key();
  std::map<std::string, int64_t> cost;
  for (const auto& m : modules) {
    const auto& mod = m.value();
    if (auto b = std::dynamic_pointer_cast<BasicBlockImpl>(mod)) {
      cost[names[b->conv1.get()]] = per_out(b->conv1) + 2 + per_in(b->conv2);
    } else if (auto b = std::dynamic_pointer_cast<BottleneckImpl>(mod)) {
      cost[names[b->conv1.get()]] = per_out(b->conv1) + 2 + per_in(b->conv2);
      cost[names[b->conv2.get()]] = per_out(b->conv2) + 2 + per_in(b->conv3);
    } else if (auto b = std::dynamic_pointer_cast<InvertedResidualImpl>(mod)) {
      if (b->expand_conv)
        cost[names[b->expand_conv.get()]] =
            per_out(b->expand_conv) + 2 + per_out(b->dw_conv) + 2 + per_in(b->project_conv);
    } else if (auto b = std::dynamic_pointer_cast<PreActBlockImpl>(mod)) {
      cost[names[b->conv1.get()]] = per_out(b->conv1) + 2 + per_in(b->conv2);
    }
  }
  return cost;
}

}  // namespace

ResidualPruneResult prune_residual(const ModelImpl& model, const PruneOptions& options) {
  return prune_residual(model, options, torch::Tensor());
}

ResidualPruneResult prune_residual(const ModelImpl& model, const PruneOptions& options, const torch::Tensor& calibration) {
  TORCH_CHECK(!dynamic_cast<const PlainNetImpl*>(&model), "the residual baseline prunes a residual model; '",
              model.options().arch(), "' is already a plain network (prune it directly)");
  // Dense reserve convs (grouped_reserve off): in a grouped reserve conv the equal-k rule would tie
  // the in-block group to the reserved groups.
  auto plain = reserve_merge(model, DownsampleMode::Type2, false);
  TORCH_CHECK(!plain->provenance().empty(), "internal: the conversion of '", model.options().arch(),
              "' recorded no provenance");
  const auto costs = branch_channel_costs(model);
  const auto eligible = [&](const PruneUnit& u) {
    const auto& origin = plain->origin(u.producer);
    auto el = torch::zeros({u.channels}, torch::kBool);
    for (int64_t c = 0; c < u.channels; ++c) {
      const auto [run, src] = origin.at(c);
      if (run->role == ChannelRole::Branch && costs.count(run->module)) el[c] = true;
    }
    return el;
  };
  int64_t candidates = 0;
  for (const auto& u : prune_units(*plain)) candidates += eligible(u).sum().item<int64_t>();
  TORCH_CHECK(candidates > 0, "the residual baseline needs residual blocks with prunable channels inside them "
              "(ResNet, RMNet, pre-activation ResNet, MobileNetV2); '", model.options().arch(), "' has none");

  // A branch channel costs the same parameters and MACs in the plain form as in the residual network
  // (its filter, two BN entries, the next conv's input slice; the fold adds nothing: the consumer has a
  // BN), so a target on the residual network is a target on the plain form with another base.
  PruneOptions o = options;
  const auto translate = [](double f, int64_t residual, int64_t in_plain) {
    return 1.0 - static_cast<double>(residual) * (1.0 - f) / static_cast<double>(in_plain);
  };
  if (o.target_params() > 0) o.target_params(translate(o.target_params(), count_parameters(model), count_parameters(*plain)));
  if (o.target_macs() > 0) {
    const int64_t size = o.input_size() > 0 ? o.input_size() : default_input_size(model);
    const int64_t cin = model.options().in_channels();
    o.target_macs(translate(o.target_macs(), count_flops(const_cast<ModelImpl&>(model), cin, size),
                            count_flops(*plain, cin, size)));
  }
  TORCH_CHECK(options.target_params() <= 0 || o.target_params() > 0, "target_params ", options.target_params(),
              " cannot be reached by the residual baseline (the channels outside blocks alone are more)");
  TORCH_CHECK(options.target_macs() <= 0 || o.target_macs() > 0, "target_macs ", options.target_macs(),
              " cannot be reached by the residual baseline (the channels outside blocks alone are more)");
  auto res = detail::prune_plain(*plain, o, eligible, calibration);
  ResidualPruneResult out;
  out.residual_params_before = count_parameters(model);
  int64_t removed = 0;
  for (const auto& u : res.report.units) {
    std::vector<bool> kept(u.channels, false);
    for (auto c : u.kept) kept[c] = true;
    const auto& origin = plain->origin(u.producer);
    for (int64_t c = 0; c < u.channels; ++c) {
      if (kept[c]) continue;
      const auto* run = origin.at(c).first;
      TORCH_CHECK(run->role == ChannelRole::Branch, "internal: the residual baseline removed a ", to_string(run->role),
                  " channel of ", detail::layer_name(*plain, u.producer));
      removed += costs.at(run->module);
    }
  }
  out.residual_params_after = out.residual_params_before - removed;
  auto& md = res.net->metadata();
  md["pruned_from"] = "residual baseline (in-block channels only)";
  md["residual_params_before"] = std::to_string(out.residual_params_before);
  md["residual_params_after"] = std::to_string(out.residual_params_after);
  md["pruned_ratio"] = fmt::format(
      "{:.6f}", 1.0 - static_cast<double>(out.residual_params_after) / static_cast<double>(out.residual_params_before));
  out.plain = std::move(res);
  return out;
}

}  // namespace rmnet
