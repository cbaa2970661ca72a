#pragma once
// The RM operation (reserve + merge): a residual model to an equivalent plain network.
//
// Passes, in order (each returns a new module and never mutates its input):
//   1. reserve_merge          residual model -> PlainNet with BN kept (trainable, prunable)
//   2. fold_batchnorm         conv+BN -> conv with bias                          (convert/fuse.h)
//   3. simplify_activations   ReLUs and identities in disguise                   (convert/fuse.h)
//   4. fuse_pointwise         adjacent 1x1 convs -> one 1x1 conv (paper Eq. 4)   (convert/fuse.h)
// `convert` runs them as the options say and verifies the result against the source.
#include <string>
#include <utility>
#include <vector>

#include "rmnet/convert/fuse.h"
#include "rmnet/convert/verify.h"
#include "rmnet/models/plain.h"
#include "rmnet/models/profile.h"

namespace rmnet {

/// How a downsample block (stride 2 or a projection shortcut) is converted (paper, Figure 2).
enum class DownsampleMode {
  /// Type 1: the 1x1 projection padded to 3x3 joins the first conv; a PReLU (slope 0 on the
  /// branch, 1 on the projection) passes it to the merge. BasicBlock: 108C^2 + 4C parameters.
  Type1 = 1,
  /// Type 2 (default): a stride-2 Dirac conv reserves the input, the projection moves into the
  /// merge conv. BasicBlock: 81C^2 parameters.
  Type2 = 2,
};

struct ConvertOptions {
  /// Keep BatchNorm layers (trainable/prunable form); false folds them into the convs (deploy).
  TORCH_ARG(bool, keep_bn) = false;
  TORCH_ARG(DownsampleMode, downsample) = DownsampleMode::Type2;
  /// Pointwise fusion in the deploy form (ignored when keep_bn).
  TORCH_ARG(PointwiseFusion, fuse_pointwise) = PointwiseFusion::Auto;
  /// Reserve convs of Bottleneck/MobileNetV2 blocks as grouped convs where the group size
  /// divides the reserved channels (block-diagonal, exact); false makes them dense.
  TORCH_ARG(bool, grouped_reserve) = true;
  /// Verify the result against the source (input shape etc. in `verify`).
  TORCH_ARG(bool, verify) = true;
  TORCH_ARG(VerifyOptions, verify_options) = VerifyOptions();
  /// Input size at which the cost (parameters, MACs) of source and result is reported: 0 uses
  /// the verification input size, a negative value skips the cost report.
  TORCH_ARG(int64_t, cost_input_size) = 0;
};

struct ConversionResult {
  PlainNet net{nullptr};
  VerifyReport report;  ///< meaningful when ConvertOptions::verify
  /// Every step in order, timed ("float64_copy", "reserve_merge", "fold_batchnorm", ..., "build",
  /// "verify", "cost"); the Transform records are the result's metadata "passes".
  std::vector<ir::PassRecord> passes;
  /// The same network as `net` (its older name).
  PlainNet plain{nullptr};
  /// `passes` as (name, seconds) pairs (their older shape).
  std::vector<std::pair<std::string, double>> pass_seconds;
  /// Cost of the source and of the result (MACs of conv + linear per image, parameters) at
  /// `cost_input_size` (0 when skipped). Also in the result's metadata: "cost.input_size",
  /// "cost.flops_before", "cost.flops_after", "cost.params_before", "cost.params_after".
  ModelCost cost_before, cost_after;
  int64_t cost_input_size = 0;
};

/// Pass 1: the RM operation on every residual block. Result: PlainNet with BN kept, in the
/// source's dtype and device. Every family of the registry converts (ResNet with Basic or
/// Bottleneck blocks, SE and shortcut scales; MobileNetV2; RMNet; RepVGG; pre-activation ResNet;
/// MobileNetV1 and plain networks, which are read as they are).
PlainNet reserve_merge(const ModelImpl& model, DownsampleMode downsample = DownsampleMode::Type2,
                       bool grouped_reserve = true);

/// The whole conversion: reserve_merge, then (unless keep_bn) fold_batchnorm and
/// fuse_pointwise, then verification. Never mutates `model`. A plain model is passed through
/// the later passes only. The result's metadata records the passes and the verification.
ConversionResult convert(const ModelImpl& model, const ConvertOptions& options = ConvertOptions());

}  // namespace rmnet
