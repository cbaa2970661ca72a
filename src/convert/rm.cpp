// Pass 1 of the conversion: the RM operation (reserve + merge) on every residual block.
//
// Notation per block: x is the block input (C_in channels), W1.. the branch convs, (a, s) the
// scale/shift of a BN in eval mode (a = gamma / sqrt(var + eps), s = beta - mean * a).
//   reserve: the first conv gets C_in extra Dirac filters (Eq. 1); its BN gets an identity BN on
//            them (w = sqrt(var + eps), b = mean, with the block's tracked input statistics);
//            ReLU keeps them (x >= 0 after a ResNet block), otherwise a PReLU of slope 1 or a
//            clamp of (-inf, +inf) does (MobileNetV2, whose block input can be negative).
//   merge:   the last conv takes the reserved channels as extra inputs with Dirac weights (Eq. 3):
//            [a_last * W_last | a_sc * P] with bias s_last + s_sc, where P is the shortcut (the
//            identity, or the downsample projection padded to the kernel size), followed by an
//            identity BN with the block's output statistics (so every conv of the BN-kept form
//            has a BN, for fine-tuning and slimming).
#include "rmnet/convert/rm.h"

#include <chrono>
#include <limits>

#include <fmt/format.h>
#include <torch/torch.h>

#include "chain.h"
#include "rmnet/convert/fuse.h"
#include "rmnet/models/mobilenet.h"
#include "rmnet/models/preact.h"
#include "rmnet/models/repvgg.h"
#include "rmnet/models/resnet.h"
#include "rmnet/models/rmnet_family.h"

namespace rmnet {
namespace nn = torch::nn;
using detail::BNParams;
using detail::Chain;
using detail::ChainLayer;
using detail::to_f64;

namespace {

const auto kF64 = torch::TensorOptions().dtype(torch::kDouble);

/// Provenance: `n` channels of source module `m` with one role.
LayerOrigin from(const Chain& ch, ChannelRole role, const nn::Module& m, int64_t n) {
  return LayerOrigin::of(role, ch.name(m), n);
}
constexpr auto kLayer = ChannelRole::Layer;
constexpr auto kBranch = ChannelRole::Branch;
constexpr auto kReserved = ChannelRole::Reserved;
constexpr auto kMerged = ChannelRole::Merged;
using detail::to_work;
using detail::work_options;

/// Child i of a Sequential as T (Sequential::ptr<T> cannot name modules whose forward is inherited,
/// such as BatchNorm2d).
template <typename T>
std::shared_ptr<T> child(const nn::Sequential& seq, size_t i) {
  auto p = std::dynamic_pointer_cast<T>(seq->ptr(i));
  TORCH_CHECK(p, "unexpected module at position ", i, " of a Sequential");
  return p;
}

/// Eq. 1: Dirac filters I[c, c, k/2, k/2] = 1 for `channels` channels, dense (groups 1).
torch::Tensor dirac(int64_t channels, int64_t kernel) {
  auto w = torch::zeros({channels, channels, kernel, kernel}, work_options());
  auto idx = torch::arange(channels);
  w.index_put_({idx, idx, kernel / 2, kernel / 2}, 1.0);
  return w;
}

/// Pads a 1x1 kernel to kernel x kernel (centred), e.g. the downsample projection to 3x3.
torch::Tensor pad_kernel(const torch::Tensor& w, int64_t kernel) {
  if (w.size(2) == kernel) return w;
  TORCH_CHECK(w.size(2) == 1 && w.size(3) == 1, "can only pad 1x1 kernels (got ", w.sizes(), ")");
  auto out = torch::zeros({w.size(0), w.size(1), kernel, kernel}, w.options());
  out.index_put_({torch::indexing::Slice(), torch::indexing::Slice(), kernel / 2, kernel / 2},
                 w.index({torch::indexing::Slice(), torch::indexing::Slice(), 0, 0}));
  return out;
}

/// a[c] * W[c]: the per-channel factor is computed in float64 and rounded once to W's dtype.
torch::Tensor scale_out(const torch::Tensor& w, const torch::Tensor& a) {
  return w * a.to(w.scalar_type()).view({-1, 1, 1, 1});
}

/// A conv whose output is [conv_a(x_a) ; x_r]: the original (possibly grouped) conv on the first
/// channels, Dirac filters passing the `reserve` last channels. The result is block-diagonal;
/// where the original conv's groups are square and their size divides `reserve`, it is exactly a
/// grouped conv with reserve/group_size extra groups (the design doc's 5x-instead-of-25x
/// Bottleneck); otherwise a dense conv with the blocks on the diagonal.
std::pair<torch::Tensor, int64_t> block_diagonal(const torch::Tensor& wa, int64_t groups_a, int64_t reserve,
                                                 bool grouped) {
  const int64_t k = wa.size(2), oa = wa.size(0), gin = wa.size(1), gout = oa / groups_a;
  const int64_t ia = gin * groups_a;
  if ((grouped || groups_a > 1) && gin == gout && reserve % gin == 0) {
    const int64_t extra = reserve / gin;
    auto wr = torch::zeros({reserve, gin, k, k}, wa.options());
    auto rows = torch::arange(reserve);
    wr.index_put_({rows, rows.remainder(gin), k / 2, k / 2}, 1.0);
    return {torch::cat({wa, wr}, 0), groups_a + extra};
  }
  using torch::indexing::Slice;
  auto w = torch::zeros({oa + reserve, ia + reserve, k, k}, wa.options());
  for (int64_t g = 0; g < groups_a; ++g)
    w.index_put_({Slice(g * gout, (g + 1) * gout), Slice(g * gin, (g + 1) * gin)},
                 wa.index({Slice(g * gout, (g + 1) * gout)}));
  w.index_put_({Slice(oa, oa + reserve), Slice(ia, ia + reserve)}, dirac(reserve, k));
  return {w, 1};
}

struct Stats {
  torch::Tensor in_mean, in_var, out_mean, out_var;
};
Stats block_stats(const ResidualBlockBase& block, int64_t in, int64_t out) {
  const auto& s = block.stats();
  if (s.defined()) return {to_f64(s.in_mean), to_f64(s.in_var), to_f64(s.out_mean), to_f64(s.out_var)};
  return {torch::zeros({in}, kF64), torch::ones({in}, kF64), torch::zeros({out}, kF64), torch::ones({out}, kF64)};
}

/// The identity BN of a block's reserved input channels. With a shortcut scale s (the block's
/// shortcut sees relu(s * x)) the BN gets gamma = s * sqrt(var + eps), beta = s * mean, i.e. it
/// outputs s * x, and the ReLU after it gives relu(s * x): exact, and gamma carries s as the
/// channel's importance for slimming.
BNParams reserved_bn(const ResidualBlockBase& b, const Stats& st, double eps) {
  auto p = BNParams::identity(st.in_mean, st.in_var, eps);
  if (b.shortcut_scale.defined()) {
    const auto s = to_f64(b.shortcut_scale);
    p.weight = p.weight * s;
    p.bias = p.bias * s;
  }
  return p;
}

/// Type 1 downsample: the projection reads x directly, so a shortcut scale is folded into its
/// input columns: P relu(s * x) = P diag(max(s, 0)) x for the non-negative input of a ResNet block.
torch::Tensor scaled_projection(const ResidualBlockBase& b, const torch::Tensor& w) {
  if (!b.shortcut_scale.defined()) return w;
  return w * torch::relu(to_f64(b.shortcut_scale)).to(w.scalar_type()).view({1, -1, 1, 1});
}

/// The shortcut as a 1x1 weight and a bias: the identity, or the downsample conv with its BN folded.
struct Shortcut {
  torch::Tensor weight, bias;  // [out, in, 1, 1], [out]
};
Shortcut shortcut_of(const nn::Sequential& downsample, int64_t channels) {
  if (!downsample) return {dirac(channels, 1), torch::zeros({channels}, kF64)};
  auto conv = downsample->ptr<nn::Conv2dImpl>(0);
  auto bn = BNParams::from(*child<nn::BatchNorm2dImpl>(downsample, 1));
  TORCH_CHECK(conv->options.kernel_size()->at(0) == 1, "downsample conv must be 1x1");
  return {scale_out(to_work(conv->weight), bn.scale()), bn.shift()};
}

int64_t stride_of(const nn::Conv2dImpl& c) { return c.options.stride()->at(0); }
int64_t groups_of(const nn::Conv2dImpl& c) { return c.options.groups(); }
int64_t padding_of(const nn::Conv2dImpl& c) {
  const auto* p = std::get_if<torch::ExpandingArray<2>>(&c.options.padding());
  TORCH_CHECK(p, "convs with 'same'/'valid' padding are not supported");
  return (*p)->at(0);
}
torch::Tensor weight_of(const nn::Conv2dImpl& c) {
  TORCH_CHECK(!c.options.bias(), "branch convs with a bias are not supported");
  return to_work(c.weight);
}

/// The SE module of a residual block as a plain SE layer on `channels` channels, the first
/// `scaled` of which it rescales (the reserved input passes unchanged).
void se_to_chain(const SqueezeExcitationImpl& se, int64_t channels, Chain& ch) {
  const auto flat = [](const torch::Tensor& w) { return to_f64(w).flatten(1); };
  ChainLayer l;
  const int64_t hidden = se.fc1->options.out_channels(), scaled = se.fc1->options.in_channels();
  l.spec = LayerSpec::se(channels, scaled, hidden);
  l.tensors = {{"w1", flat(se.fc1->weight)}, {"b1", to_f64(se.fc1->bias)}, {"w2", flat(se.fc2->weight)},
               {"b2", to_f64(se.fc2->bias)}};
  ch.push(std::move(l));
}

/// The tail of a block with SE: the branch output `cout` channels + the reserved input `cin`
/// channels go through SE (branch only), then a 1x1 merge [I | P] adds the shortcut.
void se_merge(const ResidualBlockBase& b, const SqueezeExcitationImpl& se, int64_t cout, int64_t cin,
              const Shortcut& sc, const Stats& st, double eps, Chain& ch) {
  se_to_chain(se, cout + cin, ch);
  ch.conv(torch::cat({dirac(cout, 1), sc.weight}, 1), sc.bias, 1, 0);
  ch.mark(from(ch, kMerged, b, cout));
  ch.batchnorm(BNParams::identity(st.out_mean, st.out_var, eps));
  ch.relu();
}

void convert_basic(const BasicBlockImpl& b, DownsampleMode mode, Chain& ch) {
  const int64_t cin = b.conv1->options.in_channels(), cmid = b.conv1->options.out_channels();
  const int64_t cout = b.conv2->options.out_channels(), s = b.stride;
  const auto st = block_stats(b, cin, cout);
  const auto bn1 = BNParams::from(*b.bn1), bn2 = BNParams::from(*b.bn2);
  const auto w1 = weight_of(*b.conv1), w2 = weight_of(*b.conv2);
  if (b.se) {
    // SE acts on the branch before the addition, so the merge is a separate 1x1 conv after it:
    // [W1 ; D] (stride s), BN, ReLU, [[W2, 0], [0, D]], BN [bn2 ; identity], SE, [I | P].
    const auto sc = shortcut_of(b.downsample, cin);
    ch.conv(torch::cat({w1, dirac(cin, 3)}, 0), {}, s, 1);
    ch.mark(from(ch, kBranch, *b.conv1, cmid) + from(ch, kReserved, b, cin));
    ch.batchnorm(BNParams::cat({bn1, reserved_bn(b, st, bn1.eps)}));
    ch.relu();
    ch.conv(block_diagonal(w2, 1, cin, false).first, {}, 1, 1);
    ch.mark(from(ch, kBranch, *b.conv2, cout) + from(ch, kReserved, b, cin));
    ch.batchnorm(BNParams::cat({bn2, BNParams::identity(st.in_mean, st.in_var, bn2.eps)}));
    se_merge(b, *b.se, cout, cin, sc, st, bn2.eps, ch);
    return;
  }
  if (b.downsample && mode == DownsampleMode::Type1) {
    // Figure 2(a): [W1 ; Wd padded to 3x3], BN [bn1 ; bn_d], PReLU [0 ; 1], merge [a2 W2 | I].
    auto dconv = b.downsample->ptr<nn::Conv2dImpl>(0);
    auto dbn = BNParams::from(*child<nn::BatchNorm2dImpl>(b.downsample, 1));
    ch.conv(torch::cat({w1, pad_kernel(scaled_projection(b, to_work(dconv->weight)), 3)}, 0), {}, s, 1);
    ch.mark(from(ch, kBranch, *b.conv1, cmid) + from(ch, kReserved, *dconv, cout));
    ch.batchnorm(BNParams::cat({bn1, dbn}));
    ch.prelu(torch::cat({torch::zeros({cmid}, kF64), torch::ones({cout}, kF64)}));
    ch.conv(torch::cat({scale_out(w2, bn2.scale()), dirac(cout, 3)}, 1), bn2.shift(), 1, 1);
    ch.mark(from(ch, kMerged, b, cout));
  } else {
    // Figure 1 / Figure 2(b): [W1 ; Dirac (stride s)], BN [bn1 ; identity], ReLU,
    // merge [a2 W2 | P padded to 3x3] with P the identity or the downsample projection.
    const auto sc = shortcut_of(b.downsample, cin);
    ch.conv(torch::cat({w1, dirac(cin, 3)}, 0), {}, s, 1);
    ch.mark(from(ch, kBranch, *b.conv1, cmid) + from(ch, kReserved, b, cin));
    ch.batchnorm(BNParams::cat({bn1, reserved_bn(b, st, bn1.eps)}));
    ch.relu();
    ch.conv(torch::cat({scale_out(w2, bn2.scale()), pad_kernel(sc.weight, 3)}, 1), bn2.shift() + sc.bias, 1, 1);
    ch.mark(from(ch, kMerged, b, cout));
  }
  ch.batchnorm(BNParams::identity(st.out_mean, st.out_var, bn2.eps));
  ch.relu();
}

void convert_bottleneck(const BottleneckImpl& b, DownsampleMode mode, bool grouped, Chain& ch) {
  const int64_t cin = b.conv1->options.in_channels(), w = b.conv1->options.out_channels();
  const int64_t cout = b.conv3->options.out_channels(), s = stride_of(*b.conv2);
  const auto st = block_stats(b, cin, cout);
  const auto bn1 = BNParams::from(*b.bn1), bn2 = BNParams::from(*b.bn2), bn3 = BNParams::from(*b.bn3);
  const auto w1 = weight_of(*b.conv1), w2 = weight_of(*b.conv2), w3 = weight_of(*b.conv3);
  const int64_t g2 = groups_of(*b.conv2);
  const auto zeros = [](int64_t n) { return torch::zeros({n}, kF64); };
  const auto ones = [](int64_t n) { return torch::ones({n}, kF64); };
  // conv1 and conv2 with the (type 2) reserve: [W1 ; D], BN, ReLU, grouped [W2 ; D] (stride s), BN, ReLU.
  const auto reserve_conv1_conv2 = [&] {
    ch.conv(torch::cat({w1, dirac(cin, 1)}, 0), {}, 1, 0);
    ch.mark(from(ch, kBranch, *b.conv1, w) + from(ch, kReserved, b, cin));
    ch.batchnorm(BNParams::cat({bn1, reserved_bn(b, st, bn1.eps)}));
    ch.relu();
    auto [w2r, groups] = block_diagonal(w2, g2, cin, grouped);
    ch.conv(w2r, {}, s, 1, groups);
    ch.mark(from(ch, kBranch, *b.conv2, w2.size(0)) + from(ch, kReserved, b, cin));
    ch.batchnorm(BNParams::cat({bn2, BNParams::identity(st.in_mean, st.in_var, bn2.eps)}));
    ch.relu();
  };
  if (b.se) {
    const auto sc = shortcut_of(b.downsample, cin);
    reserve_conv1_conv2();
    ch.conv(block_diagonal(w3, 1, cin, false).first, {}, 1, 0);
    ch.mark(from(ch, kBranch, *b.conv3, cout) + from(ch, kReserved, b, cin));
    ch.batchnorm(BNParams::cat({bn3, BNParams::identity(st.in_mean, st.in_var, bn3.eps)}));
    se_merge(b, *b.se, cout, cin, sc, st, bn3.eps, ch);
    return;
  }
  if (b.downsample && mode == DownsampleMode::Type1) {
    // Type 1: the projection joins conv1 (stride 1, full resolution), a Dirac in conv2 strides it,
    // PReLUs of slope 1 pass it (it can be negative), the merge adds it.
    auto dconv = b.downsample->ptr<nn::Conv2dImpl>(0);
    auto dbn = BNParams::from(*child<nn::BatchNorm2dImpl>(b.downsample, 1));
    ch.conv(torch::cat({w1, scaled_projection(b, to_work(dconv->weight))}, 0), {}, 1, 0);
    ch.mark(from(ch, kBranch, *b.conv1, w) + from(ch, kReserved, *dconv, cout));
    ch.batchnorm(BNParams::cat({bn1, dbn}));
    ch.prelu(torch::cat({zeros(w), ones(cout)}));
    auto [w2r, groups] = block_diagonal(w2, g2, cout, grouped);
    ch.conv(w2r, {}, s, 1, groups);
    ch.mark(from(ch, kBranch, *b.conv2, w2.size(0)) + from(ch, kReserved, *dconv, cout));
    ch.batchnorm(BNParams::cat({bn2, BNParams::identity(zeros(cout), ones(cout), bn2.eps)}));
    ch.prelu(torch::cat({zeros(w), ones(cout)}));
    ch.conv(torch::cat({scale_out(w3, bn3.scale()), dirac(cout, 1)}, 1), bn3.shift(), 1, 0);
    ch.mark(from(ch, kMerged, b, cout));
  } else {
    const auto sc = shortcut_of(b.downsample, cin);
    reserve_conv1_conv2();
    ch.conv(torch::cat({scale_out(w3, bn3.scale()), sc.weight}, 1), bn3.shift() + sc.bias, 1, 0);
    ch.mark(from(ch, kMerged, b, cout));
  }
  ch.batchnorm(BNParams::identity(st.out_mean, st.out_var, bn3.eps));
  ch.relu();
}

void resnet_to_chain(const ResNetImpl& m, DownsampleMode mode, bool grouped, Chain& ch) {
  ch.conv(to_work(m.conv1->weight), {}, stride_of(*m.conv1), padding_of(*m.conv1));
  ch.mark(from(ch, kLayer, *m.conv1, m.conv1->options.out_channels()));
  ch.batchnorm(BNParams::from(*m.bn1));
  ch.relu();
  if (m.maxpool) {
    const auto& o = m.maxpool->options;
    ch.maxpool(o.kernel_size()->at(0), o.stride()->at(0), o.padding()->at(0));
  }
  for (const auto& stage : m.stages)
    for (const auto& blk : *stage) {
      if (auto* b = blk.ptr()->as<BasicBlockImpl>())
        convert_basic(*b, mode, ch);
      else if (auto* bb = blk.ptr()->as<BottleneckImpl>())
        convert_bottleneck(*bb, mode, grouped, ch);
      else
        TORCH_CHECK(false, "unsupported block in ResNet: ", blk.ptr()->name());
    }
  ch.avgpool();
  ch.flatten();
  ch.linear(m.fc->weight, m.fc->bias);
  ch.mark(from(ch, kLayer, *m.fc, m.fc->weight.size(0)));
}

/// A RepVGG block re-parameterised (Ding et al.): W = a3 W3 + pad(a1 W1) [+ a0 I], bias s3 + s1 [+ s0],
/// then ReLU. With BN kept, the bias goes into a BN that only shifts (so every conv has its BN).
void repvgg_block_to_chain(const RepVGGBlockImpl& b, Chain& ch) {
  const auto bn3 = BNParams::from(*b.rbr_dense->bn), bn1 = BNParams::from(*b.rbr_1x1->bn);
  auto w = scale_out(weight_of(*b.rbr_dense->conv), bn3.scale()) +
           pad_kernel(scale_out(weight_of(*b.rbr_1x1->conv), bn1.scale()), 3);
  auto bias = bn3.shift() + bn1.shift();
  if (b.rbr_identity) {
    const auto bn0 = BNParams::from(*b.rbr_identity);
    w = w + scale_out(dirac(b.out_channels, 3), bn0.scale());
    bias = bias + bn0.shift();
  }
  ch.conv(w, {}, b.stride, 1);
  ch.mark(from(ch, kLayer, b, b.out_channels));
  const int64_t c = b.out_channels;
  const double eps = bn3.eps;
  ch.batchnorm(BNParams{torch::full({c}, std::sqrt(1.0 + eps), kF64), bias, torch::zeros({c}, kF64),
                        torch::ones({c}, kF64), eps});
  ch.relu();
}

void head_to_chain(const nn::Linear& fc, Chain& ch) {
  ch.avgpool();
  ch.flatten();
  ch.linear(fc->weight, fc->bias);
  ch.mark(from(ch, kLayer, *fc, fc->weight.size(0)));
}

void repvgg_to_chain(const RepVGGImpl& m, Chain& ch) {
  for (const auto& stage : m.stages)
    for (const auto& blk : *stage) repvgg_block_to_chain(*blk.ptr()->as<RepVGGBlockImpl>(), ch);
  head_to_chain(m.linear, ch);
}

void rmnet_to_chain(const RMNetImpl& m, DownsampleMode mode, Chain& ch) {
  for (const auto& blk : *m.layer0) repvgg_block_to_chain(*blk.ptr()->as<RepVGGBlockImpl>(), ch);
  for (const auto& stage : m.stages)
    for (const auto& blk : *stage) convert_bottleneck(*blk.ptr()->as<BottleneckImpl>(), mode, /*grouped=*/true, ch);
  head_to_chain(m.fc, ch);
}

/// A pre-activation block. Its input x can be negative and the block starts with BN-ReLU, so:
///   identity shortcut:   1x1 [I ; I] (duplicate x), BN [bn1 ; identity], PReLU [0 ; 1],
///                        [[W1, 0], [0, D]], BN [bn2 ; identity], PReLU [0 ; 1], [W2 | D];
///   projection shortcut: BN bn1, ReLU, [W1 ; P padded to 3x3] (stride s), BN [bn2 ; identity],
///                        PReLU [0 ; 1], [W2 | D]   (P acts on the pre-activated input).
/// No BN after the merge conv: the next block's BN1 (or the final BN) follows it directly.
void convert_preact(const PreActBlockImpl& b, Chain& ch) {
  const int64_t cin = b.conv1->options.in_channels(), planes = b.conv1->options.out_channels(), s = b.stride;
  const auto st = block_stats(b, cin, planes);
  const auto bn1 = BNParams::from(*b.bn1), bn2 = BNParams::from(*b.bn2);
  const auto w1 = weight_of(*b.conv1), w2 = weight_of(*b.conv2);
  const auto pass = [](int64_t zero, int64_t one) {
    return torch::cat({torch::zeros({zero}, kF64), torch::ones({one}, kF64)});
  };
  if (b.shortcut) {
    ch.batchnorm(bn1);
    ch.relu();
    ch.conv(torch::cat({w1, pad_kernel(to_work(b.shortcut->weight), 3)}, 0), {}, s, 1);
    ch.mark(from(ch, kBranch, *b.conv1, planes) + from(ch, kReserved, *b.shortcut, planes));
    ch.batchnorm(BNParams::cat({bn2, BNParams::identity(torch::zeros({planes}, kF64), torch::ones({planes}, kF64), bn2.eps)}));
    ch.prelu(pass(planes, planes));
    ch.conv(torch::cat({w2, dirac(planes, 3)}, 1), {}, 1, 1);
    ch.mark(from(ch, kMerged, b, planes));
    return;
  }
  ch.conv(torch::cat({dirac(cin, 1), dirac(cin, 1)}, 0), {}, 1, 0);
  ch.mark(from(ch, kBranch, *b.bn1, cin) + from(ch, kReserved, b, cin));
  ch.batchnorm(BNParams::cat({bn1, BNParams::identity(st.in_mean, st.in_var, bn1.eps)}));
  ch.prelu(pass(cin, cin));
  ch.conv(block_diagonal(w1, 1, cin, false).first, {}, s, 1);
  ch.mark(from(ch, kBranch, *b.conv1, planes) + from(ch, kReserved, b, cin));
  ch.batchnorm(BNParams::cat({bn2, BNParams::identity(st.in_mean, st.in_var, bn2.eps)}));
  ch.prelu(pass(planes, cin));
  ch.conv(torch::cat({w2, dirac(cin, 3)}, 1), {}, 1, 1);
  ch.mark(from(ch, kMerged, b, planes));
}

void preact_to_chain(const PreActResNetImpl& m, Chain& ch) {
  ch.conv(to_work(m.conv1->weight), {}, stride_of(*m.conv1), padding_of(*m.conv1));
  ch.mark(from(ch, kLayer, *m.conv1, m.conv1->options.out_channels()));
  for (const auto& stage : m.stages)
    for (const auto& blk : *stage) convert_preact(*blk.ptr()->as<PreActBlockImpl>(), ch);
  ch.batchnorm(BNParams::from(*m.bn));
  ch.relu();
  head_to_chain(m.fc, ch);
}

/// The activation of a MobileNetV2 layer on `n` channels followed by `reserve` channels that
/// must pass unchanged: ReLU6 -> clamp [0, 6] / (-inf, inf); ReLU -> PReLU slope 0 / 1.
void mobilenet_act(bool relu6, int64_t n, int64_t reserve, Chain& ch) {
  const double inf = std::numeric_limits<double>::infinity();
  if (relu6) {
    ch.clamp(torch::cat({torch::zeros({n}, kF64), torch::full({reserve}, -inf, kF64)}),
             torch::cat({torch::full({n}, 6.0, kF64), torch::full({reserve}, inf, kF64)}));
  } else if (reserve == 0) {
    ch.relu();
  } else {
    ch.prelu(torch::cat({torch::zeros({n}, kF64), torch::ones({reserve}, kF64)}));
  }
}

void conv_bn_act_to_chain(const ConvBNActImpl& seq, bool relu6, Chain& ch) {
  const auto& conv = *seq.conv;
  ch.conv(to_work(conv.weight), {}, stride_of(conv), padding_of(conv), groups_of(conv));
  ch.mark(from(ch, kLayer, conv, conv.options.out_channels()));
  ch.batchnorm(BNParams::from(*seq.bn));
  mobilenet_act(relu6, conv.options.out_channels(), 0, ch);
}

void convert_inverted_residual(const InvertedResidualImpl& b, bool grouped, Chain& ch) {
  const bool r6 = b.relu6;
  const auto bnp = BNParams::from(*b.project_bn);
  if (!b.use_res_connect) {  // no residual: the layers as they are
    if (b.expand_conv) {
      ch.conv(weight_of(*b.expand_conv), {}, 1, 0);
      ch.mark(from(ch, kBranch, *b.expand_conv, b.hidden));
      ch.batchnorm(BNParams::from(*b.expand_bn));
      mobilenet_act(r6, b.hidden, 0, ch);
    }
    ch.conv(weight_of(*b.dw_conv), {}, b.stride, padding_of(*b.dw_conv), groups_of(*b.dw_conv));
    ch.mark(from(ch, kBranch, *b.dw_conv, b.hidden));
    ch.batchnorm(BNParams::from(*b.dw_bn));
    mobilenet_act(r6, b.hidden, 0, ch);
    ch.conv(weight_of(*b.project_conv), {}, 1, 0);
    ch.mark(from(ch, kLayer, *b.project_conv, b.project_conv->options.out_channels()));
    ch.batchnorm(bnp);
    return;
  }
  TORCH_CHECK(b.expand_conv, "an inverted residual block without expansion cannot reserve its input");
  const int64_t cin = b.in_channels, h = b.hidden;
  const auto st = block_stats(b, cin, b.out_width);
  const auto bne = BNParams::from(*b.expand_bn), bnd = BNParams::from(*b.dw_bn);
  // Dirac rows/columns on the first cin channels of wider ("free") tensors.
  const auto reserve_in = torch::cat({dirac(cin, 1), torch::zeros({cin, b.in_width - cin, 1, 1}, work_options())}, 1);
  const auto merge_out = torch::cat({dirac(cin, 1), torch::zeros({b.out_width - cin, cin, 1, 1}, work_options())}, 0);
  ch.conv(torch::cat({weight_of(*b.expand_conv), reserve_in}, 0), {}, 1, 0);
  ch.mark(from(ch, kBranch, *b.expand_conv, h) + from(ch, kReserved, b, cin));
  ch.batchnorm(BNParams::cat({bne, BNParams::identity(st.in_mean, st.in_var, bne.eps)}));
  mobilenet_act(r6, h, cin, ch);
  auto [wd, groups] = block_diagonal(weight_of(*b.dw_conv), groups_of(*b.dw_conv), cin, grouped);
  ch.conv(wd, {}, 1, 1, groups);
  ch.mark(from(ch, kBranch, *b.dw_conv, h) + from(ch, kReserved, b, cin));
  ch.batchnorm(BNParams::cat({bnd, BNParams::identity(st.in_mean, st.in_var, bnd.eps)}));
  mobilenet_act(r6, h, cin, ch);
  ch.conv(torch::cat({scale_out(weight_of(*b.project_conv), bnp.scale()), merge_out}, 1), bnp.shift(), 1, 0);
  ch.mark(from(ch, kMerged, b, b.out_width));
  ch.batchnorm(BNParams::identity(st.out_mean, st.out_var, bnp.eps));
}

void mobilenet_to_chain(const MobileNetV2Impl& m, bool grouped, Chain& ch) {
  const bool relu6 = m.options().relu6();
  for (const auto& f : *m.features) {
    if (auto* b = f.ptr()->as<InvertedResidualImpl>())
      convert_inverted_residual(*b, grouped, ch);
    else if (auto* seq = dynamic_cast<ConvBNActImpl*>(f.ptr().get()))
      conv_bn_act_to_chain(*seq, relu6, ch);
    else
      TORCH_CHECK(false, "unsupported MobileNetV2 feature layer: ", f.ptr()->name());
  }
  ch.avgpool();
  ch.flatten();
  auto fc = child<nn::LinearImpl>(m.classifier, 1);
  ch.linear(fc->weight, fc->bias);
  ch.mark(from(ch, kLayer, *fc, fc->weight.size(0)));
}

void mobilenet_v1_to_chain(const MobileNetV1Impl& m, Chain& ch) {
  for (const auto& f : *m.features) conv_bn_act_to_chain(*dynamic_cast<ConvBNActImpl*>(f.ptr().get()), m.options().relu6(), ch);
  head_to_chain(m.classifier, ch);
}


}  // namespace

PointwiseFusion pointwise_fusion_from_string(const std::string& s) {
  if (s == "never") return PointwiseFusion::Never;
  if (s == "always") return PointwiseFusion::Always;
  if (s == "auto") return PointwiseFusion::Auto;
  TORCH_CHECK(false, "unknown pointwise fusion policy '", s, "' (expected never, always or auto)");
}

std::string to_string(PointwiseFusion f) {
  switch (f) {
    case PointwiseFusion::Never:
      return "never";
    case PointwiseFusion::Always:
      return "always";
    case PointwiseFusion::Auto:
      return "auto";
  }
  return "?";
}

namespace {

/// Pass 1 on a chain; a plain model is read as it is.
Chain reserve_merge_chain(const ModelImpl& model, DownsampleMode downsample, bool grouped_reserve) {
  Chain ch;
  ch.name_modules(model);
  detail::WorkDtypeGuard work(detail::dtype_device(model).first);
  if (auto* r = dynamic_cast<const ResNetImpl*>(&model))
    resnet_to_chain(*r, downsample, grouped_reserve, ch);
  else if (auto* mb = dynamic_cast<const MobileNetV2Impl*>(&model))
    mobilenet_to_chain(*mb, grouped_reserve, ch);
  else if (auto* rm = dynamic_cast<const RMNetImpl*>(&model))
    rmnet_to_chain(*rm, downsample, ch);
  else if (auto* rv = dynamic_cast<const RepVGGImpl*>(&model))
    repvgg_to_chain(*rv, ch);
  else if (auto* pa = dynamic_cast<const PreActResNetImpl*>(&model))
    preact_to_chain(*pa, ch);
  else if (auto* v1 = dynamic_cast<const MobileNetV1Impl*>(&model))
    mobilenet_v1_to_chain(*v1, ch);
  else if (auto* p = dynamic_cast<const PlainNetImpl*>(&model))
    ch = Chain::from(*p);
  else
    TORCH_CHECK(false, "cannot convert a model of family '", model.family(), "'");
  return ch;
}

PlainNet build_from(const ModelImpl& model, const Chain& ch, DownsampleMode downsample) {
  auto [dtype, device] = detail::dtype_device(model);
  ModelOptions opts = model.options();
  opts.arch("plain");
  auto net = ch.build(opts, dtype, device);
  net->metadata() = model.metadata();
  if (model.family() != "plain") {
    net->metadata()["source_arch"] = model.options().arch();
    net->metadata()["downsample"] = downsample == DownsampleMode::Type1 ? "1" : "2";
  }
  return net;
}

}  // namespace

PlainNet reserve_merge(const ModelImpl& model, DownsampleMode downsample, bool grouped_reserve) {
  return build_from(model, reserve_merge_chain(model, downsample, grouped_reserve), downsample);
}

ConversionResult convert(const ModelImpl& model, const ConvertOptions& options) {
  ConversionResult result;
  auto clock = std::chrono::steady_clock::now();
  auto lap = [&](std::string name) {
    const auto now = std::chrono::steady_clock::now();
    result.pass_seconds.emplace_back(std::move(name), std::chrono::duration<double>(now - clock).count());
    clock = now;
  };
  const bool from_residual = model.family() != "plain";
  detail::WorkDtypeGuard work(detail::dtype_device(model).first);
  auto ch = reserve_merge_chain(model, options.downsample(), options.grouped_reserve());
  lap(from_residual ? "reserve_merge" : "read");
  if (!options.keep_bn()) {
    ch = detail::fold_batchnorm(ch);
    lap("fold_batchnorm");
    ch = detail::simplify_activations(ch);
    lap("simplify_activations");
    if (options.fuse_pointwise() != PointwiseFusion::Never) {
      ch = detail::fuse_pointwise(ch, options.fuse_pointwise());
      lap("fuse_pointwise(" + to_string(options.fuse_pointwise()) + ")");
    }
  }
  std::string passes;
  for (const auto& [name, secs] : result.pass_seconds)
    if (name != "read") passes += (passes.empty() ? "" : ",") + name;
  auto net = build_from(model, ch, options.downsample());
  lap("build");
  net->metadata()["passes"] = passes;
  net->metadata()["bn"] = options.keep_bn() ? "kept" : "fused";
  if (options.verify()) {
    auto vo = options.verify_options();
    if (vo.input_size() == 0) vo.input_size(default_input_size(model));
    result.report = verify_equivalence(const_cast<ModelImpl&>(model), *net, vo);
    net->metadata()["verify_input_size"] = std::to_string(vo.input_size());
    net->metadata()["verified_max_rel_error"] = fmt::format("{:.3e}", result.report.max_rel_error);
    lap("verify");
  }
  if (options.cost_input_size() >= 0) {
    const int64_t size = options.cost_input_size() > 0   ? options.cost_input_size()
                         : options.verify_options().input_size() > 0 ? options.verify_options().input_size()
                                                                     : default_input_size(model);
    const int64_t channels = model.options().in_channels();
    result.cost_input_size = size;
    result.cost_before = profile_model(const_cast<ModelImpl&>(model), channels, size);
    result.cost_after = profile_model(*net, channels, size);
    auto& md = net->metadata();
    md["cost.input_size"] = std::to_string(size);
    md["cost.flops_before"] = std::to_string(result.cost_before.flops);
    md["cost.flops_after"] = std::to_string(result.cost_after.flops);
    md["cost.params_before"] = std::to_string(result.cost_before.params);
    md["cost.params_after"] = std::to_string(result.cost_after.params);
    lap("cost");
  }
  result.plain = net;
  return result;
}

}  // namespace rmnet
