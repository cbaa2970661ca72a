// The deploy runtimes (deploy/runtime.h): the onednn chain executor equals eager on every family's
// converted form, across batch sizes, resolutions and thread counts; its plan fuses what oneDNN can
// express exactly; bad input is refused with the expected shape in the message.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdlib>
#include <fstream>
#include <set>
#include <limits>

#include <ATen/Parallel.h>
#include <c10/core/CPUAllocator.h>
#include <torch/torch.h>

#include "deploy/buffer_cache.h"
#include "deploy/executors.h"
#include "helpers.h"
#include "rmnet/bench/bench.h"
#include "rmnet/convert/rm.h"
#include "rmnet/deploy/runtime.h"
#include "rmnet/deploy/shortcuts.h"
#include "rmnet/models/profile.h"

using namespace rmnet;
using rmnet::test::error_of;
using rmnet::test::random_model;
using rmnet::test::rel_diff;

namespace {

struct DeployCase {
  std::string arch;
  bool keep_bn = false;
  bool type1 = false;          // downsample type 1 (PReLU [0 | 1])
  bool fuse_always = false;    // pointwise fusion always
  bool relu6 = true;
  std::string label;
};

std::vector<DeployCase> deploy_cases() {
  return {
      {"resnet8", false, false, false, true, "resnet8"},
      {"resnet8", true, false, false, true, "resnet8_bn_kept"},
      {"resnet8", false, true, false, true, "resnet8_downsample_type1"},
      {"resnet50", false, false, false, true, "resnet50_bottleneck"},
      {"mobilenet_v2_cifar", false, false, false, true, "mobilenet_v2_relu6"},
      {"mobilenet_v2_cifar", true, false, false, true, "mobilenet_v2_relu6_bn_kept"},
      {"mobilenet_v2_cifar", false, false, true, true, "mobilenet_v2_relu6_fuse_always"},
      {"mobilenet_v2_cifar", false, false, false, false, "mobilenet_v2_relu"},
      {"rmnet26x3_32", false, false, false, true, "rmnet26x3_32"},
      {"repvgg_a0", false, false, false, true, "repvgg_a0"},
      {"preact_resnet20", false, false, false, true, "preact_resnet20"},
      {"se_resnet20", false, false, false, true, "se_resnet20"},
      {"se_resnet20", true, false, false, true, "se_resnet20_bn_kept"},
      {"mobilenet_v1_cifar", false, false, false, true, "mobilenet_v1"},
  };
}

class OneDnnExact : public ::testing::TestWithParam<DeployCase> {};

PlainNet converted(const DeployCase& c) {
  auto m = random_model(c.arch, torch::kFloat, true, 10, c.relu6);
  ConvertOptions o;
  o.keep_bn(c.keep_bn).verify_options(VerifyOptions().input_size(32).batch(2).scale(10.0));
  if (c.type1) o.downsample(DownsampleMode::Type1);
  if (c.fuse_always) o.fuse_pointwise(PointwiseFusion::Always);
  auto r = convert(*m, o);
  EXPECT_TRUE(r.report.passed) << r.report.to_string();
  return r.plain;
}

/// Makes convs `a` and `b` of `net` an RM block by hand: a's rows [c, 2c) copy its input channels
/// [0, c) (weight `one` at the centre tap, nothing else, no bias) and b's columns [c, 2c) add them,
/// with weight 1 at the centre tap, to its outputs [0, c).
void make_dirac_block(PlainNetImpl& net, size_t a, size_t b, int64_t c, double one) {
  torch::NoGradGuard g;
  auto ca = net.layer_as<torch::nn::Conv2dImpl>(a), cb = net.layer_as<torch::nn::Conv2dImpl>(b);
  const int64_t centre = ca->weight.size(2) / 2;
  ca->weight.slice(0, c).zero_();
  ca->bias.slice(0, c).zero_();
  cb->weight.slice(1, c).zero_();
  for (int64_t i = 0; i < c; ++i) {
    ca->weight[c + i][i][centre][centre] = one;
    cb->weight[i][c + i][centre][centre] = 1.0;
  }
}

/// Restores the intra-op thread count on scope exit.
struct ThreadsGuard {
  int saved = at::get_num_threads();
  ~ThreadsGuard() { at::set_num_threads(saved); }
};

}  // namespace

TEST_P(OneDnnExact, EqualsEagerAcrossShapesAndThreads) {
  const auto& c = GetParam();
  auto plain = converted(c);
  auto d = deploy(*plain, DeployOptions().runtime(Runtime::OneDNN));
  ASSERT_EQ(d->runtime(), Runtime::OneDNN);
  ThreadsGuard tg;
  torch::manual_seed(7);
  // large inputs: activations clip (ReLU6) and get large
  for (int threads : {1, 2}) {
    at::set_num_threads(threads);
    SCOPED_TRACE("threads " + std::to_string(threads));
    for (const auto& shape : std::vector<std::vector<int64_t>>{{4, 3, 32, 32}, {2, 3, 32, 32}, {3, 3, 40, 36}}) {
      auto x = 20 * torch::randn(shape);
      EXPECT_LE(rel_diff(*plain, *d, x), 1e-4) << "input " << x.sizes();
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Families, OneDnnExact, ::testing::ValuesIn(deploy_cases()),
                         [](const ::testing::TestParamInfo<DeployCase>& i) { return i.param.label; });

// The cudagraph runtime on every family, where a GPU is present: equal to eager on the device
// (TF32 off, so float32 means float32), a new batch size captures anew, a replay's output is the
// caller's own (the next replay does not overwrite it), and float16 stays close.
TEST_P(OneDnnExact, CudaGraphEqualsEagerOnTheGpu) {
  std::string why;
  if (!cuda_graph_available(DeployOptions().device(torch::kCUDA), &why)) GTEST_SKIP() << why;
  const auto& c = GetParam();
  auto plain = converted(c);
  struct Tf32Off {
    bool saved = at::globalContext().allowTF32CuDNN();
    Tf32Off() { at::globalContext().setAllowTF32CuDNN(false); }
    ~Tf32Off() { at::globalContext().setAllowTF32CuDNN(saved); }
  } tf32_off;
  auto d = deploy(*plain, DeployOptions().device(torch::kCUDA).runtime(Runtime::CudaGraph));
  ASSERT_EQ(d->runtime(), Runtime::CudaGraph);
  EXPECT_NE(d->graph().find("CUDA graph"), std::string::npos);
  plain->to(torch::kCUDA);
  {  // recycled device memory full of NaN: a fused conv that read its uninitialised output would show it
    auto junk = torch::full({int64_t{64} << 20}, std::numeric_limits<float>::quiet_NaN(), torch::kCUDA);
  }
  torch::manual_seed(7);
  for (const auto& shape : std::vector<std::vector<int64_t>>{{4, 3, 32, 32}, {2, 3, 32, 32}, {4, 3, 32, 32}}) {
    auto x = (20 * torch::randn(shape)).to(torch::kCUDA);
    EXPECT_LE(rel_diff(*plain, *d, x), 1e-4) << "input " << x.sizes();
  }
  auto x1 = torch::randn({4, 3, 32, 32}).to(torch::kCUDA), x2 = 5 * torch::randn({4, 3, 32, 32}).to(torch::kCUDA);
  torch::NoGradGuard g;
  const auto y1 = d->forward(x1);
  const auto y1_copy = y1.clone();
  d->forward(x2);
  EXPECT_TRUE(torch::equal(y1, y1_copy));
  EXPECT_TRUE(torch::isfinite(y1).all().item<bool>());
  auto h = deploy(*plain, DeployOptions().device(torch::kCUDA).dtype(torch::kHalf).runtime(Runtime::CudaGraph));
  EXPECT_LE(rel_diff(*plain, *h, x1), 2e-2);
  plain->to(torch::kCPU);
}

// Every layer kind, standalone where the converter would have fused it: BN not after a conv,
// ReLU/uniform clamp/mixed clamp/PReLU alone, max-pool, SE, pooling without flatten.
TEST(OneDnn, EveryLayerKindStandaloneMatchesEager) {
  const double kInf = std::numeric_limits<double>::infinity();
  torch::manual_seed(11);
  std::vector<LayerSpec> layers = {
      LayerSpec::batchnorm(3),          LayerSpec::conv(3, 8, 3, 1, 1),    LayerSpec::clamp(8),  // mixed clamp
      LayerSpec::conv(8, 8, 3, 2, 1, 2), LayerSpec::prelu(8),              LayerSpec::relu(),
      LayerSpec::maxpool(3, 2, 1),       LayerSpec::conv(8, 12, 1, 1, 0, 1, false), LayerSpec::batchnorm(12),
      LayerSpec::clamp(12),              LayerSpec::se(12, 8, 4),          LayerSpec::batchnorm(12),
      LayerSpec::clamp(12),              LayerSpec::conv(12, 12, 3, 1, 1, 12), LayerSpec::prelu(12),
      LayerSpec::avgpool(),              LayerSpec::flatten(),             LayerSpec::linear(12, 5)};
  PlainNet net(layers, ModelOptions("plain").in_channels(3).num_classes(5));
  randomize_batchnorm(*net, 5);
  {
    torch::NoGradGuard g;
    auto c2 = net->layer_as<ChannelClampImpl>(2);
    c2->min.copy_(torch::tensor({0., -1e30, 0., -kInf, 0., -2., 0., -kInf}));
    c2->max.copy_(torch::tensor({6., 1e30, kInf, kInf, 6., 3., 0.5, kInf}));
    net->layer_as<torch::nn::PReLUImpl>(4)->weight.copy_(torch::randn({8}));     // general slopes
    net->layer_as<ChannelClampImpl>(9)->min.fill_(-1.5);                         // uniform clamp
    net->layer_as<ChannelClampImpl>(9)->max.fill_(2.5);
    net->layer_as<ChannelClampImpl>(12)->min.fill_(0.0);                         // ReLU in disguise
    net->layer_as<torch::nn::PReLUImpl>(14)->weight.copy_(torch::tensor({0., 1., 0., 1., 1., 0., 0., 1., 1., 1., 0., 0.}));
  }
  net->eval();
  auto d = deploy(*net, DeployOptions().runtime(Runtime::OneDNN));
  const auto plan = d->graph();
  EXPECT_NE(plan.find("batchnorm 3 (in place)"), std::string::npos) << plan;
  EXPECT_NE(plan.find("per-channel clamp"), std::string::npos) << plan;
  EXPECT_NE(plan.find("prelu 8"), std::string::npos) << plan;
  EXPECT_NE(plan.find("clamp[-1.5, 2.5]"), std::string::npos) << plan;  // BN folded, uniform clamp fused
  EXPECT_NE(plan.find("squeeze-excitation"), std::string::npos) << plan;
  for (int64_t n : {1, 3}) {
    auto x = 5 * torch::randn({n, 3, 17, 19});
    EXPECT_LE(rel_diff(*net, *d, x), 1e-5) << n;
  }
  // without the flatten: global pool as its own step, then the chain stops at a 4-d output
  PlainNet pooled(std::vector<LayerSpec>{LayerSpec::conv(3, 4, 3, 1, 1), LayerSpec::relu(), LayerSpec::avgpool()},
                  ModelOptions("plain").in_channels(3));
  pooled->eval();
  auto dp = deploy(*pooled, DeployOptions().runtime(Runtime::OneDNN));
  auto x = torch::randn({2, 3, 8, 8});
  torch::NoGradGuard g;
  EXPECT_TRUE(torch::allclose(dp->forward(x), pooled->forward(x), 1e-5, 1e-6));
}

// Convolutions on maps hardly larger than their kernel run as one GEMM with the conv's dense
// input-to-output matrix: equal to eager (and to the convolution path) with biases or none, ReLU,
// a uniform clamp (hardtanh post-op) and a mixed per-channel clamp after it, stride 2, 1x1 kernels,
// and a map that stays a convolution; the profile names the GEMM steps.
TEST(OneDnn, TinyMapsRunAsOneGemm) {
  const double kInf = std::numeric_limits<double>::infinity();
  torch::manual_seed(13);
  std::vector<LayerSpec> layers = {
      LayerSpec::conv(3, 16, 3, 1, 1),                  // 3x3 map: 81 > 18, stays a convolution
      LayerSpec::relu(),
      LayerSpec::conv(16, 24, 3, 2, 1),                 // 3x3 -> 2x2, stride 2: 9*4 = 36 > 18, convolution
      LayerSpec::batchnorm(24), LayerSpec::clamp(24),   // uniform clamp: hardtanh post-op
      LayerSpec::conv(24, 32, 3, 1, 1, 1, false),       // 2x2 -> 2x2, no bias: 16 <= 18, GEMM
      LayerSpec::clamp(32),                             // mixed per-channel clamp after it
      LayerSpec::conv(32, 40, 3, 2, 1),                 // 2x2 -> 1x1, stride 2: GEMM
      LayerSpec::relu(),
      LayerSpec::conv(40, 48, 1, 1, 0),                 // 1x1 kernel on a 1x1 map: GEMM
      LayerSpec::relu(),
      LayerSpec::conv(48, 8, 3, 1, 1),                  // 3x3 kernel on a 1x1 map: GEMM (centre tap only)
      LayerSpec::avgpool(), LayerSpec::flatten(), LayerSpec::linear(8, 5)};
  PlainNet net(layers, ModelOptions("plain").in_channels(3).num_classes(5));
  randomize_batchnorm(*net, 3);
  {
    torch::NoGradGuard g;
    net->layer_as<ChannelClampImpl>(4)->min.fill_(-1.0);
    net->layer_as<ChannelClampImpl>(4)->max.fill_(2.0);
    auto c6 = net->layer_as<ChannelClampImpl>(6);
    for (int64_t ch = 0; ch < 32; ++ch) {
      c6->min[ch] = ch % 2 ? -kInf : 0.0;
      c6->max[ch] = ch % 3 ? 6.0 : kInf;
    }
  }
  net->eval();
  auto gemm = deploy(*net, DeployOptions().runtime(Runtime::OneDNN));
  auto conv = deploy(*net, DeployOptions().runtime(Runtime::OneDNN).small_map_gemm(false));
  EXPECT_NE(gemm->graph().find("as one GEMM"), std::string::npos) << gemm->graph();
  for (int64_t n : {1, 4, 7}) {  // new batch sizes re-pack
    auto x = 10 * torch::randn({n, 3, 3, 3});
    EXPECT_LE(rel_diff(*net, *gemm, x), 1e-5) << n;
    EXPECT_LE(rel_diff(*net, *conv, x), 1e-5) << n;
  }
  std::vector<size_t> gemm_layers, conv_layers;
  for (const auto& s : gemm->profile(torch::randn({2, 3, 3, 3}), 0, 1))
    if (s.name.find("as one GEMM") != std::string::npos) gemm_layers.push_back(s.first_layer);
  EXPECT_EQ(gemm_layers, (std::vector<size_t>{5, 7, 9, 11}));
  for (const auto& s : conv->profile(torch::randn({2, 3, 3, 3}), 0, 1))
    EXPECT_EQ(s.name.find("GEMM"), std::string::npos) << s.name;
  // a larger input: the same network's convolutions see larger maps and stay convolutions
  auto big = torch::randn({2, 3, 12, 12});
  for (const auto& s : gemm->profile(big, 0, 1)) EXPECT_EQ(s.name.find("GEMM"), std::string::npos) << s.name;
  EXPECT_LE(rel_diff(*net, *gemm, big), 1e-5);
}

// The direct path (oneDNN's own API, where rmnet links libdnnl) against the path over LibTorch's
// registered operators: the same products on every kind of step (per-channel clamps fused as
// binary post-ops, tiny-map GEMMs, the Linear head), new shapes re-planned, and the plan says which
// ran. float32 to 1e-5 (the kernels' summation order may differ), bfloat16 to 2e-2.
TEST(OneDnn, DirectPathEqualsLibTorchOperators) {
  if (!onednn_direct_available()) GTEST_SKIP() << "this build has no direct oneDNN path";
  EXPECT_FALSE(onednn_direct_version().empty());
  torch::manual_seed(21);
  for (const auto& c : std::vector<DeployCase>{{"mobilenet_v2_cifar", false, false, false, true, "mv2"},
                                               {"resnet8", true, false, false, true, "r8"},
                                               {"se_resnet20", false, false, false, true, "se"}}) {
    SCOPED_TRACE(c.arch);
    auto plain = converted(c);
    auto direct = deploy(*plain, DeployOptions().runtime(Runtime::OneDNN));
    auto ops = deploy(*plain, DeployOptions().runtime(Runtime::OneDNN).onednn_direct(false));
    EXPECT_NE(direct->graph().find("oneDNN " + onednn_direct_version()), std::string::npos) << direct->graph();
    EXPECT_NE(ops->graph().find("fused oneDNN convolutions"), std::string::npos) << ops->graph();
    if (c.arch == "mobilenet_v2_cifar") {  // ReLU6 on the block's channels only: fused into the conv
      // (with the Dirac shortcuts no per-channel clamp is left: DiracShortcutsComputeTheSameFunction)
      auto every_channel = deploy(*plain, DeployOptions().runtime(Runtime::OneDNN).dirac_shortcuts(false));
      EXPECT_NE(every_channel->graph().find("as post-ops)"), std::string::npos) << every_channel->graph();
      EXPECT_LE(rel_diff(*plain, *every_channel, 20 * torch::randn({2, 3, 32, 32})), 1e-4);
    }
    torch::NoGradGuard g;
    // {1, 3, 8, 8}: 1x1 maps at the end, where oneDNN 2.6 makes a depthwise primitive it cannot run
    for (const auto& shape :
         std::vector<std::vector<int64_t>>{{1, 3, 32, 32}, {5, 3, 32, 32}, {2, 3, 20, 28}, {1, 3, 8, 8}}) {
      const auto x = 20 * torch::randn(shape);
      const auto a = direct->forward(x), b = ops->forward(x);
      EXPECT_LE((a - b).abs().max().item<double>() / b.abs().max().item<double>(), 1e-5) << x.sizes();
      EXPECT_LE(rel_diff(*plain, *direct, x), 1e-4) << x.sizes();
    }
    // bfloat16: the runtime takes the direct path only where libdnnl runs bf16 natively; the
    // executor itself is tested everywhere (emulated bf16 computes the same products)
    auto bf = rmnet::detail::make_dnnl_executor(*plain, DeployOptions().dtype(torch::kBFloat16));
    auto bf_ops = deploy(*plain, DeployOptions().runtime(Runtime::OneDNN).dtype(torch::kBFloat16).onednn_direct(false));
    for (const auto& shape : std::vector<std::vector<int64_t>>{{4, 3, 32, 32}, {1, 3, 8, 8}}) {  // 8x8: tiny maps
      const auto x = torch::randn(shape);
      const auto a = bf->run(x.to(torch::kBFloat16), nullptr).to(torch::kFloat), b = bf_ops->forward(x);
      const auto ref = plain->forward(x);
      EXPECT_LE((a - b).abs().max().item<double>() / b.abs().max().item<double>(), 3e-2) << x.sizes();
      EXPECT_LE((a - ref).abs().max().item<double>() / ref.abs().max().item<double>(), 5e-2) << x.sizes();
    }
    EXPECT_EQ(deploy(*plain, DeployOptions().runtime(Runtime::OneDNN).dtype(torch::kBFloat16))->graph().find("oneDNN 2") !=
                  std::string::npos,
              rmnet::detail::dnnl_native_bf16());
  }
}

// Big convs (>= kTimedConvMacs a call) are timed against LibTorch's operator when planned; whichever
// wins, the network computes what eager does, a per-channel clamp after it included, and the choice
// is kept: a plan evicted and made again gives the same bits.
TEST(OneDnn, DirectPathTimedBigConvsEqualEager) {
  if (!onednn_direct_available()) GTEST_SKIP() << "this build has no direct oneDNN path";
  const double kInf = std::numeric_limits<double>::infinity();
  torch::manual_seed(17);
  PlainNet net(std::vector<LayerSpec>{LayerSpec::conv(16, 64, 3, 1, 1), LayerSpec::clamp(64),  // 16*32*32*64*16*9 MACs
                                      LayerSpec::conv(64, 64, 3, 1, 1), LayerSpec::relu(), LayerSpec::avgpool(),
                                      LayerSpec::flatten(), LayerSpec::linear(64, 5)},
               ModelOptions("plain").in_channels(16).num_classes(5));
  {
    torch::NoGradGuard g;
    auto c = net->layer_as<ChannelClampImpl>(1);
    for (int64_t ch = 0; ch < 64; ++ch) {
      c->min[ch] = ch % 2 ? -kInf : 0.0;
      c->max[ch] = ch % 3 ? 6.0 : kInf;
    }
  }
  net->eval();
  auto d = deploy(*net, DeployOptions().runtime(Runtime::OneDNN).packed_shapes(1));
  const auto a = 5 * torch::randn({16, 16, 32, 32}), b = torch::randn({2, 16, 8, 8});
  EXPECT_LE(rel_diff(*net, *d, a), 1e-4);
  torch::NoGradGuard g;
  const auto first = d->forward(a);
  d->forward(b);  // evicts a's plan
  EXPECT_TRUE(torch::equal(d->forward(a), first));
}

// Dirac shortcuts (DeployOptions::dirac_shortcuts): on the RM ResNets the reserved channels of
// identity blocks are found by their weights, not computed, and added back as a sum post-op of the
// merge conv. The same function as eager in float64 (to float32 rounding) and as the same runtime
// without shortcuts, at large activations; the MACs saved are exactly the Dirac rows and columns;
// a ReLU on the copies' path is applied to a block input that may be negative; weights that are
// not exactly Dirac are left as convolutions.
TEST(OneDnn, DiracShortcutsComputeTheSameFunction) {
  if (!onednn_direct_available()) GTEST_SKIP() << "this build has no direct oneDNN path";
  EXPECT_TRUE(DeployOptions().dirac_shortcuts() || std::getenv("RMNET_DIRAC_SHORTCUTS"));
  torch::NoGradGuard g;
  struct Case {
    std::string arch;
    bool keep_bn;
    torch::ScalarType dtype;
    size_t shortcuts;
    bool relu6 = true, projections = true;
  };
  // identity blocks and downsample blocks (a projection of the strided copies) alike; MobileNetV2's
  // inverted residuals, whose copies pass a per-channel clamp (-inf, inf) (ReLU6) or a PReLU of slope 1
  // (ReLU) that, with the copies gone, becomes the expand and depthwise convs' post-op
  for (const auto& c : std::vector<Case>{{"resnet8", true, torch::kFloat, 3},   // BN folded from float32 params
                                         {"resnet8", false, torch::kDouble, 3},
                                         {"resnet20", true, torch::kDouble, 9},
                                         {"resnet50", false, torch::kDouble, 16},  // bottlenecks: A, M, B
                                         {"mobilenet_v2_cifar", false, torch::kDouble, 10, true, false},
                                         {"mobilenet_v2_cifar", true, torch::kFloat, 10, false, false}}) {
    SCOPED_TRACE(c.arch + (c.keep_bn ? " bn kept " : " ") + c10::toString(c.dtype) + (c.relu6 ? "" : " relu"));
    auto m = random_model(c.arch, c.dtype, true, 10, c.relu6);
    auto r = convert(*m, ConvertOptions().keep_bn(c.keep_bn));
    ASSERT_TRUE(r.report.passed) << r.report.to_string();
    auto plain = r.plain;
    plain->eval();
    auto on = deploy(*plain, DeployOptions().runtime(Runtime::OneDNN));
    auto off = deploy(*plain, DeployOptions().runtime(Runtime::OneDNN).dirac_shortcuts(false));
    EXPECT_NE(on->graph().find("; " + std::to_string(c.shortcuts) + " Dirac shortcut"), std::string::npos) << on->graph();
    EXPECT_NE(off->graph().find("0 Dirac shortcuts (off)"), std::string::npos) << off->graph();
    EXPECT_NE(on->graph().find("sum post-op"), std::string::npos) << on->graph();
    EXPECT_EQ(on->graph().find("the shortcut's projection") != std::string::npos, c.projections) << on->graph();
    if (!c.projections) {  // MobileNetV2: no per-channel clamp is left, every block's activation is a post-op
      EXPECT_EQ(on->graph().find("per-channel clamp ("), std::string::npos) << on->graph();
      EXPECT_NE(on->graph().find(c.relu6 ? "+ clamp[0, 6]" : "+ relu"), std::string::npos) << on->graph();
      EXPECT_NE(off->graph().find("per-channel clamp ("), std::string::npos) << off->graph();
    }
    for (const auto& shape : std::vector<std::vector<int64_t>>{{3, 3, 32, 32}, {1, 3, 20, 12}}) {
      const auto x = 20 * torch::randn(shape, torch::kFloat);  // large activations
      const auto ref = m->forward(x.to(c.dtype)).to(torch::kDouble);  // the residual network itself
      const auto a = on->forward(x).to(torch::kDouble), b = off->forward(x).to(torch::kDouble);
      const double scale = ref.abs().max().item<double>();
      EXPECT_LE((a - ref).abs().max().item<double>() / scale, 2e-5) << x.sizes();
      EXPECT_LE((a - b).abs().max().item<double>() / scale, 2e-5) << x.sizes();
      EXPECT_TRUE(a.argmax(1).equal(ref.argmax(1)));
    }
    // MACs: every block a shortcut, the network executes exactly the residual network's MACs
    const auto x = torch::randn({2, 3, 32, 32});
    int64_t macs_on = 0, macs_off = 0;
    for (const auto& s : on->profile(x, 0, 1)) macs_on += s.macs;
    for (const auto& s : off->profile(x, 0, 1)) macs_off += s.macs;
    EXPECT_EQ(macs_off, 2 * count_flops(*plain, 3, 32));
    EXPECT_EQ(macs_on, 2 * count_flops(*m, 3, 32));
    EXPECT_LT(macs_on, macs_off);
  }

  // A block input that can be negative (no ReLU before it): the copies pass A's ReLU, so the
  // shortcut adds relu(x). A copy weight f > 0 other than 1 is a factor (relu(f x) = f relu(x)): a
  // shortcut scaled per channel. A negative one is a convolution, not a shortcut (relu(-x) is not
  // a function of relu(x)).
  for (const double one : {1.0, 1.001, -1.0}) {
    SCOPED_TRACE(one);
    torch::manual_seed(5);
    PlainNet net(std::vector<LayerSpec>{LayerSpec::conv(3, 4, 3, 1, 1), LayerSpec::conv(4, 8, 3, 1, 1),
                                        LayerSpec::relu(), LayerSpec::conv(8, 4, 3, 1, 1), LayerSpec::relu(),
                                        LayerSpec::avgpool(), LayerSpec::flatten(), LayerSpec::linear(4, 3)},
                 ModelOptions("plain").num_classes(3));
    make_dirac_block(*net, 1, 3, 4, one);
    net->eval();
    auto d = deploy(*net, DeployOptions().runtime(Runtime::OneDNN));
    const bool dirac = one > 0;
    EXPECT_EQ(d->graph().find("; 1 Dirac shortcut") != std::string::npos, dirac) << d->graph();
    EXPECT_EQ(d->graph().find("ReLU on it first") != std::string::npos, dirac) << d->graph();
    EXPECT_EQ(d->graph().find("scaled per channel") != std::string::npos, one == 1.001) << d->graph();
    const auto found = dirac_shortcuts(*net);
    ASSERT_EQ(found.size(), dirac ? 1u : 0u);
    if (one == 1.001) EXPECT_EQ(found[0].scale, std::vector<double>(4, static_cast<double>(static_cast<float>(one))));
    if (one == 1.0) EXPECT_TRUE(found[0].scale.empty());
    const auto x = 10 * torch::randn({2, 3, 9, 9});
    const auto ref = net->forward(x);
    EXPECT_LE((d->forward(x) - ref).abs().max().item<double>() / ref.abs().max().item<double>(), 1e-5);
  }
  // The caller's input as the block input: the shortcut adds a copy; the input is never written.
  PlainNet first(std::vector<LayerSpec>{LayerSpec::conv(3, 6, 1, 1, 0), LayerSpec::relu(), LayerSpec::conv(6, 3, 1, 1, 0),
                                        LayerSpec::relu(), LayerSpec::avgpool(), LayerSpec::flatten(),
                                        LayerSpec::linear(3, 2)},
                 ModelOptions("plain").num_classes(2));
  make_dirac_block(*first, 0, 2, 3, 1.0);
  first->eval();
  auto d = deploy(*first, DeployOptions().runtime(Runtime::OneDNN));
  EXPECT_NE(d->graph().find("; 1 Dirac shortcut"), std::string::npos) << d->graph();
  const auto x = torch::randn({2, 3, 5, 5}).contiguous(torch::MemoryFormat::ChannelsLast), saved = x.clone();
  const auto ref = first->forward(x);
  EXPECT_LE((d->forward(x) - ref).abs().max().item<double>() / ref.abs().max().item<double>(), 1e-5);
  EXPECT_TRUE(x.equal(saved));
}

// Batch tiling (DeployOptions::batch_tiling): the layers on maps run one image at a time and the
// rest on the whole batch; cut only where no Dirac shortcut is live (identity and projection blocks,
// bottlenecks, MobileNetV2's fused clamps, SE, a max-pool stem). The same function as the whole batch
// throughout and as the residual network, at large activations; the caller's input untouched; the
// profile names the tiled steps and counts the same MACs. Timed, on maps big enough to be
// candidates, whatever the timing decides computes the same function.
TEST(OneDnn, BatchTilingComputesTheSameFunction) {
  if (!onednn_direct_available()) GTEST_SKIP() << "this build has no direct oneDNN path";
  EXPECT_TRUE(DeployOptions().batch_tiling() || std::getenv("RMNET_BATCH_TILING"));
  torch::NoGradGuard g;
  for (const std::string arch : {"resnet8", "resnet50", "mobilenet_v2_cifar", "se_resnet20", "resnet18"}) {
    SCOPED_TRACE(arch);
    auto m = random_model(arch, torch::kFloat, true, 10, true);
    auto r = convert(*m, ConvertOptions());
    ASSERT_TRUE(r.report.passed) << r.report.to_string();
    auto plain = r.plain;
    plain->eval();
    auto tiled = deploy(*plain, DeployOptions().runtime(Runtime::OneDNN).batch_tiling(true).batch_tiling_timed(false));
    auto whole = deploy(*plain, DeployOptions().runtime(Runtime::OneDNN).batch_tiling(false));
    for (const auto& shape : std::vector<std::vector<int64_t>>{{3, 3, 32, 32}, {2, 3, 20, 12}, {1, 3, 32, 32}}) {
      const auto x = (20 * torch::randn(shape)).contiguous(torch::MemoryFormat::ChannelsLast), saved = x.clone();
      const auto ref = m->forward(x).to(torch::kDouble);
      const auto a = tiled->forward(x).to(torch::kDouble), b = whole->forward(x).to(torch::kDouble);
      const double scale = ref.abs().max().item<double>();
      EXPECT_LE((a - ref).abs().max().item<double>() / scale, 2e-5) << x.sizes();
      EXPECT_LE((a - b).abs().max().item<double>() / scale, 2e-5) << x.sizes();
      EXPECT_TRUE(x.equal(saved));
      const auto pt = tiled->profile(x, 0, 1), pw = whole->profile(x, 0, 1);
      ASSERT_EQ(pt.size(), pw.size());
      const size_t named = rmnet::test::tiled_steps(pt, pw);
      if (shape[0] == 1) {
        EXPECT_EQ(named, 0u);
      } else {  // every step before the pooling
        EXPECT_GE(named, pt.size() - 3) << pt.size();
        EXPECT_LT(named, pt.size());
      }
    }
  }
  // timed: a map of 16 channels at 64x64 holds 256 KiB per image in float32, a candidate
  torch::manual_seed(3);
  PlainNet net(std::vector<LayerSpec>{LayerSpec::conv(3, 16, 3, 1, 1), LayerSpec::relu(), LayerSpec::conv(16, 32, 3, 1, 1),
                                      LayerSpec::relu(), LayerSpec::conv(32, 16, 3, 1, 1), LayerSpec::relu(),
                                      LayerSpec::conv(16, 16, 3, 2, 1), LayerSpec::relu(), LayerSpec::avgpool(),
                                      LayerSpec::flatten(), LayerSpec::linear(16, 3)},
               ModelOptions("plain").num_classes(3));
  make_dirac_block(*net, 2, 4, 16, 1.0);
  net->eval();
  auto timed = deploy(*net, DeployOptions().runtime(Runtime::OneDNN).batch_tiling(true));
  EXPECT_NE(timed->graph().find("one image at a time"), std::string::npos) << timed->graph();
  const auto x = 10 * torch::randn({4, 3, 64, 64});
  const auto ref = net->forward(x);
  for (int k = 0; k < 2; ++k)
    EXPECT_LE((timed->forward(x) - ref).abs().max().item<double>() / ref.abs().max().item<double>(), 1e-5);
}

// A ResNet trained with shortcut scales (ModelOptions::shortcut_scale: the shortcut is relu(s * x))
// reserves relu(s * x): after the BN fold its copy rows have weight s. Those with s > 0 still run as
// shortcuts (an identity merge scales the added input per channel; a projection takes the factors
// into its weights) and the network then executes exactly the residual network's MACs; s <= 0 leaves
// that channel a computed one (a zero or a relu(-x) row) and the rest of the block a shortcut.
// The same function as the residual network, in float64 and float32, at large activations.
TEST(OneDnn, ScaledShortcutsRunAsShortcuts) {
  if (!onednn_direct_available()) GTEST_SKIP() << "this build has no direct oneDNN path";
  torch::NoGradGuard g;
  for (const std::string arch : {"resnet20", "resnet50"})
    for (const bool signed_scales : {false, true})
      for (const auto dtype : {torch::kDouble, torch::kFloat}) {
        SCOPED_TRACE(arch + (signed_scales ? " zero and negative scales " : " positive scales ") + c10::toString(dtype));
        torch::manual_seed(11);
        auto m = create_model(ModelOptions(arch).num_classes(10).track_block_stats(true).shortcut_scale(true));
        randomize_batchnorm(*m, 12);
        int64_t blocks = 0;
        for (auto& p : m->named_parameters())
          if (p.key().ends_with("shortcut_scale")) {
            auto s = p.value();
            s.uniform_(0.25, 1.75);
            if (signed_scales) {
              s[0] = 0.0;
              s[1] = -0.5;
            }
            ++blocks;
          }
        m->to(dtype);
        m->eval();
        auto r = convert(*m, ConvertOptions().keep_bn(dtype == torch::kFloat));
        ASSERT_TRUE(r.report.passed) << r.report.to_string();
        auto plain = r.plain;
        plain->eval();
        // A bottleneck's middle conv passes the copies in groups of its width (grouped [W2 ; D]); a group with
        // a channel that is not a copy stays computed whole, so in resnet50's first block (64 input
        // channels, one group) channels 0 and 1 leave no shortcut
        const bool bottleneck = arch == "resnet50";
        const auto found = dirac_shortcuts(*plain);
        EXPECT_EQ(static_cast<int64_t>(found.size()), blocks - (bottleneck && signed_scales ? 1 : 0));
        int64_t scaled = 0;
        for (const auto& sc : found) {
          scaled += !sc.scale.empty();
          if (sc.projection) continue;
          ASSERT_FALSE(sc.scale.empty());  // every identity block is scaled
          int64_t added = 0;
          for (size_t c = 0; c < sc.scale.size(); ++c) {
            added += sc.scale[c] > 0;
            EXPECT_TRUE(sc.scale[c] == 0.0 || (sc.scale[c] >= 0.25 * (1 - 1e-6) && sc.scale[c] <= 1.75 * (1 + 1e-6)))
                << sc.scale[c];
          }
          if (signed_scales) {  // channels 0 and 1 are not added (factor 0), nor the rest of their group
            EXPECT_EQ(sc.scale[0], 0.0);
            EXPECT_EQ(sc.scale[1], 0.0);
            const auto n = static_cast<int64_t>(sc.scale.size());
            EXPECT_EQ(added, n - (bottleneck ? n / 4 : 2));  // a bottleneck's groups: its width, a quarter
          } else {
            EXPECT_EQ(added, static_cast<int64_t>(sc.scale.size()));
          }
        }
        EXPECT_GT(scaled, 0);
        auto on = deploy(*plain, DeployOptions().runtime(Runtime::OneDNN));
        auto off = deploy(*plain, DeployOptions().runtime(Runtime::OneDNN).dirac_shortcuts(false));
        EXPECT_NE(on->graph().find("scaled per channel, sum post-op"), std::string::npos) << on->graph();
        const auto x = 20 * torch::randn({3, 3, 32, 32});
        const auto ref = m->forward(x.to(dtype)).to(torch::kDouble);
        const auto a = on->forward(x).to(torch::kDouble), b = off->forward(x).to(torch::kDouble);
        const double scale = ref.abs().max().item<double>();
        EXPECT_LE((a - ref).abs().max().item<double>() / scale, 2e-5);
        EXPECT_LE((a - b).abs().max().item<double>() / scale, 2e-5);
        int64_t macs_on = 0, macs_off = 0;
        for (const auto& s : on->profile(x.slice(0, 0, 2), 0, 1)) macs_on += s.macs;
        for (const auto& s : off->profile(x.slice(0, 0, 2), 0, 1)) macs_off += s.macs;
        EXPECT_EQ(macs_on, 2 * executed_macs(*plain, 32));
        if (!signed_scales) EXPECT_EQ(macs_on, 2 * count_flops(*m, 3, 32));
        else EXPECT_GT(macs_on, 2 * count_flops(*m, 3, 32));  // the s <= 0 rows are computed
        EXPECT_LT(macs_on, macs_off);
      }
}

// Debian's libdnnl and the torch wheel both need libgomp.so.1: the process must map one OpenMP
// runtime (one thread pool, one at::set_num_threads), not two.
TEST(OneDnn, OneOpenMPRuntimeInTheProcess) {
  if (!onednn_direct_available()) GTEST_SKIP() << "this build has no direct oneDNN path";
  auto plain = converted({"resnet8", false, false, false, true, ""});
  auto d = deploy(*plain, DeployOptions().runtime(Runtime::OneDNN));
  torch::NoGradGuard g;
  d->forward(torch::randn({1, 3, 32, 32}));
  std::ifstream maps("/proc/self/maps");
  if (!maps) GTEST_SKIP() << "no /proc/self/maps";
  std::set<std::string> gomp;
  for (std::string line; std::getline(maps, line);) {
    const auto slash = line.find('/');
    if (slash != std::string::npos && line.find("libgomp") != std::string::npos) gomp.insert(line.substr(slash));
  }
  EXPECT_EQ(gomp.size(), 1u) << ::testing::PrintToString(gomp);
}

TEST(OneDnn, FusesActivationsAsPostOps) {
  auto relu6 = converted({"mobilenet_v2_cifar", false, false, false, true, ""});
  const auto plan = deploy(*relu6, DeployOptions().runtime(Runtime::OneDNN))->graph();
  EXPECT_NE(plan.find("+ clamp[0, 6]"), std::string::npos) << plan;       // stem: uniform ReLU6 as hardtanh
  EXPECT_NE(plan.find("per-channel clamp"), std::string::npos) << plan;    // reserved channels unclipped
  auto res = converted({"resnet8", false, false, false, true, ""});
  const auto p2 = deploy(*res, DeployOptions().runtime(Runtime::OneDNN))->graph();
  EXPECT_NE(p2.find("+ relu"), std::string::npos) << p2;
  EXPECT_EQ(p2.find("relu (in place)"), std::string::npos) << p2;          // every ReLU fused
  EXPECT_NE(p2.find("global average pool + flatten"), std::string::npos) << p2;
}

TEST(OneDnn, ProfileCountsEveryStepAndTheNetworksMacs) {
  auto plain = converted({"resnet8", false, false, false, true, ""});
  // every channel a convolution (DiracShortcutsComputeTheSameFunction counts the MACs shortcuts save)
  auto d = deploy(*plain, DeployOptions().runtime(Runtime::OneDNN).dirac_shortcuts(false));
  auto steps = d->profile(torch::randn({2, 3, 32, 32}), 0, 2);
  ASSERT_FALSE(steps.empty());
  int64_t macs = 0;
  for (const auto& s : steps) {
    EXPECT_GE(s.ms, 0.0);
    EXPECT_LE(s.first_layer, s.last_layer);
    macs += s.macs;
  }
  EXPECT_EQ(macs, 2 * count_flops(*plain, 3, 32));
  EXPECT_EQ(steps.back().output_shape, (std::vector<int64_t>{2, 10}));
  EXPECT_EQ(steps.back().last_layer, plain->size() - 1);
}

TEST(OneDnn, PackedShapeCacheNeverServesAWrongPacking) {
  auto plain = converted({"resnet8", false, false, false, true, ""});
  auto d = deploy(*plain, DeployOptions().runtime(Runtime::OneDNN).packed_shapes(1));
  torch::manual_seed(2);
  auto a = torch::randn({3, 3, 32, 32}), b = torch::randn({5, 3, 24, 24});
  for (int i = 0; i < 3; ++i) {  // alternate shapes: every call evicts the other's packing
    EXPECT_LE(rel_diff(*plain, *d, a), 1e-4);
    EXPECT_LE(rel_diff(*plain, *d, b), 1e-4);
  }
}

TEST(OneDnn, DoesNotWriteIntoTheCallersTensor) {
  // A chain that starts with in-place steps, fed a channels-last float input (no copy on entry).
  PlainNet net(std::vector<LayerSpec>{LayerSpec::batchnorm(3), LayerSpec::relu(), LayerSpec::conv(3, 4, 1, 1, 0)},
               ModelOptions("plain").in_channels(3));
  randomize_batchnorm(*net, 3);
  net->eval();
  auto d = deploy(*net, DeployOptions().runtime(Runtime::OneDNN));
  auto x = torch::randn({2, 3, 5, 5}).contiguous(torch::MemoryFormat::ChannelsLast);
  const auto before = x.clone();
  torch::NoGradGuard g;
  auto y = d->forward(x);
  EXPECT_TRUE(torch::equal(x, before));
  EXPECT_TRUE(torch::allclose(y, net->forward(before), 1e-5, 1e-6));
}

TEST(BufferCache, ServesLargeAllocationsFromFreedBlocks) {
  using rmnet::detail::BufferCache;
  using rmnet::detail::BufferCacheScope;
  auto cache = BufferCache::make(64 << 20);
  const int64_t big = static_cast<int64_t>(BufferCache::kMinBytes / sizeof(float));  // exactly kMinBytes
  const auto stats = [&] { return cache->stats(); };
  void* first = nullptr;
  {
    BufferCacheScope scope(cache.get());
    ASSERT_TRUE(BufferCache::active());
    auto a = torch::empty({2 * big});
    first = a.data_ptr();
    EXPECT_EQ(stats().allocations, 1);
  }  // a is freed into the cache
  EXPECT_FALSE(BufferCache::active());
  EXPECT_EQ(stats().cached_bytes, static_cast<int64_t>(2 * BufferCache::kMinBytes));
  {
    auto outside = torch::empty({2 * big});  // no scope: LibTorch's own allocator
    EXPECT_NE(outside.data_ptr(), first);
    EXPECT_EQ(stats().allocations, 1);
    EXPECT_EQ(stats().reuses, 0);
  }
  {
    BufferCacheScope scope(cache.get());
    auto small = torch::empty({big - 100});  // below kMinBytes: the C allocator
    EXPECT_EQ(stats().allocations, 1);
    EXPECT_EQ(stats().reuses, 0);
    auto c = torch::empty({big * 3 / 2});  // smaller than the cached block, at least half of it: reused
    EXPECT_EQ(c.data_ptr(), first);
    EXPECT_EQ(stats().reuses, 1);
    EXPECT_EQ(stats().cached_bytes, 0);
    auto d = torch::empty({big});  // nothing cached: a fresh block, distinct memory
    EXPECT_EQ(stats().allocations, 2);
    c.fill_(1.0f);
    d.fill_(2.0f);
    EXPECT_EQ(c.sum().item<double>(), static_cast<double>(big * 3 / 2));
    EXPECT_EQ(d.sum().item<double>(), 2.0 * big);
    auto larger = torch::empty({big * 5});
    EXPECT_EQ(stats().allocations, 3);
  }  // c's block (2 kMinBytes), d's (1) and larger's (5) are cached; small's is not
  EXPECT_EQ(stats().cached_bytes, static_cast<int64_t>(8 * BufferCache::kMinBytes));
  {
    BufferCacheScope scope(cache.get());
    auto half = torch::empty({big * 5 / 2 - 1});  // the 5x block is over twice this: not used, fresh
    EXPECT_EQ(stats().allocations, 4);
  }
  EXPECT_EQ(stats().cached_bytes, static_cast<int64_t>(8 * BufferCache::kMinBytes + big * 10 - 4));
  // raw_allocate/raw_deallocate (the context is the data pointer) go through the cache too, and a
  // small raw block goes back to LibTorch's allocator
  {
    BufferCacheScope scope(cache.get());
    auto* alloc = c10::GetCPUAllocator();
    void* raw = alloc->raw_allocate(BufferCache::kMinBytes);
    void* tiny = alloc->raw_allocate(64);
    alloc->raw_deallocate(tiny);
    alloc->raw_deallocate(raw);
  }
  EXPECT_EQ(stats().reuses, 2);  // the raw block was d's
  // a block that outlives its cache (an executor's output) is freed safely afterwards
  torch::Tensor survivor;
  {
    BufferCacheScope scope(cache.get());
    survivor = torch::ones({big});
  }
  cache->clear();
  EXPECT_EQ(stats().cached_bytes, 0);
  cache.reset();
  EXPECT_EQ(survivor.sum().item<double>(), static_cast<double>(big));
  survivor = torch::Tensor();
  // the cap: a cache of 0 bytes keeps nothing
  auto none = BufferCache::make(0);
  for (int i = 0; i < 2; ++i) {
    BufferCacheScope scope(none.get());
    auto t = torch::empty({big});
  }
  EXPECT_EQ(none->stats().cached_bytes, 0);
  EXPECT_EQ(none->stats().allocations, 2);
}

TEST(OneDnn, BufferCacheReusesActivationsAndOutputsSurviveTheNextForward) {
  // A chain without a head: its output (1 MiB) is itself a cached-size block, held by the caller
  // while the next forward runs; a per-channel clamp step runs in place on cached blocks.
  const double kInf = std::numeric_limits<double>::infinity();
  PlainNet net(std::vector<LayerSpec>{LayerSpec::conv(3, 16, 3, 1, 1), LayerSpec::batchnorm(16), LayerSpec::relu(),
                                      LayerSpec::conv(16, 16, 3, 1, 1), LayerSpec::clamp(16),
                                      LayerSpec::conv(16, 16, 3, 1, 1)},
               ModelOptions("plain").in_channels(3));
  randomize_batchnorm(*net, 4);
  {
    torch::NoGradGuard g;
    auto c = net->layer_as<ChannelClampImpl>(4);
    for (int64_t ch = 0; ch < 16; ++ch) {
      c->min[ch] = ch < 12 ? 0.0 : -kInf;
      c->max[ch] = ch < 12 ? 0.5 : kInf;
    }
  }
  net->eval();
  torch::manual_seed(5);
  const auto x1 = torch::randn({4, 3, 64, 64}), x2 = 5 * torch::randn({4, 3, 64, 64});
  torch::NoGradGuard g;
  const auto e1 = net->forward(x1), e2 = net->forward(x2);
  for (Runtime rt : {Runtime::OneDNN, Runtime::TorchScript}) {
    auto d = deploy(*net, DeployOptions().runtime(rt));
    d->forward(x1);
    const auto after1 = d->buffer_cache_stats();
    EXPECT_GT(after1.allocations, 0) << to_string(rt);
    d->forward(x1);
    const auto after2 = d->buffer_cache_stats();
    EXPECT_EQ(after2.allocations, after1.allocations) << to_string(rt) << ": the second forward allocated";
    EXPECT_GT(after2.reuses, after1.reuses) << to_string(rt);
    // outputs held by the caller are never handed to the next forward
    const auto y1 = d->forward(x1);
    const auto y2 = d->forward(x2);
    EXPECT_LE((y1 - e1).abs().max().item<double>() / e1.abs().max().item<double>(), 1e-5) << to_string(rt);
    EXPECT_LE((y2 - e2).abs().max().item<double>() / e2.abs().max().item<double>(), 1e-5) << to_string(rt);
    EXPECT_NE(y1.data_ptr(), y2.data_ptr());
    auto off = deploy(*net, DeployOptions().runtime(rt).buffer_cache_mb(0));
    EXPECT_TRUE(torch::equal(off->forward(x1), y1)) << to_string(rt);  // same kernels, same bits
    EXPECT_EQ(off->buffer_cache_stats().allocations, 0);
    EXPECT_EQ(off->buffer_cache_stats().cached_bytes, 0);
  }
  EXPECT_NE(error_of([&] { deploy(*net, DeployOptions().buffer_cache_mb(-1)); }).find("buffer_cache_mb must be >= 0"),
            std::string::npos);
}

TEST(OneDnn, BadInputNamesTheExpectedShape) {
  auto plain = converted({"resnet8", false, false, false, true, ""});
  auto d = deploy(*plain);
  EXPECT_NE(error_of([&] { d->forward(torch::randn({2, 1, 32, 32})); }).find("[N, 3, H, W] (3 channels), got [2, 1, 32, 32]"),
            std::string::npos);
  EXPECT_NE(error_of([&] { d->forward(torch::randn({3, 32, 32})); }).find("expected an input of shape [N, 3, H, W], got 3-d"),
            std::string::npos);
  EXPECT_NE(error_of([&] { d->forward(torch::zeros({1, 3, 32, 32}, torch::kUInt8)); }).find("floating-point input [N, 3, H, W]"),
            std::string::npos);
  PlainNet unpadded(std::vector<LayerSpec>{LayerSpec::conv(3, 4, 5, 1, 0)}, ModelOptions("plain").in_channels(3));
  auto du = deploy(*unpadded, DeployOptions().runtime(Runtime::OneDNN));
  EXPECT_NE(error_of([&] { du->forward(torch::randn({1, 3, 4, 4})); }).find("too small"), std::string::npos);
}

TEST(OneDnn, Bfloat16StaysCloseAndFloat64IsRefused) {
  auto plain = converted({"resnet8", false, false, false, true, ""});
  auto bf = deploy(*plain, DeployOptions().runtime(Runtime::OneDNN).dtype(torch::kBFloat16));
  auto x = torch::randn({8, 3, 32, 32});
  EXPECT_LE(rel_diff(*plain, *bf, x), 5e-2);
  torch::NoGradGuard g;
  EXPECT_EQ(bf->forward(x).scalar_type(), torch::kFloat);
  EXPECT_NE(error_of([&] { deploy(*plain, DeployOptions().runtime(Runtime::OneDNN).dtype(torch::kDouble)); })
                .find("float32 or bfloat16"),
            std::string::npos);
  // Auto falls back to TorchScript where onednn does not run
  EXPECT_EQ(deploy(*plain, DeployOptions().dtype(torch::kDouble))->runtime(), Runtime::TorchScript);
  EXPECT_EQ(deploy(*plain)->runtime(), Runtime::OneDNN);
}

TEST(OneDnn, RuntimeNamesAndPrepareInference) {
  EXPECT_EQ(runtime_from_string("onednn"), Runtime::OneDNN);
  EXPECT_EQ(runtime_from_string("torchscript"), Runtime::TorchScript);
  EXPECT_EQ(runtime_from_string("deploy"), Runtime::TorchScript);
  EXPECT_EQ(to_string(Runtime::OneDNN), "onednn");
  auto m = random_model("resnet8");
  auto plain = convert(*m).plain;
  auto a = prepare_inference(plain.ptr(), Runtime::Auto);
  EXPECT_EQ(runtime_name(*a), "onednn");
  EXPECT_EQ(runtime_name(*prepare_inference(plain.ptr(), Runtime::TorchScript)), "torchscript");
  EXPECT_EQ(runtime_name(*prepare_inference(m, Runtime::Auto)), "eager");
  EXPECT_EQ(prepare_inference(a, Runtime::Auto).get(), a.get());  // already prepared
  EXPECT_NE(error_of([&] { prepare_inference(m, Runtime::OneDNN); }).find("the onednn runtime runs plain networks only"),
            std::string::npos);
  auto d = deploy(*plain);
  EXPECT_NE(error_of([&] { d->module(); }).find("no TorchScript module"), std::string::npos);
  // int8 is for quantized networks: a float network is refused by name, never run on another runtime
  EXPECT_EQ(runtime_from_string("int8"), Runtime::Int8);
  EXPECT_NE(error_of([&] { deploy(*plain, DeployOptions().runtime(Runtime::Int8)); }).find("quantized networks"),
            std::string::npos);
  EXPECT_NE(error_of([&] { prepare_inference(plain.ptr(), Runtime::Int8); }).find("quantized networks only"),
            std::string::npos);
  // cudagraph: by name, CUDA only, refused by name on the CPU or where no GPU (or no CUDA build) is
  EXPECT_EQ(runtime_from_string("cudagraph"), Runtime::CudaGraph);
  EXPECT_EQ(to_string(Runtime::CudaGraph), "cudagraph");
  const auto names = runtime_names();
  EXPECT_NE(std::find(names.begin(), names.end(), "cudagraph"), names.end());
  EXPECT_NE(error_of([&] { deploy(*plain, DeployOptions().runtime(Runtime::CudaGraph)); }).find("runs on CUDA"),
            std::string::npos);
  EXPECT_NE(error_of([&] { prepare_inference(m, Runtime::CudaGraph); }).find("runs plain networks only"),
            std::string::npos);
  std::string why;
  if (!cuda_graph_available(DeployOptions().device(torch::kCUDA), &why)) {
    EXPECT_FALSE(why.empty());
    EXPECT_NE(error_of([&] { deploy(*plain, DeployOptions().device(torch::kCUDA).runtime(Runtime::CudaGraph)); })
                  .find(why),
              std::string::npos);
  }
}

TEST(OneDnn, MeasuredConvPeakIsPositive) {
  // the figure bench --profile reports the per-step fraction against
  EXPECT_GT(measure_conv_peak(torch::kFloat), 1.0);
}
