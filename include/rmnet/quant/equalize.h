#pragma once
// Cross-layer equalization (Nagel et al., "Data-Free Quantization", 2019) of a plain network.
//
// For a conv A whose output channel c reaches a consumer B (conv or pooled Linear) through layers
// that are positively homogeneous per channel (ReLU, PReLU, per-channel Clamp, MaxPool, AvgPool,
// Flatten, a depthwise/grouped conv that only mixes within the channel's group counts as a
// consumer), for any s_c > 0:
//   B(f(A(x))) = B'(f'(A'(x)))   with  W'_A[c] = W_A[c] / s_c,  b'_A[c] = b_A[c] / s_c,
//                                      W'_B[:, c] = s_c W_B[:, c],  clamp bounds'[c] = bounds[c] / s_c
// because relu(x / s) = relu(x) / s, prelu likewise, clamp(x / s, lo / s, hi / s) = clamp(x, lo, hi) / s
// and max-pool commutes with a positive per-channel scale. So the result computes exactly what the
// input computes (up to floating-point rounding). s_c = sqrt(r_A[c] / r_B[c]), r the largest |w| of
// channel c on each side, makes both ranges sqrt(r_A r_B): per-tensor quantization then suits every
// channel, which is what RM's reserved channels (the block input, with its own range) need.
// Pairs are equalized in order, repeated `iterations` times (the scales of a conv's input and output
// interact); SE layers and BatchNorm end a pair (BN is folded first).
//
// That weight criterion is DFQ's, made for per-tensor weight quantization. With per-channel weights
// (what rmnet's INT8 uses) the producer's row ranges do not matter at all; what a per-tensor u8
// activation scale needs is channels of similar *activation* range - and RM's reserved channels
// (the block input) and the block's own channels differ there. The activation criterion
// (equalize_activations) takes the same exact transformation with the scales chosen from
// calibration statistics, as SmoothQuant (Xiao et al., 2023) does for transformers:
//   s_c = a_c^alpha / w_c^(1 - alpha)
// with a_c the largest |activation| of channel c entering B and w_c the largest |W_B[o, c]| relative
// to its row's range max_c' |W_B[o, c']| (the per-channel weight quantization only sees that ratio),
// normalised so the largest s_c is 1: alpha = 1 gives every channel the same activation range,
// alpha = 0 leaves the activations and flattens B's rows; a float32 consumer (the Linear of the head)
// takes alpha = 1. The pairs are independent (a conv's row scaling does not change its per-row
// quantization), so one pass suffices.
#include <map>

#include <torch/arg.h>

#include "rmnet/models/plain.h"

namespace rmnet {

struct EqualizeOptions {
  /// Sweeps over all pairs (each sweep moves every pair to balanced ranges given its neighbours).
  TORCH_ARG(int64_t, iterations) = 20;
  /// Scales are clipped to [1 / max_scale, max_scale], so a near-dead channel is not blown up.
  TORCH_ARG(double, max_scale) = 1e4;
  /// Activation criterion: the migration strength alpha in [0, 1] (see above).
  TORCH_ARG(double, alpha) = 0.5;
};

/// What equalization balances.
enum class EqualizeBy {
  Activations,  ///< per-channel activation ranges from calibration images (the default for quantize)
  Weights,      ///< DFQ: the producer's output-channel and the consumer's input-channel weight ranges
};
EqualizeBy equalize_by_from_string(const std::string& s);  ///< "activations", "weights"
std::string to_string(EqualizeBy by);

/// Per-pair record of what equalization did (for reports and the study).
struct EqualizePair {
  size_t producer = 0, consumer = 0;  ///< layer indices of A and B
};

/// Cross-layer equalization. BatchNorm layers are folded into their convs first (fold_batchnorm),
/// so the result is the deploy form. Returns a new network in the input's dtype and device; the
/// input is not modified. Arithmetic in float64.
PlainNet equalize(const PlainNetImpl& net, const EqualizeOptions& options = EqualizeOptions());

/// Per-channel largest |activation| entering the consumer of each equalization pair (the input of
/// the first AvgPool/Flatten for a pooled Linear consumer), keyed by the pair's producer index, over
/// `images` (float [N, C, H, W], preprocessed) run through `net` in batches. `net` must be BN-free
/// (fold_batchnorm), so its indices are those equalize() works on; throws otherwise.
std::map<size_t, torch::Tensor> activation_ranges(PlainNetImpl& net, const torch::Tensor& images,
                                                  int64_t batch_size = 64);

/// Activation-aware cross-layer equalization of a BN-free chain with `ranges` from
/// activation_ranges(net, ...): exact like equalize(); the input is not modified. A pair without
/// an entry keeps its scales; a channel never active in calibration keeps scale 1.
PlainNet equalize_activations(const PlainNetImpl& net, const std::map<size_t, torch::Tensor>& ranges,
                              const EqualizeOptions& options = EqualizeOptions());

/// The (producer, consumer) pairs equalize() scales, for a BN-free chain.
std::vector<EqualizePair> equalization_pairs(const std::vector<LayerSpec>& layers);

/// Largest |w| per output channel of every Conv layer (a [out] tensor each, keyed by layer index):
/// the per-channel weight ranges that equalization balances (the study plots them).
std::vector<std::pair<size_t, torch::Tensor>> weight_ranges(const PlainNetImpl& net);

}  // namespace rmnet
