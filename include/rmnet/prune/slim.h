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
//   Measured      sqrt(E || a * (W[:, c] conv (x_c - mean x_c)) ||^2)   (needs calibration images)
//                 the root-mean-square change of the consumer's normalised output (a as above) over the
//                 calibration images and output positions when the channel the consumer reads, x_c (after
//                 the activations, poolings and tied depthwise conv on the way), is replaced by its mean --
//                 what removing it costs before a refit. Contribution estimates this from the BN
//                 parameters alone and is right where x_c is the BN output itself; it overrates a channel
//                 a ReLU halves (about 2x against a reserved channel, which the ReLU passes whole), and
//                 it goes stale where BN parameters stop describing the channel: a frozen identity BN
//                 after fine-tuning, a channel the ReLU never lets through. Computed exactly per channel
//                 from the k x k covariance of its centred input patches (zero padding kept).
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
// Stream groups (PruneOptions::grouping Stream; default None). After the RM operation one channel of the
// residual stream (a stage's stem/merge output c) is carried through every block of its stage as
// several plain channels: the merge output c of block k, the reserved copy c in the first conv of
// block k+1 (a Dirac filter reading input channel c), the merge output c of block k+1 (a Dirac
// column adding the reserved copy), and so on until a projection shortcut starts a new stream.
// Removing one of them keeps most of the cost of the others and destroys what they carry: the
// reserved copy of a removed channel is a constant. With Stream grouping the plain channels tied by
// such Dirac links (a producer row with one nonzero centre tap reading a channel of the previous
// unit; a consumer column with one nonzero centre tap writing one output of the next unit) are one
// group, ranked by one score, so they are removed together -- what a residual-aware pruner
// (DepGraph) removes in the residual network -- while branch channels stay free. The score
// (PruneOptions::group_reduction) is the sum of the members' importances (a stream channel weighs as
// all its copies together: the stream goes last) or their mean (as one of its copies, Torch-Pruning's
// "mean": stream and branch channels compete, and a deep stage's stream, which saves MACs in every
// block, is cut like the residual pruner cuts it); per cost, either is divided by what removing the
// whole group saves. Grouping applies to the targets (MACs, parameters, latency); a threshold or a ratio keeps its
// per-channel meaning. `prune_groups` lists the groups.
//
// Reconstruction (PruneOptions::reconstruct; needs calibration images). After removal, every consumer
// from the first pruned unit on is refitted by least squares (He et al. 2017; ThiNet) so that, on the
// calibration images, it reproduces the original network's output of that layer from what the pruned
// network now feeds it: min ||W' x_pruned + b' - y_original||^2 + lambda ||W' - W||^2 over sampled
// output positions, layer by layer in chain order (each fit also absorbs the error of the layers
// before it). A plain chain allows this cleanly: each consumer sees only its producer. The result is
// no longer a slice of the original weights, and Dirac columns may stop being exact copies.
//
// Selection: exactly one of
//   threshold T          remove channels with importance < T;
//   ratio R              remove the floor(R * N) least important of all N prunable channels (scope
//                        Global: a global percentile) or floor(R * n) of each unit's n (scope Layer);
//   target_macs F,       remove the least important channels (global order) until the network's MACs
//   target_params F      (at input_size) or parameters are at most F times the original's: the fewest
//                        channels that reach it, so the result is within one channel group of F;
//                        then the most important removed runs of equal importance (a stream group
//                        is one) that still fit are put back, most important first, while each is
//                        still its units' most important removed channel (a fill: the last group
//                        taken no longer overshoots the target; the latency targets fill too);
//   target_latency_ms L, the same order until the latency of a batch (PruneOptions::latency: batch,
//   target_speedup X     runtime) is at most L ms, or the original's measured latency / X: the fewest
//                        channels whose latency, predicted by a per-layer latency table measured on
//                        this machine (prune/latency.h), meets it; the result is then measured, and
//                        while it misses the target the table's prediction is rescaled by the
//                        measured/predicted ratio and the selection redone (at most 5 rounds; a
//                        last round up to 5% above the target is accepted with a note, beyond that
//                        it is an error; the report has the measured latency before and after).
// Constraints on every selection: no unit loses more than max_layer_ratio of its channels; with
// round_to r every pruned unit keeps a multiple of r channels (of lcm(G, r) for grouped units; a unit
// whose count is no such multiple either stays whole or drops to one); a unit never drops below one
// channel per group: by default a selection that would empty a unit is an error naming the layer;
// with keep_one it keeps the unit's most important channel (per group).
#include <map>
#include <string>
#include <variant>
#include <vector>

#include <torch/arg.h>

#include "rmnet/ir/passes.h"
#include "rmnet/models/plain.h"
#include "rmnet/prune/latency.h"

namespace rmnet {

/// How channels are ranked (see the header comment).
enum class PruneImportance {
  Gamma,         ///< |gamma| of the channel's BN
  Contribution,  ///< |gamma| times the norm of the (BN-scaled) consumer weights reading the channel
  Measured,      ///< the contribution measured on calibration images (see the header comment)
};
PruneImportance prune_importance_from_string(const std::string& name);
std::string to_string(PruneImportance importance);

/// Whether channels tied by the RM operation's Dirac links are ranked and removed as one.
enum class PruneGrouping {
  None,    ///< every channel on its own (default: with reconstruction it keeps more, see docs/pruning.md)
  Stream,  ///< the plain channels carrying one residual-stream channel form one group
};
PruneGrouping prune_grouping_from_string(const std::string& name);
std::string to_string(PruneGrouping grouping);

/// How a stream group's members' importances make its one score (grouping Stream).
enum class PruneGroupReduction {
  Sum,   ///< the sum: a stream channel scores as the total of what its copies carry (goes last)
  Mean,  ///< the mean (default): a stream channel scores as one of its copies (Torch-Pruning's "mean")
};
PruneGroupReduction prune_group_reduction_from_string(const std::string& name);
std::string to_string(PruneGroupReduction reduction);

/// Where a ratio applies.
enum class PruneScope {
  Global,  ///< one percentile over all prunable channels
  Layer,   ///< the same fraction of every unit
};
PruneScope prune_scope_from_string(const std::string& name);
std::string to_string(PruneScope scope);

/// The six exclusive pruning criteria, as one value (PruneOptions::criterion).
namespace criterion {
struct Threshold { double value; };          ///< remove channels with importance below `value`
struct Ratio { double fraction; };           ///< remove this fraction of the prunable channels, [0, 1)
struct TargetMacs { double fraction; };      ///< MACs at most this fraction of the original's, (0, 1]
struct TargetParams { double fraction; };    ///< parameters at most this fraction of the original's, (0, 1]
struct TargetLatencyMs { double ms; };       ///< one forward of a batch in at most this many ms
struct TargetSpeedup { double factor; };     ///< the measured latency divided by at least this, >= 1
}  // namespace criterion
/// None (std::monostate), or exactly one criterion.
using PruneCriterion = std::variant<std::monostate, criterion::Threshold, criterion::Ratio, criterion::TargetMacs,
                                    criterion::TargetParams, criterion::TargetLatencyMs, criterion::TargetSpeedup>;

struct PruneOptions {
  /// The criterion that is set; std::monostate when none or more than one of the six fields is.
  PruneCriterion criterion() const;
  /// Sets exactly this criterion: its field gets the value, the other five are unset.
  PruneOptions& criterion(const PruneCriterion& c);

  /// Remove channels with importance below this (negative: unset). Exactly one of threshold,
  /// ratio, target_macs, target_params, target_latency_ms, target_speedup.
  TORCH_ARG(double, threshold) = -1.0;
  /// Remove this fraction of the prunable channels, in [0, 1) (negative: unset).
  TORCH_ARG(double, ratio) = -1.0;
  /// Prune until the MACs per image are at most this fraction of the original's, in (0, 1]
  /// (negative: unset).
  TORCH_ARG(double, target_macs) = -1.0;
  /// Prune until the parameters are at most this fraction of the original's, in (0, 1]
  /// (negative: unset).
  TORCH_ARG(double, target_params) = -1.0;
  /// Prune until one forward of a batch takes at most this many milliseconds on the runtime,
  /// measured on this machine (negative: unset).
  TORCH_ARG(double, target_latency_ms) = -1.0;
  /// Prune until the measured latency is at most the original's divided by this, >= 1 (negative:
  /// unset).
  TORCH_ARG(double, target_speedup) = -1.0;
  /// How latency targets are measured: batch, runtime, timed forwards (its input_size 0: the
  /// input_size below).
  TORCH_ARG(LatencyOptions, latency) = LatencyOptions();
  /// Whether a ratio is one global percentile or applies to every unit (Layer works with ratio only).
  TORCH_ARG(PruneScope, scope) = PruneScope::Global;
  /// No unit loses more than this fraction of its channels, in (0, 1].
  TORCH_ARG(double, max_layer_ratio) = 1.0;
  /// Pruned units keep a multiple of this many channels (1: any count; e.g. 8 or 16 for SIMD).
  TORCH_ARG(int64_t, round_to) = 1;
  /// How channels are ranked.
  TORCH_ARG(PruneImportance, importance) = PruneImportance::Contribution;
  /// Targets (MACs, parameters, latency): rank by importance per MAC (parameter) removing the channel
  /// saves in the cost model (with executed_macs: executed MACs, so a reserved copy the runtime runs as
  /// a shortcut saves nothing alone); for a stream group, its reduced importance over what removing the
  /// whole group saves.
  TORCH_ARG(bool, per_cost) = false;
  /// Rank and remove stream groups together (see the header comment).
  TORCH_ARG(PruneGrouping, grouping) = PruneGrouping::None;
  /// How a stream group's score is made of its members' importances (per cost: then divided by what
  /// removing the whole group saves).
  TORCH_ARG(PruneGroupReduction, group_reduction) = PruneGroupReduction::Mean;
  /// Fold the constant a removed channel leaves behind (act(beta)) into the consumer (see above).
  TORCH_ARG(bool, fold_removed) = true;
  /// A selection that would empty a unit keeps its most important channel (per group) instead of
  /// failing.
  TORCH_ARG(bool, keep_one) = false;
  /// Refit the consumers by least squares on calibration images (see the header comment); needs the
  /// `prune` overload with calibration images.
  TORCH_ARG(bool, reconstruct) = false;
  /// Output positions sampled per calibration image and layer for the fit.
  TORCH_ARG(int64_t, reconstruct_positions) = 32;
  /// Ridge towards the sliced weights, relative to the mean diagonal of x^T x (> 0).
  TORCH_ARG(double, reconstruct_ridge) = 1e-3;
  /// Seed of the sampled positions.
  TORCH_ARG(uint64_t, reconstruct_seed) = 0;
  /// Reconstruction leaves Dirac rows (a reserved channel's copy: one non-zero weight, at the centre
  /// tap) and Dirac columns (a merge conv's shortcut input) as they are and fits the rest, so the
  /// onednn runtime still runs those channels as shortcuts (DeployOptions::dirac_shortcuts).
  TORCH_ARG(bool, reconstruct_keep_dirac) = false;
  /// MACs (target_macs, per_cost) as the onednn runtime executes them (deploy/shortcuts.h,
  /// executed_macs): the reserved copies of an RM block that stay whole along their chain are a
  /// shortcut, not convolution channels, so they cost nothing and a projection costs a 1x1 conv. The
  /// fraction is then of the original's executed MACs (for a converted ResNet or MobileNetV2: the
  /// residual network's MACs), the measure a residual-aware pruner's MACs compare with. With
  /// reconstruct it needs reconstruct_keep_dirac (a free refit moves the copies: the runtime would
  /// compute them). Best with grouping Stream, which keeps every chain whole. Latency targets then
  /// time and predict the convs at the shapes the runtime executes (without the copies). In every
  /// case the first and middle conv of each block keep their most important branch channel (a conv
  /// of copies alone is computed whole).
  TORCH_ARG(bool, executed_macs) = false;
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
  int64_t macs_before = 0, macs_after = 0;  ///< per image at `input_size` (count_flops)
  /// MACs per image the onednn runtime executes (deploy/shortcuts.h) before and after
  int64_t executed_macs_before = 0, executed_macs_after = 0;
  int64_t shortcuts_before = 0, shortcuts_after = 0;  ///< Dirac shortcuts the runtime finds
  int64_t input_size = 0;
  int64_t folded = 0;             ///< removed channels whose nonzero constant was folded into the consumer
  int64_t folds_at_border = 0;    ///< of those, folds into a padded k x k consumer (approximate on borders)
  /// Removed channels by provenance role ("branch", "reserved", "merged", "layer"; "unknown" without
  /// provenance).
  std::map<std::string, int64_t> removed_by_role;
  std::vector<PruneUnit> units;
  double latency_target_ms = 0.0;  ///< latency targets: the target (ms per batch)
  double latency_before_ms = 0.0;  ///< measured latency of the original (latency targets only)
  double latency_after_ms = 0.0;   ///< measured latency of the result
  double latency_estimate_ms = 0.0;  ///< the table's prediction for the result (rescaled)
  int64_t latency_rounds = 0;        ///< selections made (each measured)
  int64_t latency_table_points = 0;  ///< single-layer timings in the table
  int64_t reconstructed = 0;      ///< layers refitted by least squares (reconstruct)
  double reconstruction_error_before = 0.0;  ///< mean relative error of those layers' outputs before the fit
  double reconstruction_error_after = 0.0;   ///< and after it (against the original network on the calibration images)
  int64_t stream_groups = 0;      ///< groups of more than one channel ranked together (grouping Stream)
  std::vector<std::string> notes; ///< units clamped to one channel, units not prunable and why
  std::string to_string() const;
  double params_ratio_removed() const {
    return params_before > 0 ? 1.0 - static_cast<double>(params_after) / static_cast<double>(params_before) : 0.0;
  }
};

struct PruneResult {
  PlainNet net{nullptr};
  PruneReport report;
  /// The steps, timed: "prune" (selection, slicing, folding), "reconstruct" when asked.
  std::vector<ir::PassRecord> passes;
};

/// The prunable units of a plain network (BN kept). `notes` receives why other convs are not.
std::vector<PruneUnit> prune_units(const PlainNetImpl& net, std::vector<std::string>* notes = nullptr);

/// One channel of a unit: (unit index, channel).
using UnitChannel = std::pair<size_t, int64_t>;
/// The groups of more than one channel tied by Dirac links (see the header comment), each sorted.
std::vector<std::vector<UnitChannel>> prune_groups(const PlainNetImpl& net, const std::vector<PruneUnit>& units);

/// Importance of each channel of a unit (float64 [channels]) under a rule (see the header comment);
/// Measured needs `units_importance` with calibration images.
torch::Tensor unit_importance(const PlainNetImpl& net, const PruneUnit& unit, PruneImportance rule);
/// The same for every unit, in order; `calibration` (float [N, C, H, W], preprocessed as the network
/// expects) is used by Measured and required there.
std::vector<torch::Tensor> units_importance(const PlainNetImpl& net, const std::vector<PruneUnit>& units,
                                            PruneImportance rule, const torch::Tensor& calibration = {});

/// Prunes a plain network with BatchNorms kept. Returns a new PlainNet (same dtype/device, the
/// input untouched, its provenance sliced along) with metadata "pruned_ratio" (fraction of
/// parameters removed), "pruned_channels", "prune_criterion". Throws for a model that is not
/// plain, a plain model without BatchNorms (fused/deploy form), options out of range or not exactly
/// one criterion, a target that cannot be reached, and (without keep_one) a selection that would
/// empty a unit.
PruneResult prune(const ModelImpl& model, const PruneOptions& options);
/// The same with calibration images (float [N, C, H, W], preprocessed as the network expects) for
/// `reconstruct`; images are ignored without it.
PruneResult prune(const ModelImpl& model, const PruneOptions& options, const torch::Tensor& calibration);

}  // namespace rmnet
