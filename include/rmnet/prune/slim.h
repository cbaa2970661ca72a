#pragma once
// Network slimming (Liu et al. 2017) on plain networks: channels of small importance are physically
// removed. After the RM operation every channel of a plain network is free (paper Section 3.4), so
// any conv followed by a BatchNorm is a prunable unit.
//
// Units. A unit is a producer Conv immediately followed by a BatchNorm; its output channels flow
// through per-channel layers (BatchNorm, ReLU, PReLU, Clamp, MaxPool, AvgPool, Flatten) to a
// consumer: the next non-depthwise Conv (its input channels are sliced) or a Linear after
// AvgPool + Flatten (its input features are sliced). A depthwise conv on the way
// (groups == in == out) is tied to the unit: removing a channel removes that depthwise filter and
// its BatchNorm too (MobileNetV2's pointwise -> depthwise pair). Units whose path meets an SE layer
// or reaches the end of the chain are not prunable.
//
// Importance (PruneOptions::importance), per channel c of a unit, from the unit's last BatchNorm
// before the consumer (for a tied pair, the depthwise conv's BN: that is what the consumer sees):
//   Gamma         |gamma_c| (vanilla network slimming; the paper's thresholds are on this scale).
//   Contribution  |gamma_c| * sqrt(sum_o a_o^2 * sum_taps W[o, c]^2)   (the default)
//                 W: the consumer's weights reading channel c (the outputs o of c's group, all kernel
//                 taps); a_o = gamma_o / sqrt(var_o + eps) of the BN right after the consumer (1 where
//                 there is none: the linear head). |gamma_c| is the standard deviation of the channel
//                 after its BN; the product is the standard deviation it adds to the consumer's
//                 normalised output. This puts the channels the RM operation adds on the scale of the
//                 block's own: a reserved channel's identity BN has gamma = the block input's standard
//                 deviation (a statistic, not a learned scale) and feeds the merge through a Dirac
//                 kernel, a block channel has a trained gamma and feeds the merge through a2 * W2.
//
// Removal. A removed channel does not vanish: after its BN it is beta_c plus gamma_c times the
// normalised input, so the consumer still receives about v_c = act(beta_c) (the activations, PReLU,
// clamp and poolings on the way applied to beta_c), exactly that when gamma_c = 0, and for a reserved
// ResNet channel (identity BN, non-negative input) its mean. With fold_removed the constant is
// folded: sum_taps W[o, c] * v_c is subtracted from the running mean of the BN after a conv consumer
// (the same as adding it to the conv's bias, without a new parameter), or added to the bias of a
// consumer without a BN after it (the linear head: W[o, c] * v_c). The fold is exact when gamma_c = 0
// and the consumer reads no zero padding through off-centre taps (1x1 or unpadded consumer, linear
// head, Dirac kernel); on the border pixels of a padded k x k consumer the constant is folded where the
// kernel actually saw zeros, an approximation the report counts (`folds_at_border`).
//
// Grouped convolutions. Where the producer or the consumer is a grouped (not depthwise) conv with
// g groups, the unit's channels are split into G = lcm(g_producer, g_consumer) contiguous groups
// and every group keeps the same number k of channels (its top-k by importance), so the convs stay
// regular grouped convs: with a threshold k is the largest count any group keeps (no channel above
// the threshold is removed), otherwise the mean count, rounded.
//
// Selection: exactly one of
//   threshold T          remove channels with importance < T;
//   ratio R              remove the floor(R * N) least important of all N prunable channels (scope
//                        Global: a global percentile) or floor(R * n) of each unit's n (scope Layer);
//   target_macs F,       remove the least important channels (global order) until the network's MACs
//   target_params F      (at input_size) or parameters are at most F times the original's: the fewest
//                        channels that reach it, so the result is within one channel group of F.
// Constraints on every selection: no unit loses more than max_layer_ratio of its channels; with
// round_to r every pruned unit keeps a multiple of r channels (of lcm(G, r) for grouped units; a unit
// whose count is no such multiple either stays whole or drops to one); a unit never drops below one
// channel per group: by default a selection that would empty a unit is an error naming the layer;
// with keep_one it keeps the unit's most important channel (per group).
#include <map>
#include <string>
#include <vector>

#include <torch/arg.h>

#include "rmnet/models/plain.h"

namespace rmnet {

/// How channels are ranked (see the header comment).
enum class PruneImportance {
  Gamma,         ///< |gamma| of the channel's BN
  Contribution,  ///< |gamma| times the norm of the (BN-scaled) consumer weights reading the channel
};
PruneImportance prune_importance_from_string(const std::string& name);
std::string to_string(PruneImportance importance);

/// Where a ratio applies.
enum class PruneScope {
  Global,  ///< one percentile over all prunable channels
  Layer,   ///< the same fraction of every unit
};
PruneScope prune_scope_from_string(const std::string& name);
std::string to_string(PruneScope scope);

struct PruneOptions {
  /// Remove channels with importance below this (negative: unset). Exactly one of threshold,
  /// ratio, target_macs, target_params.
  TORCH_ARG(double, threshold) = -1.0;
  /// Remove this fraction of the prunable channels, in [0, 1) (negative: unset).
  TORCH_ARG(double, ratio) = -1.0;
  /// Prune until the MACs per image are at most this fraction of the original's, in (0, 1]
  /// (negative: unset).
  TORCH_ARG(double, target_macs) = -1.0;
  /// Prune until the parameters are at most this fraction of the original's, in (0, 1]
  /// (negative: unset).
  TORCH_ARG(double, target_params) = -1.0;
  /// Whether a ratio is one global percentile or applies to every unit (Layer works with ratio only).
  TORCH_ARG(PruneScope, scope) = PruneScope::Global;
  /// No unit loses more than this fraction of its channels, in (0, 1].
  TORCH_ARG(double, max_layer_ratio) = 1.0;
  /// Pruned units keep a multiple of this many channels (1: any count; e.g. 8 or 16 for SIMD).
  TORCH_ARG(int64_t, round_to) = 1;
  /// How channels are ranked.
  TORCH_ARG(PruneImportance, importance) = PruneImportance::Contribution;
  /// Fold the constant a removed channel leaves behind (act(beta)) into the consumer (see above).
  TORCH_ARG(bool, fold_removed) = true;
  /// A selection that would empty a unit keeps its most important channel (per group) instead of
  /// failing.
  TORCH_ARG(bool, keep_one) = false;
  /// Square input size at which MACs are counted (target_macs and the report); 0: the model's own
  /// (default_input_size).
  TORCH_ARG(int64_t, input_size) = 0;
};

/// One prunable unit of a plain chain, as found by `prune_units`.
struct PruneUnit {
  size_t producer = 0;            ///< Conv whose output channels are pruned
  size_t importance = 0;          ///< BatchNorm whose gamma ranks the channels
  std::vector<size_t> sliced;     ///< layers whose channels are sliced (BN, activations, tied dw convs)
  size_t consumer = 0;            ///< Conv (input channels) or Linear (input features)
  int64_t channels = 0;
  int64_t groups = 1;             ///< equal-k groups (see the header comment)
  std::vector<int64_t> kept;      ///< after selection: kept channel indices, ascending
};

struct PruneReport {
  int64_t channels_total = 0;     ///< prunable channels (over all units considered)
  int64_t channels_removed = 0;
  double threshold = 0.0;         ///< the importance threshold used (otherwise: the largest removed)
  int64_t params_before = 0, params_after = 0;
  int64_t macs_before = 0, macs_after = 0;  ///< per image at `input_size`
  int64_t input_size = 0;
  int64_t folded = 0;             ///< removed channels whose nonzero constant was folded into the consumer
  int64_t folds_at_border = 0;    ///< of those, folds into a padded k x k consumer (approximate on borders)
  /// Removed channels by provenance role ("branch", "reserved", "merged", "layer"; "unknown" without
  /// provenance).
  std::map<std::string, int64_t> removed_by_role;
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

/// Importance of each channel of a unit (float64 [channels]) under a rule (see the header comment).
torch::Tensor unit_importance(const PlainNetImpl& net, const PruneUnit& unit, PruneImportance rule);

/// Prunes a plain network with BatchNorms kept. Returns a new PlainNet (same dtype/device, the
/// input untouched, its provenance sliced along) with metadata "pruned_ratio" (fraction of
/// parameters removed), "pruned_channels", "prune_criterion". Throws for a model that is not
/// plain, a plain model without BatchNorms (fused/deploy form), options out of range or not exactly
/// one criterion, a target that cannot be reached, and (without keep_one) a selection that would
/// empty a unit.
PruneResult prune(const ModelImpl& model, const PruneOptions& options);

}  // namespace rmnet
