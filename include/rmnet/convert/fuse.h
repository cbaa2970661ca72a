#pragma once
// Fusion passes on plain networks. Each returns a new PlainNet; the input is not touched. They run
// the Chain -> Chain passes of ir/passes.h.
#include <string>

#include "rmnet/ir/passes.h"
#include "rmnet/models/plain.h"

namespace rmnet {

// PointwiseFusion: ir/passes.h

/// Folds every BatchNorm that directly follows a Conv into that conv:
///   a = gamma / sqrt(var + eps);  W' = a[c] * W[c];  b' = a[c] * (b[c] - mean[c]) + beta[c].
/// Arithmetic in float64, result cast back to the network's dtype.
PlainNet fold_batchnorm(const PlainNetImpl& net);

/// Paper Eq. 4: two adjacent 1x1 convs (stride 1, no padding, groups 1, nothing in between)
///   Z = W2 (W1 X + B1) + B2 = (W2 W1) X + (W2 B1 + B2)
/// become one. With PointwiseFusion::Auto a pair is fused only if in*out <= in*mid + mid*out
/// (multiply-adds per pixel). Run after fold_batchnorm.
PlainNet fuse_pointwise(const PlainNetImpl& net, PointwiseFusion policy = PointwiseFusion::Auto);

/// Replaces activations that are plain ReLUs in disguise (a Clamp with min 0 / max +inf on
/// every channel, a PReLU with slope 0 everywhere) by ReLU, and drops identities (a Clamp of
/// -inf/+inf, a PReLU of slope 1 everywhere). Exact.
PlainNet simplify_activations(const PlainNetImpl& net);

}  // namespace rmnet
