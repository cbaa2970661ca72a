// MobileNetV2 to a plain chain. A block's input can be negative, so the reserved channels pass
// the activations through a PReLU of slope 1 (ReLU) or a clamp of (-inf, +inf) (ReLU6, exact
// where a PReLU would drop the clip at 6). Reserve convs (expand, depthwise) are block-diagonal:
// the depthwise conv gains Dirac groups. A "free" block (MobileNetV2Config::free) has wider
// pw-linear outputs with the residual on the first c channels.
#include <limits>

#include "rm_parts.h"
#include "translate.h"

namespace rmnet::detail {

namespace {

/// The activation of a MobileNetV2 layer on `n` channels followed by `reserve` channels that
/// must pass unchanged: ReLU6 -> clamp [0, 6] / (-inf, inf); ReLU -> PReLU slope 0 / 1.
void mobilenet_act(bool relu6, int64_t n, int64_t reserve, Chain& ch) {
  const double inf = std::numeric_limits<double>::infinity();
  const auto o = f64_options();
  if (relu6) {
    ch.clamp(torch::cat({torch::zeros({n}, o), torch::full({reserve}, -inf, o)}),
             torch::cat({torch::full({n}, 6.0, o), torch::full({reserve}, inf, o)}));
  } else if (reserve == 0) {
    ch.relu();
  } else {
    ch.prelu(torch::cat({torch::zeros({n}, o), torch::ones({reserve}, o)}));
  }
}

void inverted_residual_to_chain(const InvertedResidualImpl& b, bool grouped, Chain& ch) {
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

}  // namespace

void conv_bn_act_to_chain(const ConvBNActImpl& seq, bool relu6, Chain& ch) {
  const auto& conv = *seq.conv;
  ch.conv(to_work(conv.weight), {}, stride_of(conv), padding_of(conv), groups_of(conv));
  ch.mark(from(ch, kLayer, conv, conv.options.out_channels()));
  ch.batchnorm(BNParams::from(*seq.bn));
  mobilenet_act(relu6, conv.options.out_channels(), 0, ch);
}

void mobilenet_v2_to_chain(const ModelImpl& model, const TranslateOptions& options, Chain& ch) {
  const auto& m = model_as<MobileNetV2Impl>(model, "MobileNetV2");
  const bool relu6 = m.options().relu6();
  for (const auto& f : *m.features) {
    if (auto* b = f.ptr()->as<InvertedResidualImpl>())
      inverted_residual_to_chain(*b, options.grouped_reserve, ch);
    else if (auto* seq = dynamic_cast<ConvBNActImpl*>(f.ptr().get()))
      conv_bn_act_to_chain(*seq, relu6, ch);
    else
      TORCH_CHECK(false, "unsupported MobileNetV2 feature layer: ", f.ptr()->name());
  }
  head_to_chain(*child<torch::nn::LinearImpl>(m.classifier, 1), ch);
}

}  // namespace rmnet::detail
