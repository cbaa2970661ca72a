#pragma once
// Internal: the building blocks the family translators share (Dirac filters, kernel padding,
// block-diagonal reserve convs, a block's tracked statistics, the shortcut as a 1x1 weight, ...).
//
// Notation: x is a block's input (C_in channels), (a, s) the scale/shift of a BN in eval mode
// (a = gamma / sqrt(var + eps), s = beta - mean * a).
#include <memory>
#include <utility>

#include <torch/torch.h>

#include "translate.h"
#include "rmnet/models/resnet.h"

namespace rmnet::detail {

/// Options of per-channel float64 tensors (BN parameters, biases, activation slopes).
inline torch::TensorOptions f64_options() { return torch::TensorOptions().dtype(torch::kDouble); }

/// Child i of a Sequential as T (Sequential::ptr<T> cannot name modules whose forward is inherited,
/// such as BatchNorm2d).
template <typename T>
std::shared_ptr<T> child(const torch::nn::Sequential& seq, size_t i) {
  auto p = std::dynamic_pointer_cast<T>(seq->ptr(i));
  TORCH_CHECK(p, "unexpected module at position ", i, " of a Sequential");
  return p;
}

/// `model` as the family's model class T; a model whose family() names a family it is not an
/// instance of (a deployed network calls itself "plain") gets an error naming both.
template <typename T>
const T& model_as(const ModelImpl& model, const char* class_name) {
  const auto* p = dynamic_cast<const T*>(&model);
  TORCH_CHECK(p, "cannot convert a model of family '", model.family(), "' (arch '", model.options().arch(),
              "'): it is not a ", class_name);
  return *p;
}

/// Eq. 1: Dirac filters I[c, c, k/2, k/2] = 1 for `channels` channels, dense (groups 1).
torch::Tensor dirac(int64_t channels, int64_t kernel);

/// Pads a 1x1 kernel to kernel x kernel (centred), e.g. the downsample projection to 3x3.
torch::Tensor pad_kernel(const torch::Tensor& w, int64_t kernel);

/// a[c] * W[c]: the per-channel factor is computed in float64 and rounded once to W's dtype.
torch::Tensor scale_out(const torch::Tensor& w, const torch::Tensor& a);

/// A conv whose output is [conv_a(x_a) ; x_r]: the original (possibly grouped) conv on the first
/// channels, Dirac filters passing the `reserve` last channels. The result is block-diagonal;
/// where the original conv's groups are square and their size divides `reserve`, it is exactly a
/// grouped conv with reserve/group_size extra groups (a ResNet-50 first-stage 3x3 costs 5x the
/// original instead of 25x as a dense conv); otherwise a dense conv with the blocks on the
/// diagonal. Returns the weight and its groups.
std::pair<torch::Tensor, int64_t> block_diagonal(const torch::Tensor& wa, int64_t groups_a, int64_t reserve,
                                                 bool grouped);

/// A block's tracked input/output statistics (float64), or mean 0 / var 1 when it tracks none.
struct Stats {
  torch::Tensor in_mean, in_var, out_mean, out_var;
};
Stats block_stats(const ResidualBlockBase& block, int64_t in, int64_t out);

/// The identity BN of a block's reserved input channels. With a shortcut scale s (the block's
/// shortcut sees relu(s * x)) the BN gets gamma = s * sqrt(var + eps), beta = s * mean, i.e. it
/// outputs s * x, and the ReLU after it gives relu(s * x): exact, and gamma carries s as the
/// channel's importance for slimming. A scale s <= 0 gives gamma = beta = 0 (relu(s * x) = 0 for the
/// non-negative input of a ResNet block): a channel that is exactly zero, which pruning removes first.
BNParams reserved_bn(const ResidualBlockBase& b, const Stats& st, double eps);

/// Type 1 downsample: the projection reads x directly, so a shortcut scale is folded into its
/// input columns: P relu(s * x) = P diag(max(s, 0)) x for the non-negative input of a ResNet block.
torch::Tensor scaled_projection(const ResidualBlockBase& b, const torch::Tensor& w);

/// The shortcut as a 1x1 weight and a bias: the identity, or the downsample conv with its BN folded.
struct Shortcut {
  torch::Tensor weight, bias;  // [out, in, 1, 1], [out]
};
Shortcut shortcut_of(const torch::nn::Sequential& downsample, int64_t channels);

int64_t stride_of(const torch::nn::Conv2dImpl& c);
int64_t groups_of(const torch::nn::Conv2dImpl& c);
/// The conv's (symmetric, numeric) padding; 'same'/'valid' are refused.
int64_t padding_of(const torch::nn::Conv2dImpl& c);
/// A branch conv's weight in the work dtype; branch convs with a bias are refused.
torch::Tensor weight_of(const torch::nn::Conv2dImpl& c);

/// Provenance: `n` output channels of source module `m` in one role (ch.names gives its name).
inline LayerOrigin from(const Chain& ch, ChannelRole role, const torch::nn::Module& m, int64_t n) {
  return LayerOrigin::of(role, ch.name(m), n);
}
constexpr auto kLayer = ChannelRole::Layer;
constexpr auto kBranch = ChannelRole::Branch;
constexpr auto kReserved = ChannelRole::Reserved;
constexpr auto kMerged = ChannelRole::Merged;

/// Global average pool, flatten, the classifier.
void head_to_chain(const torch::nn::LinearImpl& fc, Chain& ch);

}  // namespace rmnet::detail
