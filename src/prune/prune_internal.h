#pragma once
// Internal to src/prune: the pieces slimming is made of, shared by prune() and the residual baseline.
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include <torch/torch.h>

#include "rmnet/deploy/shortcuts.h"
#include "rmnet/prune/slim.h"

namespace rmnet::detail {

bool is_depthwise(const LayerSpec& s);
/// "layer 3 (Conv2d(...))"
std::string layer_name(const PlainNetImpl& net, size_t i);

/// Per unit: which channels may be removed (bool [channels]); an undefined tensor: all of them.
using EligibleFn = std::function<torch::Tensor(const PruneUnit&)>;

/// prune() with the candidates restricted by `eligible` (the residual baseline); `net` must be a
/// plain network with BatchNorms.
PruneResult prune_plain(const PlainNetImpl& net, const PruneOptions& options, const EligibleFn& eligible,
                        const torch::Tensor& calibration = {});

/// Refits the consumers of `pruned` (the result of pruning `original` with these units) by least
/// squares on the calibration images; counts and errors go to `rep` (reconstruct.cpp).
void reconstruct_consumers(const PlainNetImpl& original, PlainNetImpl& pruned, const std::vector<PruneUnit>& units,
                           const torch::Tensor& calibration, const PruneOptions& o, PruneReport& rep);

/// Parameters and MACs per image of the chain when each unit keeps the channels `kept[u]`, computed
/// from the layer shapes without building it (equal to count_parameters / count_flops of the result).
/// With the original network's Dirac shortcuts, the MACs are those the onednn runtime executes
/// (executed_macs of the result): a shortcut whose copies are kept or removed whole along their
/// chain (A's input channel, A's copy row, the middle convs' copy rows, an identity merge's output)
/// keeps its kept copies free; a shortcut the selection breaks counts every channel it keeps (an upper
/// bound: the runtime may still run part of it as a projection).
class PruneCost {
 public:
  /// `adds_bias[u]`: folding unit u's removed channels would give its consumer a bias it lacks
  /// (a consumer without bias and without a BN after it), given which channels are removed.
  using AddsBias = std::function<bool(size_t unit, const std::vector<int64_t>& kept)>;
  PruneCost(const PlainNetImpl& net, const std::vector<PruneUnit>& units, int64_t input_size, AddsBias adds_bias,
            std::vector<DiracShortcut> shortcuts = {});
  /// {parameters, MACs}
  std::pair<int64_t, int64_t> operator()(const std::vector<std::vector<int64_t>>& kept) const;
  /// The layer shapes of the chain when each unit keeps `kept[u]`.
  std::vector<LayerSpec> specs(const std::vector<std::vector<int64_t>>& kept) const;
  /// The same as the onednn runtime executes them: with shortcuts, a block's convs without the
  /// copy rows and columns it does not compute (a grouped middle conv without the copies' groups).
  std::vector<LayerSpec> executed_specs(const std::vector<std::vector<int64_t>>& kept) const;
  /// Layers whose channel counts pruning changes.
  std::vector<bool> resized() const;

 private:
  std::vector<LayerSpec> specs_;
  std::vector<int64_t> pixels_;        // output H * W per layer
  std::vector<int> out_unit_, in_unit_;  // unit resizing the layer's outputs / inputs, or -1
  std::vector<int64_t> unit_channels_;
  AddsBias adds_bias_;
  std::vector<DiracShortcut> shortcuts_;
  /// The shortcuts' discount for these kept channels: per layer, rows and columns not computed and
  /// a projection's MACs (executed mode).
  void discount(const std::vector<std::vector<int64_t>>& kept, std::vector<int64_t>& free_rows,
                std::vector<int64_t>& free_cols, std::vector<int64_t>& extra) const;
};

/// A target on a value of the kept channels other than MACs/parameters (the latency estimate).
struct ValueTarget {
  std::function<double(const std::vector<std::vector<int64_t>>& kept)> value;
  double target = 0.0;
  std::string what;  ///< for errors, e.g. "target_latency_ms 3.2"
};

/// Chooses the kept channels of every unit (fills units[u].kept) from per-channel importance
/// (+inf: not removable) under the options' criterion and constraints; reports threshold, notes and
/// (without keep_one) throws for an emptied unit. Targets are met through `cost`.
void select_channels(const PlainNetImpl& net, std::vector<PruneUnit>& units,
                     const std::vector<std::vector<double>>& importance, const PruneOptions& options,
                     const PruneCost& cost, PruneReport& report, const ValueTarget* value_target = nullptr);

}  // namespace rmnet::detail
