#pragma once
// The residual baseline of the paper's Figure 6: slimming a residual network where only the channels
// inside blocks can go (BasicBlock conv1; Bottleneck conv1, conv2; InvertedResidual expand with its
// tied depthwise conv; PreActBlock conv1), the channels on the residual stream being tied across
// blocks. Implemented as mask-only pruning on the plain form: the model is converted to its plain
// BN-kept form (dense reserve convs) and only the channels whose provenance says "branch" are
// candidates (a ratio is a percentile over those; every option of prune() applies, folding the
// removed channels' constants included). The result is a plain network; `residual_params_after` is
// what the physically smaller residual network would have (its parameters minus each removed
// channel's conv filter, BN entries and next-conv input slice). target_params and target_macs are
// fractions of the residual network's parameters and MACs (a branch channel costs the same in both
// forms, so the target translates exactly to the plain form).
#include "rmnet/prune/slim.h"

namespace rmnet {

struct ResidualPruneResult {
  PruneResult plain;
  int64_t residual_params_before = 0, residual_params_after = 0;
};

/// Throws for a plain model, a model without residual blocks whose channels can be pruned, and
/// whatever prune() throws for the options.
ResidualPruneResult prune_residual(const ModelImpl& model, const PruneOptions& options);
/// The same with calibration images for PruneOptions::reconstruct (refits the consumers of the
/// pruned branch channels; with reconstruct_keep_dirac the shortcuts stay exact Dirac copies).
ResidualPruneResult prune_residual(const ModelImpl& model, const PruneOptions& options, const torch::Tensor& calibration);

}  // namespace rmnet
