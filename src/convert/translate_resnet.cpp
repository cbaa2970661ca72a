// ResNet (BasicBlock, Bottleneck, optional SE and shortcut scale) to a plain chain.
//
//   reserve: the first conv gets C_in extra Dirac filters (Eq. 1); its BN gets an identity BN on
//            them (w = sqrt(var + eps), b = mean, with the block's tracked input statistics);
//            ReLU keeps them (x >= 0 after a ResNet block).
//   merge:   the last conv takes the reserved channels as extra inputs with Dirac weights (Eq. 3):
//            [a_last * W_last | a_sc * P] with bias s_last + s_sc, where P is the shortcut (the
//            identity, or the downsample projection padded to the kernel size), followed by an
//            identity BN with the block's output statistics (so every conv of the BN-kept form
//            has a BN, for fine-tuning and slimming).
// Downsample blocks: type 2 (stride-2 Dirac reserve, projection in the merge conv) or type 1
// (projection in the first conv, PReLU [0 | 1]); paper Figure 2.
#include "rm_parts.h"
#include "translate.h"

namespace rmnet::detail {

namespace nn = torch::nn;

namespace {

torch::Tensor zeros(int64_t n) { return torch::zeros({n}, f64_options()); }
torch::Tensor ones(int64_t n) { return torch::ones({n}, f64_options()); }

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

void basic_to_chain(const BasicBlockImpl& b, DownsampleMode mode, Chain& ch) {
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
    ch.prelu(torch::cat({zeros(cmid), ones(cout)}));
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

}  // namespace

void bottleneck_to_chain(const BottleneckImpl& b, DownsampleMode mode, bool grouped, Chain& ch) {
  const int64_t cin = b.conv1->options.in_channels(), w = b.conv1->options.out_channels();
  const int64_t cout = b.conv3->options.out_channels(), s = stride_of(*b.conv2);
  const auto st = block_stats(b, cin, cout);
  const auto bn1 = BNParams::from(*b.bn1), bn2 = BNParams::from(*b.bn2), bn3 = BNParams::from(*b.bn3);
  const auto w1 = weight_of(*b.conv1), w2 = weight_of(*b.conv2), w3 = weight_of(*b.conv3);
  const int64_t g2 = groups_of(*b.conv2);
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

void resnet_to_chain(const ModelImpl& model, const TranslateOptions& options, Chain& ch) {
  const auto& m = model_as<ResNetImpl>(model, "ResNet");
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
        basic_to_chain(*b, options.downsample, ch);
      else if (auto* bb = blk.ptr()->as<BottleneckImpl>())
        bottleneck_to_chain(*bb, options.downsample, options.grouped_reserve, ch);
      else
        TORCH_CHECK(false, "unsupported block in ResNet: ", blk.ptr()->name());
    }
  head_to_chain(*m.fc, ch);
}

}  // namespace rmnet::detail
