// The RM conversion: exactness for every architecture, both downsample types, BN kept and fused,
// float32 and float64, randomised BN statistics, large inputs; the paper's parameter formulas.
#include <gtest/gtest.h>

#include <limits>

#include "helpers.h"
#include "rmnet/convert/fuse.h"
#include "rmnet/models/plain.h"
#include "rmnet/models/resnet.h"

using namespace rmnet;
using test::random_model;

namespace {

struct Case {
  std::string arch;
  torch::ScalarType dtype;
  bool keep_bn;
  DownsampleMode downsample;
  bool relu6 = true;
};

std::string name_of(const Case& c) {
  return c.arch + (c.dtype == torch::kDouble ? "_f64" : "_f32") + (c.keep_bn ? "_bn" : "_fused") +
         (c.downsample == DownsampleMode::Type1 ? "_ds1" : "_ds2") + (c.relu6 ? "" : "_relu");
}
std::string case_name(const ::testing::TestParamInfo<Case>& info) { return name_of(info.param); }
void PrintTo(const Case& c, std::ostream* os) { *os << name_of(c); }

std::vector<Case> all_cases() {
  std::vector<Case> cases;
  const std::vector<std::string> archs = {"resnet18",       "resnet34",       "resnet50", "resnet101",
                                          "resnet152",      "resnet18_cifar", "resnet34_cifar", "resnet20",
                                          "resnet32",       "resnet44",       "resnet56", "resnet110",
                                          "mobilenet_v2",   "mobilenet_v2_cifar"};
  for (const auto& a : archs)
    for (auto dt : {torch::kFloat, torch::kDouble})
      for (bool bn : {true, false}) cases.push_back({a, dt, bn, DownsampleMode::Type2});
  for (const std::string a : {"resnet18", "resnet50", "resnet20", "resnet18_cifar"})
    for (auto dt : {torch::kFloat, torch::kDouble})
      for (bool bn : {true, false}) cases.push_back({a, dt, bn, DownsampleMode::Type1});
  for (auto dt : {torch::kFloat, torch::kDouble})
    for (bool bn : {true, false}) cases.push_back({"mobilenet_v2_cifar", dt, bn, DownsampleMode::Type2, false});
  return cases;
}

class ConvertExact : public ::testing::TestWithParam<Case> {};

}  // namespace

TEST_P(ConvertExact, PlainEqualsResidual) {
  const auto& c = GetParam();
  auto model = random_model(c.arch, c.dtype, /*track_stats=*/true, 10, c.relu6);
  ConvertOptions o;
  o.keep_bn(c.keep_bn).downsample(c.downsample).verify_options(VerifyOptions().input_size(32).scale(10.0));
  auto result = convert(*model, o);
  ASSERT_TRUE(result.plain);
  EXPECT_EQ(result.plain->family(), "plain");
  // the check runs in float64 for every source (a float32 one is converted as its float64 copy);
  // the float32 result is then compared with the float32 source, for the record
  const double tol64 = c.dtype == torch::kDouble ? test::tolerance_for(torch::kDouble) : 1e-6;
  EXPECT_EQ(result.report.tolerance, tol64);
  EXPECT_EQ(result.report.dtype, "float64");
  EXPECT_TRUE(result.report.passed) << result.report.to_string();
  EXPECT_LE(result.report.max_rel_error, tol64);
  if (c.dtype == torch::kFloat) {
    EXPECT_EQ(result.report.model_dtype, "float32");
    EXPECT_LE(result.report.model_dtype_rel_error, test::tolerance_for(torch::kFloat)) << result.report.to_string();
    EXPECT_GE(result.report.source_dtype_rel_error, 0.0);
  } else {
    EXPECT_LT(result.report.model_dtype_rel_error, 0.0);  // not set: the check was already in float64
  }

  // An independent check on other inputs (another seed, batch 3, larger magnitude).
  auto x = torch::randn({3, 3, 32, 32}, torch::TensorOptions().dtype(c.dtype)) * 50;
  EXPECT_LE(test::rel_diff(*model, *result.plain, x), test::tolerance_for(c.dtype));

  // A plain chain: BN kept <=> there are BatchNorm layers; the dtype is the source's.
  bool any_bn = false;
  for (const auto& s : result.plain->specs()) any_bn |= s.kind == LayerKind::BatchNorm;
  EXPECT_EQ(any_bn, c.keep_bn);
  EXPECT_EQ(result.plain->parameters().front().scalar_type(), c.dtype);
}

INSTANTIATE_TEST_SUITE_P(AllArchitectures, ConvertExact, ::testing::ValuesIn(all_cases()), case_name);

namespace {
std::vector<torch::Tensor> all_tensors(const torch::nn::Module& m) {
  std::vector<torch::Tensor> out;
  for (const auto& p : m.parameters()) out.push_back(p);
  for (const auto& b : m.buffers()) out.push_back(b);
  return out;
}
/// Indices of the conv layers of a plain network.
std::vector<size_t> conv_indices(const PlainNetImpl& net) {
  std::vector<size_t> idx;
  for (size_t i = 0; i < net.size(); ++i)
    if (net.spec(i).kind == LayerKind::Conv) idx.push_back(i);
  return idx;
}
}  // namespace

TEST(Convert, DoesNotMutateSource) {
  auto model = random_model("resnet20");
  model->train();
  std::vector<torch::Tensor> before;
  for (const auto& t : all_tensors(*model)) before.push_back(t.clone());
  auto result = convert(*model);
  EXPECT_TRUE(model->is_training());
  auto after = all_tensors(*model);
  ASSERT_EQ(after.size(), before.size());
  for (size_t i = 0; i < after.size(); ++i) EXPECT_TRUE(torch::equal(after[i], before[i]));
  EXPECT_TRUE(result.report.passed);
}

TEST(Convert, ChainHasNoResidual) {
  // resnet18 has 8 BasicBlocks: stem conv + 2 convs per block, one Linear; nothing else computes.
  auto r = convert(*random_model("resnet18"));
  EXPECT_EQ(conv_indices(*r.plain).size(), 17u);
  EXPECT_EQ(r.plain->spec(r.plain->size() - 1).kind, LayerKind::Linear);
  // Running the layers one at a time, each on the previous one's output, gives the same output:
  // the network is a chain.
  auto x = torch::randn({2, 3, 32, 32});
  torch::NoGradGuard g;
  auto y = x;
  for (size_t i = 0; i < r.plain->size(); ++i) y = r.plain->forward_range(y, i, i + 1);
  EXPECT_TRUE(torch::equal(y, r.plain->forward(x)));
}

TEST(Convert, PaperParameterFormulasForDownsampleBlocks) {
  // resnet20's layer2.0 is a downsample BasicBlock with C = 16 -> 2C = 32.
  const int64_t C = 16;
  for (auto mode : {DownsampleMode::Type1, DownsampleMode::Type2}) {
    auto model = random_model("resnet20");
    auto net = reserve_merge(*model, mode);
    // the first stride-2 conv and the next conv form the converted block
    size_t first = 0;
    for (size_t i = 0; i < net->size(); ++i)
      if (net->spec(i).kind == LayerKind::Conv && net->spec(i).stride == 2) {
        first = i;
        break;
      }
    ASSERT_GT(first, 0u);
    size_t second = first + 1;
    while (net->spec(second).kind != LayerKind::Conv) ++second;
    int64_t n = net->layer_as<torch::nn::Conv2dImpl>(first)->weight.numel() +
                net->layer_as<torch::nn::Conv2dImpl>(second)->weight.numel();
    for (size_t i = first; i < second; ++i)
      if (net->spec(i).kind == LayerKind::PReLU) n += net->layer_as<torch::nn::PReLUImpl>(i)->weight.numel();
    if (mode == DownsampleMode::Type1)
      EXPECT_EQ(n, 108 * C * C + 4 * C);
    else
      EXPECT_EQ(n, 81 * C * C);
  }
}

TEST(Convert, BottleneckReserveIsGrouped) {
  // resnet50 layer1.1: in = 256, mid = 64. The reserve 3x3 conv is block-diagonal: a grouped conv
  // with 1 + 256/64 = 5 groups of 64, i.e. 5x the original conv, not (320/64)^2 = 25x.
  auto model = random_model("resnet50");
  auto grouped = reserve_merge(*model, DownsampleMode::Type2, true);
  auto dense = reserve_merge(*model, DownsampleMode::Type2, false);
  auto gi = conv_indices(*grouped), di = conv_indices(*dense);
  // conv order: stem, then per block conv1', conv2', conv3'. layer1.1's conv2' is index 1 + 3 + 2.
  const auto& gs = grouped->spec(gi[5]);
  EXPECT_EQ(gs.groups, 5);
  EXPECT_EQ(gs.in_channels, 320);
  EXPECT_EQ(grouped->layer_as<torch::nn::Conv2dImpl>(gi[5])->weight.numel(), 5 * 64 * 64 * 9);
  EXPECT_EQ(dense->spec(di[5]).groups, 1);
  EXPECT_EQ(dense->layer_as<torch::nn::Conv2dImpl>(di[5])->weight.numel(), 320 * 320 * 9);
  auto x = torch::randn({2, 3, 32, 32}) * 10;
  EXPECT_LE(test::rel_diff(*model, *grouped, x), 1e-4);
  EXPECT_LE(test::rel_diff(*model, *dense, x), 1e-4);
}

TEST(Convert, IdentityBatchNormCarriesBlockStatistics) {
  // The reserved channels' BN is the identity yet carries the block's tracked input statistics.
  auto model = std::dynamic_pointer_cast<ResNetImpl>(random_model("resnet20"));
  auto net = reserve_merge(*model);
  auto* block = model->stages[0]->ptr<BasicBlockImpl>(0).get();
  auto bn = net->layer_as<torch::nn::BatchNorm2dImpl>(4);  // stem conv,bn,relu; block conv1', bn
  using torch::indexing::Slice;
  EXPECT_TRUE(torch::allclose(bn->running_mean.index({Slice(16, 32)}), block->stats().in_mean));
  EXPECT_TRUE(torch::allclose(bn->running_var.index({Slice(16, 32)}), block->stats().in_var));
  EXPECT_TRUE(torch::allclose(bn->weight.index({Slice(16, 32)}), torch::sqrt(block->stats().in_var + 1e-5)));
  EXPECT_TRUE(torch::allclose(bn->bias.index({Slice(16, 32)}), block->stats().in_mean));
}

TEST(Convert, ReLU6StaysExactWhenInputsExceedSix) {
  for (auto dtype : {torch::kFloat, torch::kDouble}) {
    auto model = random_model("mobilenet_v2_cifar", dtype);
    {  // shift and widen every BN's output so that many ReLU6 inputs land above 6
      torch::NoGradGuard g;
      for (auto& m : model->modules())
        if (auto* bn = m->as<torch::nn::BatchNorm2dImpl>()) {
          bn->weight.mul_(3.0);
          bn->bias.add_(3.0);
        }
    }
    auto net = reserve_merge(*model);
    auto x = torch::randn({4, 3, 32, 32}, torch::TensorOptions().dtype(dtype)) * 10;
    // Walk the chain; at every clamp count the original (clipped) channels' inputs above 6.
    torch::NoGradGuard g;
    net->eval();
    auto y = x;
    int64_t above = 0, total = 0, reserved_negative = 0;
    for (size_t i = 0; i < net->size(); ++i) {
      if (net->spec(i).kind == LayerKind::Clamp) {
        auto clamp = net->layer_as<ChannelClampImpl>(i);
        auto clipped = clamp->max.eq(6.0).view({1, -1, 1, 1}).expand_as(y);
        above += (y.gt(6.0) & clipped).sum().item<int64_t>();
        total += clipped.sum().item<int64_t>();
        reserved_negative += (y.lt(0.0) & clipped.logical_not()).sum().item<int64_t>();
      }
      y = net->forward_range(y, i, i + 1);
    }
    EXPECT_GT(static_cast<double>(above) / total, 0.05) << "the test must exercise the clip at 6";
    EXPECT_GT(reserved_negative, 0) << "reserved channels must carry negative values through";
    EXPECT_LE(test::rel_diff(*model, *net, x), test::tolerance_for(dtype));

    // Control: dropping the clip at 6 (what replacing ReLU6 by PReLU does) breaks equivalence.
    auto broken = fold_batchnorm(*net);
    for (size_t i = 0; i < broken->size(); ++i)
      if (broken->spec(i).kind == LayerKind::Clamp)
        broken->layer_as<ChannelClampImpl>(i)->max.fill_(std::numeric_limits<double>::infinity());
    EXPECT_GT(test::rel_diff(*model, *broken, x), 1e-3);
  }
}

TEST(Convert, MobileNetV2BecomesMobileNetV1) {
  // With the pointwise fusion forced (paper Fig. 3), the chain is MobileNetV1-shaped: a 3x3 stem,
  // then 17 (depthwise 3x3, pointwise 1x1) pairs; no two 1x1 convs in a row.
  auto model = random_model("mobilenet_v2_cifar", torch::kDouble);
  auto r = convert(*model, ConvertOptions().fuse_pointwise(PointwiseFusion::Always));
  EXPECT_TRUE(r.report.passed) << r.report.to_string();
  auto convs = conv_indices(*r.plain);
  ASSERT_EQ(convs.size(), 1u + 2u * 17u);
  EXPECT_EQ(r.plain->spec(convs[0]).kernel, 3);
  for (size_t k = 1; k < convs.size(); k += 2) {
    const auto& dw = r.plain->spec(convs[k]);
    const auto& pw = r.plain->spec(convs[k + 1]);
    EXPECT_EQ(dw.kernel, 3);
    EXPECT_EQ(dw.groups, dw.in_channels);
    EXPECT_EQ(pw.kernel, 1);
    EXPECT_EQ(pw.groups, 1);
  }
  // "auto" does not fuse torchvision's expansion-6 blocks (that would cost more), and is exact too.
  auto a = convert(*model, ConvertOptions().fuse_pointwise(PointwiseFusion::Auto));
  EXPECT_TRUE(a.report.passed);
  EXPECT_GT(conv_indices(*a.plain).size(), convs.size());
}

// A torchvision-like MobileNetV2 whose BN statistics make activations large (running variances
// 0.02-0.2, gammas 1-3, betas 0-3): float32 cannot resolve it (the float32 model differs from its
// own float64 copy by percents), so a float32 check would refuse an exact conversion. The check
// runs in float64 and passes; the float32 figures are reported beside each other.
TEST(Convert, IllConditionedFloat32ModelIsCheckedInFloat64) {
  torch::manual_seed(3);
  auto model = create_model(ModelOptions("mobilenet_v2").num_classes(10));
  {
    torch::NoGradGuard g;
    for (auto& m : model->modules(false))
      if (auto* bn = dynamic_cast<torch::nn::BatchNorm2dImpl*>(m.get())) {
        bn->running_var.uniform_(0.02, 0.2);
        bn->running_mean.uniform_(-0.5, 0.5);
        bn->weight.uniform_(1.0, 3.0);
        bn->bias.uniform_(0.0, 3.0);
      }
  }
  model->eval();
  auto result = convert(*model, ConvertOptions().verify_options(VerifyOptions().input_size(64)));
  const auto& r = result.report;
  EXPECT_TRUE(r.passed) << r.to_string();
  EXPECT_EQ(r.dtype, "float64");
  EXPECT_LE(r.max_rel_error, 1e-6) << r.to_string();
  EXPECT_EQ(result.plain->parameters().front().scalar_type(), torch::kFloat);
  // float32 cannot tell: the source differs from itself in float64 by more than the float32
  // tolerance, and the float32 result's deviation is of that order, not of the conversion's
  EXPECT_GT(r.source_dtype_rel_error, test::tolerance_for(torch::kFloat)) << r.to_string();
  EXPECT_LE(r.model_dtype_rel_error, 10 * r.source_dtype_rel_error + 1e-4) << r.to_string();
  EXPECT_NE(r.to_string().find("source vs its float64 self"), std::string::npos);
}
