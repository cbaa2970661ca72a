// RepVGG to a plain chain: no residual crosses blocks, so every block is re-parameterised on its
// own (Ding et al.): W = a3 W3 + pad(a1 W1) [+ a0 I], bias s3 + s1 [+ s0], then ReLU.
#include <cmath>

#include "rm_parts.h"
#include "translate.h"

namespace rmnet::detail {

/// With BN kept, the summed bias goes into a BN that only shifts (so every conv has its BN).
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
  ch.batchnorm(BNParams{torch::full({c}, std::sqrt(1.0 + eps), f64_options()), bias,
                        torch::zeros({c}, f64_options()), torch::ones({c}, f64_options()), eps});
  ch.relu();
}

void repvgg_to_chain(const ModelImpl& model, const TranslateOptions&, Chain& ch) {
  const auto& m = model_as<RepVGGImpl>(model, "RepVGG");
  for (const auto& stage : m.stages)
    for (const auto& blk : *stage) repvgg_block_to_chain(*blk.ptr()->as<RepVGGBlockImpl>(), ch);
  head_to_chain(*m.linear, ch);
}

}  // namespace rmnet::detail
