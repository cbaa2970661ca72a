#include "rm_parts.h"

namespace rmnet::detail {

namespace nn = torch::nn;

torch::Tensor dirac(int64_t channels, int64_t kernel) {
  auto w = torch::zeros({channels, channels, kernel, kernel}, work_options());
  auto idx = torch::arange(channels);
  w.index_put_({idx, idx, kernel / 2, kernel / 2}, 1.0);
  return w;
}

torch::Tensor pad_kernel(const torch::Tensor& w, int64_t kernel) {
  if (w.size(2) == kernel) return w;
  TORCH_CHECK(w.size(2) == 1 && w.size(3) == 1, "can only pad 1x1 kernels (got ", w.sizes(), ")");
  auto out = torch::zeros({w.size(0), w.size(1), kernel, kernel}, w.options());
  out.index_put_({torch::indexing::Slice(), torch::indexing::Slice(), kernel / 2, kernel / 2},
                 w.index({torch::indexing::Slice(), torch::indexing::Slice(), 0, 0}));
  return out;
}

torch::Tensor scale_out(const torch::Tensor& w, const torch::Tensor& a) {
  return w * a.to(w.scalar_type()).view({-1, 1, 1, 1});
}

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

Stats block_stats(const ResidualBlockBase& block, int64_t in, int64_t out) {
  const auto& s = block.stats();
  if (s.defined()) return {to_f64(s.in_mean), to_f64(s.in_var), to_f64(s.out_mean), to_f64(s.out_var)};
  const auto o = f64_options();
  return {torch::zeros({in}, o), torch::ones({in}, o), torch::zeros({out}, o), torch::ones({out}, o)};
}

BNParams reserved_bn(const ResidualBlockBase& b, const Stats& st, double eps) {
  auto p = BNParams::identity(st.in_mean, st.in_var, eps);
  if (b.shortcut_scale.defined()) {
    // relu(s * x) with x >= 0 (a ResNet block's input) is relu(s) * x: a scale s <= 0 reserves an
    // exact zero (gamma 0, beta 0), which pruning removes first, instead of a channel that is zero
    // only because its input is nonnegative (as scaled_projection does for a projection)
    const auto s = torch::relu(to_f64(b.shortcut_scale));
    p.weight = p.weight * s;
    p.bias = p.bias * s;
  }
  return p;
}

torch::Tensor scaled_projection(const ResidualBlockBase& b, const torch::Tensor& w) {
  if (!b.shortcut_scale.defined()) return w;
  return w * torch::relu(to_f64(b.shortcut_scale)).to(w.scalar_type()).view({1, -1, 1, 1});
}

Shortcut shortcut_of(const nn::Sequential& downsample, int64_t channels) {
  if (!downsample) return {dirac(channels, 1), torch::zeros({channels}, f64_options())};
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

void head_to_chain(const nn::LinearImpl& fc, Chain& ch) {
  ch.avgpool();
  ch.flatten();
  ch.linear(fc.weight, fc.bias);
  ch.mark(from(ch, kLayer, fc, fc.weight.size(0)));
}

}  // namespace rmnet::detail
