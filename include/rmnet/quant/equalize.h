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
#include <torch/arg.h>

#include "rmnet/models/plain.h"

namespace rmnet {

struct EqualizeOptions {
  /// Sweeps over all pairs (each sweep moves every pair to balanced ranges given its neighbours).
  TORCH_ARG(int64_t, iterations) = 20;
  /// Scales are clipped to [1 / max_scale, max_scale], so a near-dead channel is not blown up.
  TORCH_ARG(double, max_scale) = 1e4;
};

/// Per-pair record of what equalization did (for reports and the study).
struct EqualizePair {
  size_t producer = 0, consumer = 0;  ///< layer indices of A and B
};

/// Cross-layer equalization. BatchNorm layers are folded into their convs first (fold_batchnorm),
/// so the result is the deploy form. Returns a new network in the input's dtype and device; the
/// input is not modified. Arithmetic in float64.
PlainNet equalize(const PlainNetImpl& net, const EqualizeOptions& options = EqualizeOptions());

/// The (producer, consumer) pairs equalize() scales, for a BN-free chain.
std::vector<EqualizePair> equalization_pairs(const std::vector<LayerSpec>& layers);

/// Largest |w| per output channel of every Conv layer (a [out] tensor each, keyed by layer index):
/// the per-channel weight ranges that equalization balances (the study plots them).
std::vector<std::pair<size_t, torch::Tensor>> weight_ranges(const PlainNetImpl& net);

}  // namespace rmnet
