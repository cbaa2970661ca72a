// The residual models: torchvision-compatible structure, parameter counts and state_dict keys.
#include <gtest/gtest.h>

#include "helpers.h"
#include "rmnet/models/mobilenet.h"
#include "rmnet/models/resnet.h"

using namespace rmnet;

namespace {
bool has_key(const torch::nn::Module& m, const std::string& key, std::vector<int64_t> shape) {
  for (const auto& p : m.named_parameters(true))
    if (p.key() == key) return p.value().sizes().vec() == shape;
  for (const auto& b : m.named_buffers(true))
    if (b.key() == key) return b.value().sizes().vec() == shape;
  return false;
}
}  // namespace

TEST(Models, ParameterCountsMatchTorchvision) {
  // Counts of torchvision.models.<name>() with 1000 classes.
  const std::vector<std::pair<std::string, int64_t>> expected = {
      {"resnet18", 11689512}, {"resnet34", 21797672},  {"resnet50", 25557032},
      {"resnet101", 44549160}, {"resnet152", 60192808}, {"mobilenet_v2", 3504872}};
  for (const auto& [arch, n] : expected) {
    auto m = create_model(ModelOptions(arch));
    EXPECT_EQ(count_parameters(*m), n) << arch;
  }
}

TEST(Models, StateDictKeysAreTorchvisions) {
  auto r = create_model(ModelOptions("resnet50"));
  EXPECT_TRUE(has_key(*r, "conv1.weight", {64, 3, 7, 7}));
  EXPECT_TRUE(has_key(*r, "layer1.0.downsample.0.weight", {256, 64, 1, 1}));
  EXPECT_TRUE(has_key(*r, "layer2.0.downsample.1.running_var", {512}));
  EXPECT_TRUE(has_key(*r, "layer4.2.bn3.weight", {2048}));
  EXPECT_TRUE(has_key(*r, "fc.weight", {1000, 2048}));
  EXPECT_FALSE(has_key(*r, "layer1.0.rm_in_mean", {64}));  // tracking off by default
  auto m = create_model(ModelOptions("mobilenet_v2"));
  EXPECT_TRUE(has_key(*m, "features.0.0.weight", {32, 3, 3, 3}));
  EXPECT_TRUE(has_key(*m, "features.1.conv.0.0.weight", {32, 1, 3, 3}));  // t = 1: dw first
  EXPECT_TRUE(has_key(*m, "features.1.conv.1.weight", {16, 32, 1, 1}));
  EXPECT_TRUE(has_key(*m, "features.3.conv.1.0.weight", {144, 1, 3, 3}));
  EXPECT_TRUE(has_key(*m, "features.3.conv.3.running_mean", {24}));
  EXPECT_TRUE(has_key(*m, "features.18.1.weight", {1280}));
  EXPECT_TRUE(has_key(*m, "classifier.1.weight", {1000, 1280}));
}

TEST(Models, ForwardShapesAndInChannels) {
  for (const std::string arch : {"resnet20", "resnet18_cifar", "mobilenet_v2_cifar"}) {
    auto m = create_model(ModelOptions(arch).num_classes(7).in_channels(1));
    m->eval();
    auto y = m->forward(torch::randn({2, 1, 28, 28}));
    EXPECT_EQ(y.sizes(), (std::vector<int64_t>{2, 7})) << arch;
  }
  auto r = create_model(ModelOptions("resnet18").num_classes(5));
  r->eval();
  EXPECT_EQ(r->forward(torch::randn({1, 3, 64, 64})).sizes(), (std::vector<int64_t>{1, 5}));
}

TEST(Models, CifarResNetDepths) {
  // resnet20/32/44/56/110: 6n+2 layers, widths 16/32/64.
  for (auto [arch, n] : std::vector<std::pair<std::string, int64_t>>{{"resnet20", 3}, {"resnet56", 9}, {"resnet110", 18}}) {
    auto cfg = resnet_config(arch);
    EXPECT_EQ(cfg.layers, (std::vector<int64_t>{n, n, n}));
    EXPECT_EQ(cfg.widths, (std::vector<int64_t>{16, 32, 64}));
  }
}

TEST(Models, MobileNetV2WidthMultiplierAndRelu) {
  auto m = create_model(ModelOptions("mobilenet_v2").width_mult(0.5).relu6(false));
  EXPECT_TRUE(has_key(*m, "features.0.0.weight", {16, 3, 3, 3}));
  EXPECT_TRUE(has_key(*m, "features.18.0.weight", {1280, 160, 1, 1}));
  bool any_relu6 = false;
  for (auto& mod : m->modules()) any_relu6 |= mod->as<torch::nn::ReLU6Impl>() != nullptr;
  EXPECT_FALSE(any_relu6);
}

TEST(Models, RegistryRejectsBadInput) {
  EXPECT_THROW(
      {
        try {
          create_model(ModelOptions("resnet9000"));
        } catch (const c10::Error& e) {
          EXPECT_NE(std::string(e.what()).find("unknown architecture 'resnet9000'"), std::string::npos);
          throw;
        }
      },
      c10::Error);
  EXPECT_THROW(create_model(ModelOptions("resnet18").num_classes(0)), c10::Error);
  EXPECT_THROW(create_model(ModelOptions("resnet18").in_channels(0)), c10::Error);
  EXPECT_THROW(create_model(ModelOptions("mobilenet_v2").width_mult(-1)), c10::Error);
  auto names = model_names();
  EXPECT_GE(names.size(), 14u);
  EXPECT_TRUE(is_model_name("resnet152"));
}

TEST(Models, BlocksTrackInputStatistics) {
  torch::manual_seed(0);
  auto m = std::dynamic_pointer_cast<ResNetImpl>(create_model(ModelOptions("resnet20").track_block_stats(true)));
  ASSERT_TRUE(m);
  m->train();
  auto x = torch::randn({8, 3, 16, 16}) * 2 + 3;
  for (int i = 0; i < 60; ++i) m->forward(x);
  auto* b0 = m->stages[0]->ptr<BasicBlockImpl>(0).get();
  ASSERT_TRUE(b0->stats().defined());
  // the first block's input is relu(bn1(conv1(x))): non-negative, so its mean is positive
  EXPECT_GT(b0->stats().in_mean.min().item<double>(), 0.0);
  auto stem = torch::relu(m->bn1->forward(m->conv1->forward(x)));
  m->eval();
  auto expected = torch::relu(m->bn1->forward(m->conv1->forward(x))).mean({0, 2, 3});
  (void)stem;
  EXPECT_TRUE(torch::allclose(b0->stats().in_mean, expected, 0.05, 0.05));
}
