// The plain network: construction, chain checks, forward, summary.
#include <gtest/gtest.h>

#include <limits>

#include "helpers.h"
#include "rmnet/convert/rm.h"
#include "rmnet/models/plain.h"
#include "rmnet/models/profile.h"

using namespace rmnet;

namespace {
std::vector<LayerSpec> tiny_chain() {
  return {LayerSpec::conv(3, 8, 3, 1, 1, 1, false), LayerSpec::batchnorm(8), LayerSpec::relu(),
          LayerSpec::conv(8, 8, 3, 2, 1, 8),        LayerSpec::prelu(8),     LayerSpec::clamp(8),
          LayerSpec::maxpool(2, 2, 0),              LayerSpec::avgpool(),    LayerSpec::flatten(),
          LayerSpec::linear(8, 4)};
}
}  // namespace

TEST(PlainNet, StateDictKeysAreSequentials) {
  PlainNet net(tiny_chain(), ModelOptions("plain").num_classes(4));
  std::vector<std::string> keys;
  for (const auto& p : net->named_parameters()) keys.push_back(p.key());
  EXPECT_EQ(keys, (std::vector<std::string>{"0.weight", "1.weight", "1.bias", "3.weight", "3.bias", "4.weight",
                                            "9.weight", "9.bias"}));
  auto y = net->forward(torch::randn({2, 3, 16, 16}));
  EXPECT_EQ(y.sizes(), (std::vector<int64_t>{2, 4}));
}

TEST(PlainNet, ForwardMatchesTheLayersByHand) {
  torch::manual_seed(3);
  PlainNet net(tiny_chain(), ModelOptions("plain").num_classes(4));
  net->eval();
  randomize_batchnorm(*net, 5);
  auto clamp = net->layer_as<ChannelClampImpl>(5);
  clamp->min.copy_(torch::linspace(-1, 0, 8));
  clamp->max.copy_(torch::linspace(0.5, 3, 8));
  auto x = torch::randn({2, 3, 16, 16}) * 3;
  torch::NoGradGuard g;
  auto c0 = net->layer_as<torch::nn::Conv2dImpl>(0);
  auto bn = net->layer_as<torch::nn::BatchNorm2dImpl>(1);
  auto c3 = net->layer_as<torch::nn::Conv2dImpl>(3);
  auto pr = net->layer_as<torch::nn::PReLUImpl>(4);
  auto fc = net->layer_as<torch::nn::LinearImpl>(9);
  auto y = torch::conv2d(x, c0->weight, {}, 1, 1);
  y = (y - bn->running_mean.view({1, -1, 1, 1})) / torch::sqrt(bn->running_var.view({1, -1, 1, 1}) + 1e-5) *
          bn->weight.view({1, -1, 1, 1}) +
      bn->bias.view({1, -1, 1, 1});
  y = torch::relu(y);
  y = torch::conv2d(y, c3->weight, c3->bias, 2, 1, 1, 8);
  y = torch::prelu(y, pr->weight);
  y = torch::maximum(torch::minimum(y, clamp->max.view({1, -1, 1, 1})), clamp->min.view({1, -1, 1, 1}));
  y = torch::max_pool2d(y, 2, 2).mean({2, 3});
  y = torch::linear(y, fc->weight, fc->bias);
  EXPECT_TRUE(torch::allclose(net->forward(x), y, 1e-5, 1e-5));
}

TEST(PlainNet, ChannelClampWithInfinitiesIsIdentity) {
  ChannelClamp c(4);
  c->min.fill_(-std::numeric_limits<float>::infinity());
  auto x = torch::randn({2, 4, 3, 3}) * 100;
  EXPECT_TRUE(torch::equal(c->forward(x), x));
  c->min.fill_(0);
  c->max.fill_(6);
  EXPECT_TRUE(torch::equal(c->forward(x), torch::clamp(x, 0, 6)));
}

TEST(PlainNet, RejectsInconsistentChains) {
  std::vector<LayerSpec> bad = {LayerSpec::conv(3, 8, 3, 1, 1), LayerSpec::batchnorm(16)};
  try {
    PlainNet net(bad, ModelOptions("plain"));
    FAIL() << "expected an error";
  } catch (const c10::Error& e) {
    EXPECT_NE(std::string(e.what()).find("plain layer 1"), std::string::npos) << e.what();
  }
  EXPECT_THROW(PlainNet(std::vector<LayerSpec>{LayerSpec::conv(4, 8, 3, 1, 1)}, ModelOptions("plain")), c10::Error);
  EXPECT_THROW(PlainNet(std::vector<LayerSpec>{LayerSpec::conv(3, 8, 3, 1, 1, 2)}, ModelOptions("plain")),
               c10::Error);
}

TEST(PlainNet, SummaryMacsEqualTheProfile) {
  // The summary's analytic MACs (what `rmnet info` prints per layer of a plain network) equal the
  // profiler's count of the conv/linear calls of a real forward: dense, grouped/depthwise, SE.
  for (const std::string arch : {"resnet8", "mobilenet_v2_cifar", "se_resnet20"}) {
    auto m = test::random_model(arch);
    auto plain = rmnet::convert(*m).plain;
    const auto cost = profile_model(*plain, 3, 32);
    ASSERT_GT(cost.flops, 0);
    const auto s = plain->summary({1, 3, 32, 32});
    EXPECT_NE(s.find("MACs per image: " + std::to_string(cost.flops) + "\n"), std::string::npos) << arch << "\n" << s;
  }
}

TEST(PlainNet, SummaryShowsShapesAndTotal) {
  PlainNet net(tiny_chain(), ModelOptions("plain").num_classes(4));
  auto s = net->summary({1, 3, 16, 16});
  EXPECT_NE(s.find("[1, 8, 8, 8]"), std::string::npos) << s;
  EXPECT_NE(s.find("[1, 4]"), std::string::npos) << s;
  EXPECT_NE(s.find("total parameters: " + std::to_string(count_parameters(*net))), std::string::npos) << s;
}
