#pragma once
// Internal: Dirac shortcuts in the INT8 executor (src/deploy/int8_shortcuts.cpp).
//
// An RM block in a quantized chain is conv A = [W1 ; D] (+ its activation run, quantized at A's
// point), optionally convs M (bottleneck middle convs, MobileNetV2's depthwise) that pass the
// copies through a Dirac row each, then the merge conv B whose copy columns have weights at the
// centre tap only. Unlike the float runtime's shortcuts (src/deploy/shortcuts.cpp), a copy is not
// the block input unchanged: every conv on its path requantizes it (its own output scale), its
// weight is whatever equalization and s8 rounding made it, and its bias and activations apply. But a
// copy channel is still a function of one code of the block input: its code entering B is a table
// of the block input's 256 codes (the reference's float arithmetic for that one weight, bias,
// activation and quantization, applied to each code). So the executor computes the branch rows and
// columns only, keeps the block input's codes, and adds B's copy columns' term from those tables:
//   identity (every row of B reads at most one copy): term[o] = table[o][code of x channel src[o]]
//   projection (rows read several copies): the copies' codes (their tables applied to the strided
//   block input) through an INT8 1x1 conv with B's copy-column weights, in float32.
// B's branch conv runs with a float32 output; the term is added and the sum quantized at B's point
// (its ReLU folded in as the code floor), as the reference rounds B's whole float sum once.
#include <cstdint>
#include <memory>
#include <vector>

#include <torch/types.h>

#include "rmnet/quant/qnet.h"

namespace rmnet::detail {

struct Int8Shortcut {
  size_t a = 0;                               ///< layer of conv A (its input is the block input)
  std::vector<size_t> convs;                  ///< A, then the Ms (layer indices)
  std::vector<std::vector<int64_t>> rows;     ///< per conv of `convs`: its kept (branch) output rows
  size_t b = 0;                               ///< layer of the merge conv B
  std::vector<int64_t> b_cols;                ///< B's kept (branch) input columns (== rows.back())
  int64_t stride = 1;                         ///< B's output (i, j) reads the block input at (stride i, stride j)
  int64_t copies = 0;                         ///< Dirac copies of A (rows it no longer computes)
  bool identity = false;
  // identity: per row o of B, the block-input channel its term reads (-1: none), and its term in
  // float32 for each of the 256 codes [B.out, 256]
  std::vector<int64_t> src;
  torch::Tensor table;
  // identity whose every row o's term is linear in channel o's code: term[o] = add_factor[o] *
  // (code - add_zp) + add_bias[o], which B's conv adds itself (a oneDNN binary post-op on the kept
  // input, QConvParams::add_factor; add_bias joins B's bias). A row whose copy reaches B as the
  // block input's code unchanged (the quantizer's exact copies) with a weight > 0 has a factor > 0
  // and bias 0; a row whose copy's table is one code (a dead reserve) or with no copy has factor 0
  // and its constant term (or 0) as bias. Undefined otherwise.
  torch::Tensor add_factor, add_bias;
  int64_t add_zp = 0;
  // projection: per copy column of B, the block-input channel it carries and its code for each
  // block-input code [copies, 256] u8; B's weights of those columns at the centre tap [B.out,
  // copies, 1, 1] s8 (B's per-row weight scales); the scale and zero point of the codes
  std::vector<int64_t> xs;
  torch::Tensor lut, weight_s8, w_scale;
  torch::Tensor lut32;    ///< lut as int32 (the AVX-512 kernel's gather table)
  bool straight = false;  ///< xs[t] == t: copy t carries block-input channel t
  /// Projection whose copies reach B as the block input's codes unchanged (identity tables, one copy
  /// per block-input channel at most) or as constants (a dead reserve): the projection is a 1x1
  /// conv of the kept input at the stride, kept_weight_s8 [B.out, block-input channels, 1, 1] (B's
  /// copy-column weights at their channels, zero where a channel has no copy or a constant one),
  /// kept_bias [B.out] float32 the constants' term, and B adds its float32 result itself
  /// (QConvParams::add_float).
  bool codes_pass = false;
  torch::Tensor kept_weight_s8, kept_bias;
  double code_scale = 1;
  int64_t code_zp = 0;
};

/// The RM blocks of a quantized chain whose copies can run as shortcuts (see the file comment), in
/// chain order, non-overlapping.
std::vector<std::shared_ptr<const Int8Shortcut>> find_int8_shortcuts(const QuantizedNetImpl& net);

/// The copies' codes entering B of a projection shortcut: [N, copies, Ho, Wo] u8 channels-last from
/// the block input `x` (u8 [N, C, H, W]).
torch::Tensor int8_shortcut_codes(const Int8Shortcut& sc, const torch::Tensor& x);

/// B's output: quantize(y + term) at (out_scale, out_zp), floored at the zero point when `relu`.
/// `y` is B's branch conv in float32 [N, O, Ho, Wo]; the term is the identity tables read at the
/// block input `x` (u8) or, for a projection, the float32 tensor `x` itself [N, O, Ho, Wo].
torch::Tensor add_int8_shortcut(const Int8Shortcut& sc, const torch::Tensor& y, const torch::Tensor& x,
                                double out_scale, int64_t out_zp, bool relu);

}  // namespace rmnet::detail
