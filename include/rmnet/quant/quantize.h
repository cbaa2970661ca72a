#pragma once
// Post-training quantization of a plain network: a pass pipeline like `convert`.
//   1. fold_batchnorm   conv + BN -> conv with bias                      (convert/fuse.h)
//   2. equalize         cross-layer equalization, exact                  (quant/equalize.h);
//                       by default on the calibration images' per-channel activation ranges
//   3. calibrate        the float network on calibration images; an observer per quantization
//                       point (quant_plan) picks the u8 range [lo, hi] (lo <= 0 <= hi):
//                         scale = (hi - lo) / 255, zero_point = round(-lo / scale)
//   4. quantize         per output channel symmetric s8 weights: scale_c = max|W_c| / 127,
//                       q = clamp(round(W / scale_c), -127, 127); biases stay float32
// Each pass is timed; the input is never modified.
#include <string>
#include <utility>
#include <vector>

#include <torch/arg.h>

#include "rmnet/data/dataset.h"
#include "rmnet/data/transforms.h"
#include "rmnet/ir/passes.h"
#include "rmnet/models/plain.h"
#include "rmnet/quant/equalize.h"
#include "rmnet/quant/qnet.h"

namespace rmnet {

/// How calibration turns observed activations into a u8 range.
enum class Observer {
  MinMax,      ///< the smallest and largest value seen
  Percentile,  ///< the `percentile`-th percentile (and 100 - it for signed tensors) of a histogram
  MSE,         ///< the clipping range that minimises the expected squared quantization error
};
Observer observer_from_string(const std::string& s);  ///< "minmax", "percentile", "mse"
std::string to_string(Observer o);

struct QuantizeOptions {
  /// Cross-layer equalization before calibration (exact; see quant/equalize.h).
  TORCH_ARG(bool, equalize) = true;
  /// What equalization balances: activation ranges on the calibration images (default) or weights (DFQ).
  TORCH_ARG(EqualizeBy, equalize_by) = EqualizeBy::Activations;
  TORCH_ARG(EqualizeOptions, equalize_options) = EqualizeOptions();
  /// Activation range observer. Percentile is the default: within 0.5 pt of float32 on every network
  /// of the study (docs/QUANTIZATION.md), and unlike min/max not set by one outlier image; MSE clips
  /// the wide tensors of RM Bottleneck networks too hard (-1.5 pt on ResNet-50).
  TORCH_ARG(Observer, observer) = Observer::Percentile;
  /// Percentile of the Percentile observer.
  TORCH_ARG(double, percentile) = 99.99;
  /// Histogram bins of the Percentile and MSE observers.
  TORCH_ARG(int64_t, bins) = 2048;
  /// Calibration images per forward.
  TORCH_ARG(int64_t, batch_size) = 64;
  /// Exact copies: in an RM block whose activation runs are ReLU / clamps (ResNets, the ReLU6
  /// MobileNetV2), the reserved Dirac channels pass the block input's u8 codes unchanged to the merge
  /// conv: each copy row is rescaled (a function-preserving change, compensated in the conv that reads
  /// it) so that its requantization is the identity on codes, and the points they pass through take
  /// the block input's zero point and a scale set by the branch channels alone. The quantized network then computes the residual
  /// network's INT8 arithmetic (the block input added once, at the merge conv's quantization), and
  /// the INT8 executor adds the copies inside the merge conv (a oneDNN post-op) instead of computing
  /// them. Off: the copies are requantized at every conv on their way like any channel.
  TORCH_ARG(bool, exact_copies) = true;
};

/// The spread of per-channel activation ranges entering one equalization pair's consumer: the
/// largest over the median of the channels' largest |activation| on the calibration images, before
/// and after equalization (equal when equalization is off). One per-tensor u8 scale serves all
/// channels, so a spread of 100 leaves the median channel about 2.5 of the 255 steps.
struct ActivationSpread {
  size_t producer = 0;  ///< layer index (BN-folded chain) of the pair's producer conv
  int64_t channels = 0;
  double before = 0, after = 0;
};

struct QuantizeResult {
  QuantizedNet net{nullptr};
  /// The float network that was quantized (BN folded, equalized when asked).
  PlainNet float_net{nullptr};
  /// Every step in order, timed ("fold_batchnorm", "equalize", "calibrate", "quantize"; also in
  /// the metadata "quant.passes").
  std::vector<ir::PassRecord> passes;
  /// `passes` as (name, seconds) pairs (their older shape).
  std::vector<std::pair<std::string, double>> pass_seconds;
  int64_t calibration_images = 0;
  /// Per equalization pair, in chain order.
  std::vector<ActivationSpread> activation_spread;
  /// RM blocks whose copies pass the block input's codes unchanged (QuantizeOptions::exact_copies).
  int64_t exact_copy_blocks = 0;
};

/// Quantizes a plain network (BN folded or kept) with calibration images `calibration` (float
/// [N, C, H, W], already preprocessed as for evaluation). A residual model is refused with a
/// message saying to convert it first; an empty calibration set is refused. The result is on the
/// CPU; its metadata is the source's plus "quant.*" entries (observer, equalization, images,
/// fallbacks, pass timings).
QuantizeResult quantize(const ModelImpl& model, const torch::Tensor& calibration,
                        const QuantizeOptions& options = QuantizeOptions());

/// The indices calibration_images() picks: a seeded random choice of min(n, size) of [0, size)
/// without repetition, in the order used. Throws for size 0 or n < 1.
std::vector<int64_t> calibration_indices(int64_t size, int64_t n, uint64_t seed = 0);

/// `n` images of `dataset` (calibration_indices(size, n, seed); all of them when n >= size)
/// through `transform`, stacked as float [n, C, H, W]. Throws for an empty data set.
torch::Tensor calibration_images(const Dataset& dataset, const Transform& transform, int64_t n, uint64_t seed = 0);

/// The u8 range an observer picks from values with histogram `hist` over [lo, hi] (bins of
/// equal width): used by calibrate; exposed for tests. Returns {lo', hi'} with lo' <= 0 <= hi'.
std::pair<double, double> observe_range(const torch::Tensor& hist, double lo, double hi, Observer observer,
                                        double percentile = 99.99);

/// Symmetric per-output-channel s8 quantization of a weight [out, ...]: {int8 values, float scales [out]}.
std::pair<torch::Tensor, torch::Tensor> quantize_weight_s8(const torch::Tensor& w);

}  // namespace rmnet
