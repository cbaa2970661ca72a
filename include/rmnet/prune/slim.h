#pragma once
// Network slimming (Liu et al. 2017) on plain networks: channels whose BatchNorm scale |gamma| is
// small are physically removed. After the RM operation every channel of a plain network is free
// (paper Section 3.4), so any conv followed by a BatchNorm is a prunable unit.
//
// Units. A unit is a producer Conv immediately followed by a BatchNorm; its output channels flow
// through per-channel layers (BatchNorm, ReLU, PReLU, Clamp, MaxPool, AvgPool, Flatten) to a
// consumer: the next non-depthwise Conv (its input channels are sliced) or a Linear after
// AvgPool + Flatten (its input features are sliced). A depthwise conv on the way
// (groups == in == out) is tied to the unit: removing a channel removes that depthwise filter and
// its BatchNorm too (MobileNetV2's pointwise -> depthwise pair). Units whose path meets an SE layer
// or reaches the end of the chain are not prunable.
//
// Importance. |gamma| of the unit's last BatchNorm before the consumer (for a tied pair, the
// depthwise conv's BN: that is the activation the consumer sees, so a channel with gamma = 0 and
// beta <= 0 before a ReLU is removed exactly).
//
// Grouped convolutions. Where the producer or the consumer is a grouped (not depthwise) conv with
// g groups, the unit's channels are split into G = lcm(g_producer, g_consumer) contiguous groups
// and every group keeps the same number k of channels (its top-k by importance), so the convs stay
// regular grouped convs: with a threshold k is the largest count any group keeps (no channel above
// the threshold is removed), with a ratio the mean count, rounded (the target is met on average).
//
// Selection. --threshold T removes channels with |gamma| < T; --ratio R removes the
// floor(R * N) least important of all N prunable channels (a global percentile). A unit never
// drops below one channel per group: by default a selection that would empty a unit is an error
// naming the layer; with keep_one it keeps the unit's most important channel (per group).
#include <string>
#include <vector>

#include <torch/arg.h>

#include "rmnet/models/plain.h"

namespace rmnet {

struct PruneOptions {
  /// Remove channels with |gamma| below this (negative: unset). Exactly one of threshold/ratio.
  TORCH_ARG(double, threshold) = -1.0;
  /// Remove this fraction of all prunable channels, in [0, 1) (negative: unset).
  TORCH_ARG(double, ratio) = -1.0;
  /// A selection that would empty a unit keeps its most important channel (per group) instead of
  /// failing.
  TORCH_ARG(bool, keep_one) = false;
};

/// One prunable unit of a plain chain, as found by `prune_units`.
struct PruneUnit {
  size_t producer = 0;            ///< Conv whose output channels are pruned
  size_t importance = 0;          ///< BatchNorm whose |gamma| ranks the channels
  std::vector<size_t> sliced;     ///< layers whose channels are sliced (BN, activations, tied dw convs)
  size_t consumer = 0;            ///< Conv (input channels) or Linear (input features)
  int64_t channels = 0;
  int64_t groups = 1;             ///< equal-k groups (see the header comment)
  std::vector<int64_t> kept;      ///< after selection: kept channel indices, ascending
};

struct PruneReport {
  int64_t channels_total = 0;     ///< prunable channels (over all units considered)
  int64_t channels_removed = 0;
  double threshold = 0.0;         ///< the |gamma| threshold used (for --ratio: the percentile value)
  int64_t params_before = 0, params_after = 0;
  std::vector<PruneUnit> units;
  std::vector<std::string> notes; ///< units clamped to one channel, units not prunable and why
  std::string to_string() const;
  double params_ratio_removed() const {
    return params_before > 0 ? 1.0 - static_cast<double>(params_after) / static_cast<double>(params_before) : 0.0;
  }
};

struct PruneResult {
  PlainNet net{nullptr};
  PruneReport report;
};

/// The prunable units of a plain network (BN kept). `notes` receives why other convs are not.
std::vector<PruneUnit> prune_units(const PlainNetImpl& net, std::vector<std::string>* notes = nullptr);

/// Prunes a plain network with BatchNorms kept. Returns a new PlainNet (same dtype/device, the
/// input untouched) with metadata "pruned_ratio" (fraction of parameters removed),
/// "pruned_channels", "prune_criterion". Throws for a model that is not plain, a plain model without
/// BatchNorms (fused/deploy form), a ratio outside [0, 1), a threshold < 0, neither or both of
/// threshold/ratio, and (without keep_one) a selection that would empty a unit.
PruneResult prune(const ModelImpl& model, const PruneOptions& options);

/// The residual baseline (paper Figure 6): slimming a residual network where only channels inside
/// blocks can go (BasicBlock bn1; Bottleneck bn1, bn2; InvertedResidual expand/depthwise BNs), the
/// channels on the residual stream being tied across blocks. Implemented as mask-only pruning: the
/// model is converted to its plain BN-kept form and only the in-block channels are candidates (the
/// ratio is a percentile over those). The result is a plain network; `residual_params_after` is
/// what the physically smaller residual network would have (its parameters minus the removed
/// channels' conv filters, BN entries and next-conv input slices).
struct ResidualPruneResult {
  PruneResult plain;
  int64_t residual_params_before = 0, residual_params_after = 0;
};
ResidualPruneResult prune_residual(const ModelImpl& model, const PruneOptions& options);

}  // namespace rmnet
