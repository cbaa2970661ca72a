// Fusion passes on plain networks.
#include <gtest/gtest.h>

#include <limits>

#include "helpers.h"
#include "rmnet/convert/fuse.h"

using namespace rmnet;

namespace {
PlainNet random_chain(std::vector<LayerSpec> specs, torch::ScalarType dtype = torch::kDouble) {
  torch::manual_seed(7);
  PlainNet net(std::move(specs), ModelOptions("plain").num_classes(3));
  randomize_batchnorm(*net, 11);
  {
    torch::NoGradGuard g;
    for (auto& p : net->parameters()) p.normal_(0, 0.5);
  }
  net->to(dtype);
  net->eval();
  return net;
}
int count(const PlainNetImpl& n, LayerKind k) {
  int c = 0;
  for (const auto& s : n.specs()) c += s.kind == k;
  return c;
}
}  // namespace

TEST(Fuse, FoldBatchNormIsExact) {
  auto net = random_chain({LayerSpec::conv(3, 6, 3, 1, 1, 1, false), LayerSpec::batchnorm(6), LayerSpec::relu(),
                           LayerSpec::conv(6, 6, 3, 2, 1, 3, true), LayerSpec::batchnorm(6), LayerSpec::avgpool(),
                           LayerSpec::flatten(), LayerSpec::linear(6, 3)});
  auto fused = fold_batchnorm(*net);
  EXPECT_EQ(count(*fused, LayerKind::BatchNorm), 0);
  EXPECT_EQ(count(*fused, LayerKind::Conv), 2);
  EXPECT_TRUE(fused->spec(0).bias);
  auto x = torch::randn({2, 3, 8, 8}, torch::kDouble) * 10;
  EXPECT_LE(test::rel_diff(*net, *fused, x), 1e-12);
  // the input is untouched
  EXPECT_EQ(count(*net, LayerKind::BatchNorm), 2);
}

// An identity BN times s (gamma = s sqrt(var + eps), beta = s mean: a reserved channel's, as
// conversion writes it with --keep-bn) stored in float32 folds to bias 0 exactly, not to a residue of
// the parameters' rounding; a bias that does not cancel within that rounding is kept, and in
// float64 the cancellation must be within float64's rounding.
TEST(Fuse, FoldBatchNormCancelsWithinTheStoredRounding) {
  for (const auto dtype : {torch::kFloat, torch::kDouble}) {
    SCOPED_TRACE(torch::toString(dtype));
    auto net = random_chain({LayerSpec::conv(3, 8, 3, 1, 1, 1, false), LayerSpec::batchnorm(8), LayerSpec::relu()}, dtype);
    auto bn = net->layer_as<torch::nn::BatchNorm2dImpl>(1);
    torch::manual_seed(5);
    const auto mean = torch::randn({8}, torch::kDouble) * 40, var = torch::rand({8}, torch::kDouble) * 9 + 0.1;
    const auto s = torch::rand({8}, torch::kDouble) * 2 + 0.05;
    auto beta = s * mean;
    // channels 6 and 7 off by a relative 1e-5 and 1e-12: a real bias in float32 / float64 alike, and
    // one below float32's rounding but above float64's
    beta[6] = beta[6].item<double>() * (1 + 1e-5);
    beta[7] = beta[7].item<double>() * (1 + 1e-12);
    {
      torch::NoGradGuard g;
      bn->running_mean.copy_(mean);
      bn->running_var.copy_(var);
      bn->weight.copy_(s * torch::sqrt(var + bn->options.eps()));
      bn->bias.copy_(beta);
    }
    const auto b = fold_batchnorm(*net)->layer_as<torch::nn::Conv2dImpl>(0)->bias.to(torch::kDouble);
    for (int64_t c = 0; c < 6; ++c) EXPECT_EQ(b[c].item<double>(), 0.0) << "channel " << c;
    EXPECT_NEAR(b[6].item<double>(), beta[6].item<double>() * 1e-5 / (1 + 1e-5), std::abs(beta[6].item<double>()) * 1e-6);
    if (dtype == torch::kFloat) {
      EXPECT_EQ(b[7].item<double>(), 0.0);
    } else {
      EXPECT_NE(b[7].item<double>(), 0.0);
    }
  }
}

TEST(Fuse, PointwiseFusionFollowsTheCostPolicy) {
  // 16 -> 2 -> 16: fused costs 256 MACs/pixel vs 64 for the pair: auto keeps the pair.
  auto bottleneck = random_chain({LayerSpec::conv(3, 16, 1, 1, 0), LayerSpec::conv(16, 2, 1, 1, 0),
                                  LayerSpec::conv(2, 16, 1, 1, 0), LayerSpec::relu(), LayerSpec::avgpool(),
                                  LayerSpec::flatten(), LayerSpec::linear(16, 3)});
  auto x = torch::randn({2, 3, 5, 5}, torch::kDouble);
  auto a = fuse_pointwise(*bottleneck, PointwiseFusion::Auto);
  auto always = fuse_pointwise(*bottleneck, PointwiseFusion::Always);
  auto never = fuse_pointwise(*bottleneck, PointwiseFusion::Never);
  EXPECT_EQ(count(*never, LayerKind::Conv), 3);
  EXPECT_EQ(count(*always, LayerKind::Conv), 1);
  // auto: 3->16 then 16->2 fuses (3*2 <= 3*16 + 16*2); the result 3->2 then 2->16: 48 > 6 + 32, kept
  EXPECT_EQ(count(*a, LayerKind::Conv), 2);
  for (auto* n : {&a, &always, &never}) EXPECT_LE(test::rel_diff(*bottleneck, **n, x), 1e-12);
}

TEST(Fuse, PointwiseFusionSkipsNonPointwiseNeighbours) {
  auto net = random_chain({LayerSpec::conv(3, 4, 3, 1, 1), LayerSpec::conv(4, 4, 1, 1, 0), LayerSpec::relu(),
                           LayerSpec::conv(4, 4, 1, 1, 0), LayerSpec::avgpool(), LayerSpec::flatten(),
                           LayerSpec::linear(4, 3)});
  auto f = fuse_pointwise(*net, PointwiseFusion::Always);
  EXPECT_EQ(count(*f, LayerKind::Conv), 3);
}

TEST(Fuse, SimplifyActivations) {
  auto net = random_chain({LayerSpec::conv(3, 4, 1, 1, 0), LayerSpec::clamp(4), LayerSpec::prelu(4),
                           LayerSpec::conv(4, 4, 1, 1, 0), LayerSpec::prelu(4), LayerSpec::clamp(4),
                           LayerSpec::avgpool(), LayerSpec::flatten(), LayerSpec::linear(4, 3)});
  const double inf = std::numeric_limits<double>::infinity();
  {
    torch::NoGradGuard g;
    net->layer_as<ChannelClampImpl>(1)->min.fill_(0);  // min 0, max inf: ReLU
    net->layer_as<ChannelClampImpl>(1)->max.fill_(inf);
    net->layer_as<torch::nn::PReLUImpl>(2)->weight.fill_(1);  // identity
    net->layer_as<torch::nn::PReLUImpl>(4)->weight.fill_(0);  // ReLU
    net->layer_as<ChannelClampImpl>(5)->min.fill_(0);         // ReLU6: stays
    net->layer_as<ChannelClampImpl>(5)->max.fill_(6);
  }
  auto s = simplify_activations(*net);
  EXPECT_EQ(count(*s, LayerKind::ReLU), 2);
  EXPECT_EQ(count(*s, LayerKind::PReLU), 0);
  EXPECT_EQ(count(*s, LayerKind::Clamp), 1);
  auto x = torch::randn({2, 3, 4, 4}, torch::kDouble) * 10;
  EXPECT_LE(test::rel_diff(*net, *s, x), 1e-14);
}
