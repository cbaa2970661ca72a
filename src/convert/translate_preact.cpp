// Pre-activation ResNet to a plain chain. A block's input x can be negative (it is a sum) and the
// block starts with BN-ReLU, so the reserve goes through PReLU slope 1 and an explicit 1x1 Dirac
// duplication:
//   identity shortcut:   1x1 [I ; I] (duplicate x), BN [bn1 ; identity], PReLU [0 ; 1],
//                        [[W1, 0], [0, D]], BN [bn2 ; identity], PReLU [0 ; 1], [W2 | D];
//   projection shortcut: BN bn1, ReLU, [W1 ; P padded to 3x3] (stride s), BN [bn2 ; identity],
//                        PReLU [0 ; 1], [W2 | D]   (P acts on the pre-activated input).
// No BN after the merge conv: the next block's BN1 (or the final BN) follows it directly.
#include "rm_parts.h"
#include "rmnet/models/preact.h"
#include "translate.h"

namespace rmnet::detail {

namespace {

void preact_block_to_chain(const PreActBlockImpl& b, Chain& ch) {
  const int64_t cin = b.conv1->options.in_channels(), planes = b.conv1->options.out_channels(), s = b.stride;
  const auto st = block_stats(b, cin, planes);
  const auto bn1 = BNParams::from(*b.bn1), bn2 = BNParams::from(*b.bn2);
  const auto w1 = weight_of(*b.conv1), w2 = weight_of(*b.conv2);
  const auto pass = [](int64_t zero, int64_t one) {
    return torch::cat({torch::zeros({zero}, f64_options()), torch::ones({one}, f64_options())});
  };
  if (b.shortcut) {
    ch.batchnorm(bn1);
    ch.relu();
    ch.conv(torch::cat({w1, pad_kernel(to_work(b.shortcut->weight), 3)}, 0), {}, s, 1);
    ch.mark(from(ch, kBranch, *b.conv1, planes) + from(ch, kReserved, *b.shortcut, planes));
    ch.batchnorm(BNParams::cat(
        {bn2, BNParams::identity(torch::zeros({planes}, f64_options()), torch::ones({planes}, f64_options()), bn2.eps)}));
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

}  // namespace

void preact_to_chain(const ModelImpl& model, const TranslateOptions&, Chain& ch) {
  const auto& m = model_as<PreActResNetImpl>(model, "PreActResNet");
  ch.conv(to_work(m.conv1->weight), {}, stride_of(*m.conv1), padding_of(*m.conv1));
  ch.mark(from(ch, kLayer, *m.conv1, m.conv1->options.out_channels()));
  for (const auto& stage : m.stages)
    for (const auto& blk : *stage) preact_block_to_chain(*blk.ptr()->as<PreActBlockImpl>(), ch);
  ch.batchnorm(BNParams::from(*m.bn));
  ch.relu();
  head_to_chain(*m.fc, ch);
}

}  // namespace rmnet::detail
