// Quantization: cross-layer equalization (exact), observers, s8 weights, the quantized network,
// the INT8 executor against float references, model-file round trip, errors.
#include <gtest/gtest.h>

#include <cstdlib>
#include <limits>

#include "deploy/executors.h"
#include "deploy/int8_shortcuts.h"
#include "helpers.h"
#include "rmnet/convert/fuse.h"
#include "rmnet/convert/rm.h"
#include "rmnet/models/profile.h"
#include "rmnet/data/dataset.h"
#include "rmnet/deploy/int8.h"
#include "rmnet/deploy/runtime.h"
#include "rmnet/deploy/shortcuts.h"
#include "rmnet/io/model_file.h"
#include "rmnet/prune/slim.h"
#include "rmnet/quant/equalize.h"
#include "rmnet/quant/quantize.h"

using namespace rmnet;

namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();

// A random chain whose output channels have very different ranges (per-channel weight scales
// spread over 3 orders of magnitude), with BN statistics, ReLU6-style and mixed clamps.
PlainNet random_chain(std::vector<LayerSpec> specs, torch::ScalarType dtype, uint64_t seed = 3) {
  torch::manual_seed(seed);
  PlainNet net(std::move(specs), ModelOptions("plain").num_classes(5).in_channels(3));
  randomize_batchnorm(*net, seed + 10);
  torch::NoGradGuard g;
  for (size_t i = 0; i < net->size(); ++i) {
    const auto& s = net->spec(i);
    if (s.kind == LayerKind::Conv) {
      auto c = net->layer_as<torch::nn::Conv2dImpl>(i);
      c->weight.normal_(0, 0.3).mul_(torch::pow(10.0, torch::rand({s.out_channels, 1, 1, 1}) * 3 - 1.5));
      if (s.bias) c->bias.normal_(0, 0.5);
    } else if (s.kind == LayerKind::Clamp) {
      auto c = net->layer_as<ChannelClampImpl>(i);
      // channel c: [0, 6] (ReLU6), [-inf, inf] (a reserved channel) or [0, inf], cycling
      for (int64_t ch = 0; ch < s.out_channels; ++ch) {
        c->min[ch] = ch % 3 == 1 ? -kInf : 0.0;
        c->max[ch] = ch % 3 == 0 ? 6.0 : kInf;
      }
    } else if (s.kind == LayerKind::PReLU) {
      net->layer_as<torch::nn::PReLUImpl>(i)->weight.uniform_(-0.5, 1.5);
    }
  }
  net->to(dtype);
  net->eval();
  return net;
}

std::vector<LayerSpec> mixed_specs() {
  return {LayerSpec::conv(3, 12, 3, 1, 1), LayerSpec::batchnorm(12), LayerSpec::clamp(12),
          LayerSpec::conv(12, 12, 3, 2, 1, 12),  // depthwise
          LayerSpec::clamp(12), LayerSpec::conv(12, 16, 1, 1, 0), LayerSpec::relu(), LayerSpec::maxpool(3, 2, 1),
          LayerSpec::conv(16, 16, 3, 1, 1, 4),  // grouped
          LayerSpec::prelu(16), LayerSpec::conv(16, 8, 1, 1, 0), LayerSpec::relu(), LayerSpec::avgpool(),
          LayerSpec::flatten(), LayerSpec::linear(8, 5)};
}

// Spread of per-channel weight ranges: the largest over the smallest channel range of each conv, max over convs.
double worst_range_ratio(const PlainNetImpl& net) {
  double worst = 0;
  for (const auto& [i, r] : weight_ranges(net)) worst = std::max(worst, (r.max() / r.min()).item<double>());
  return worst;
}

torch::Tensor calib(int64_t n, int64_t size = 16, uint64_t seed = 5) {
  torch::manual_seed(seed);
  return torch::randn({n, 3, size, size}) * 2;
}

}  // namespace

TEST(Equalize, ExactInFloat64WithClampsGroupedAndDepthwise) {
  auto net = random_chain(mixed_specs(), torch::kDouble);
  const auto before = torch::cat([&] {
    std::vector<torch::Tensor> w;
    for (auto& p : net->parameters()) w.push_back(p.detach().flatten().clone());
    return w;
  }());
  auto eq = equalize(*net);
  // input untouched
  std::vector<torch::Tensor> w;
  for (auto& p : net->parameters()) w.push_back(p.detach().flatten());
  EXPECT_TRUE(torch::equal(before, torch::cat(w)));
  EXPECT_EQ(eq->metadata().at("quant.equalized_pairs"), "5");  // conv->dw, dw->pw, pw->grouped, grouped->pw, pw->linear
  for (const double amp : {1.0, 100.0}) {  // large activations: the clamps' bounds are crossed
    auto x = torch::randn({3, 3, 16, 16}, torch::kDouble) * amp;
    EXPECT_LE(test::rel_diff(*net, *eq, x), 1e-12) << "input amplitude " << amp;
  }
  // the spread of channel ranges shrinks by orders of magnitude
  auto folded = fold_batchnorm(*net);
  EXPECT_LT(worst_range_ratio(*eq) * 10, worst_range_ratio(*folded));
}

TEST(Equalize, ExactInFloat32AndOnConvertedNetworks) {
  auto net = random_chain(mixed_specs(), torch::kFloat);
  auto x = torch::randn({2, 3, 16, 16}) * 10;
  EXPECT_LE(test::rel_diff(*net, *equalize(*net), x), 1e-4);
  // RM-converted networks: ReLU6 MobileNetV2 (mixed clamps on reserved channels, grouped reserves), Bottleneck
  for (const std::string arch : {"mobilenet_v2_cifar", "resnet50"}) {
    auto m = test::random_model(arch, torch::kDouble);
    auto plain = convert(*m, ConvertOptions().verify(false)).plain;
    auto eq = equalize(*plain, EqualizeOptions().iterations(4));
    auto xi = torch::randn({2, 3, 32, 32}, torch::kDouble) * 3;
    EXPECT_LE(test::rel_diff(*plain, *eq, xi), 1e-10) << arch;
  }
}

TEST(Equalize, BalancesOnePair) {
  auto net = random_chain({LayerSpec::conv(3, 8, 3, 1, 1), LayerSpec::relu(), LayerSpec::conv(8, 4, 3, 1, 1)},
                          torch::kDouble);
  auto eq = equalize(*net, EqualizeOptions().iterations(1));
  const auto ra = eq->layer_as<torch::nn::Conv2dImpl>(0)->weight.abs().flatten(1).amax(1);
  const auto rb = eq->layer_as<torch::nn::Conv2dImpl>(2)->weight.abs().amax({0, 2, 3});
  EXPECT_TRUE(torch::allclose(ra, rb, 1e-12, 0)) << ra << rb;
  EXPECT_EQ(equalization_pairs(net->specs()).size(), 1u);
}

// Largest / smallest non-zero channel range of every pair's activation, max over pairs.
double worst_activation_spread(const std::map<size_t, torch::Tensor>& ranges) {
  double worst = 0;
  for (const auto& [producer, r] : ranges) {
    const auto nz = r.masked_select(r > 0);
    if (nz.numel() > 0) worst = std::max(worst, (nz.max() / nz.min()).item<double>());
  }
  return worst;
}

TEST(Equalize, ByActivationsExactInFloat64AndEqualisesRanges) {
  auto net = fold_batchnorm(*random_chain(mixed_specs(), torch::kDouble));
  const auto x = torch::randn({8, 3, 16, 16}, torch::kDouble) * 3;
  const auto ranges = activation_ranges(*net, x, 3);  // batches of 3: the maxima combine across batches
  ASSERT_EQ(ranges.size(), 5u);
  for (const auto& [producer, r] : ranges) EXPECT_EQ(r.numel(), net->spec(producer).out_channels);
  EXPECT_TRUE(torch::equal(ranges.at(0), activation_ranges(*net, x, 8).at(0)));
  const double spread0 = worst_activation_spread(ranges);
  EXPECT_GT(spread0, 20.0);  // the random chain's channels differ widely
  // alpha = 1: every active channel of every pair gets the same range; the function is unchanged
  auto eq = equalize_activations(*net, ranges, EqualizeOptions().alpha(1.0));
  EXPECT_EQ(eq->metadata().at("quant.equalized_pairs"), "5");
  for (const double amp : {1.0, 100.0}) {  // large activations cross the clamps' bounds
    auto xt = torch::randn({3, 3, 16, 16}, torch::kDouble) * amp;
    EXPECT_LE(test::rel_diff(*net, *eq, xt), 1e-12) << "input amplitude " << amp;
  }
  EXPECT_LE(worst_activation_spread(activation_ranges(*eq, x)), 1 + 1e-9);
  // alpha = 0.5 (the default) goes half way (in log terms) and is exact too
  auto half = equalize_activations(*net, ranges);
  EXPECT_LE(test::rel_diff(*net, *half, x), 1e-12);
  const double spread_half = worst_activation_spread(activation_ranges(*half, x));
  EXPECT_LT(spread_half, spread0 / 2);
  EXPECT_GT(spread_half, 1.001);
  // the input is untouched; a BN in the chain (indices would not match) and wrong sizes are refused
  EXPECT_LE(test::rel_diff(*net, *fold_batchnorm(*random_chain(mixed_specs(), torch::kDouble)), x), 0.0);
  auto with_bn = random_chain(mixed_specs(), torch::kDouble);
  EXPECT_NE(test::error_of([&] { activation_ranges(*with_bn, x); }).find("fold"), std::string::npos);
  EXPECT_NE(test::error_of([&] { equalize_activations(*with_bn, ranges); }).find("BatchNorm"), std::string::npos);
  auto bad = ranges;
  bad[0] = torch::ones({3}, torch::kDouble);
  EXPECT_NE(test::error_of([&] { equalize_activations(*net, bad); }).find("3 channels"), std::string::npos);
  EXPECT_THROW(equalize_activations(*net, ranges, EqualizeOptions().alpha(1.5)), c10::Error);
  EXPECT_THROW(equalize_by_from_string("ranges"), c10::Error);
  EXPECT_EQ(equalize_by_from_string(to_string(EqualizeBy::Weights)), EqualizeBy::Weights);
}

TEST(Equalize, ByActivationsOnConvertedNetworks) {
  // RM forms: the reserved channels carry the block input, with ranges unlike the block's own channels
  for (const std::string arch : {"mobilenet_v2_cifar", "resnet50"}) {
    auto m = test::random_model(arch, torch::kDouble);
    auto plain = fold_batchnorm(*convert(*m, ConvertOptions().verify(false)).plain);
    auto xi = torch::randn({4, 3, 32, 32}, torch::kDouble) * 3;
    const auto ranges = activation_ranges(*plain, xi);
    auto eq = equalize_activations(*plain, ranges, EqualizeOptions().alpha(0.5));
    EXPECT_LE(test::rel_diff(*plain, *eq, torch::randn({2, 3, 32, 32}, torch::kDouble) * 5), 1e-10) << arch;
    EXPECT_LT(worst_activation_spread(activation_ranges(*eq, xi)), worst_activation_spread(ranges)) << arch;
  }
}

TEST(Quantize, WeightsWithinHalfAStep) {
  torch::manual_seed(1);
  auto w = torch::randn({6, 4, 3, 3}) * torch::tensor({1e-3, 0.1, 1.0, 10.0, 100.0, 0.0}).view({-1, 1, 1, 1});
  auto [q, s] = quantize_weight_s8(w);
  EXPECT_EQ(q.scalar_type(), torch::kChar);
  const auto back = q.to(torch::kFloat) * s.view({-1, 1, 1, 1});
  const auto err = (back - w).abs().flatten(1).amax(1);
  EXPECT_TRUE((err <= s * 0.5 * (1 + 1e-5)).all().item<bool>()) << err << s;
  EXPECT_EQ(q.abs().flatten(1).amax(1).slice(0, 0, 5).min().item<int>(), 127);  // the range is used
  EXPECT_EQ(q[5].abs().max().item<int>(), 0);                                 // a zero channel stays zero
}

TEST(Quantize, Observers) {
  // 10000 values in [0, 1] and one outlier at 100 (post-ReLU style, non-negative)
  torch::manual_seed(2);
  auto v = torch::cat({torch::rand({10000}), torch::full({1}, 100.0)});
  const auto h = torch::histc(v, 2048, 0, 100);
  auto [l0, h0] = observe_range(h, 0, 100, Observer::MinMax);
  EXPECT_EQ(l0, 0);
  EXPECT_EQ(h0, 100);
  auto [l1, h1] = observe_range(h, 0, 100, Observer::Percentile, 99.9);
  EXPECT_EQ(l1, 0);
  EXPECT_LT(h1, 2.0);
  EXPECT_GT(h1, 0.9);
  // MSE keeps a single far outlier (clipping it costs more than the coarser step) ...
  auto [l2, h2] = observe_range(h, 0, 100, Observer::MSE);
  EXPECT_EQ(l2, 0);
  EXPECT_GT(h2, 50.0);
  // ... but clips a long thin tail: exponential values, max ~ 12
  auto e = -torch::log(torch::rand({200000}).clamp_min(1e-12));
  const double emax = e.max().item<double>();
  auto [l4, h4] = observe_range(torch::histc(e, 2048, 0, emax), 0, emax, Observer::MSE);
  EXPECT_EQ(l4, 0);
  EXPECT_LT(h4, 0.9 * emax);
  EXPECT_GT(h4, 3.0);
  // signed values: the range keeps 0 inside and both ends
  auto s = torch::randn({20000});
  const double lo = s.min().item<double>(), hi = s.max().item<double>();
  auto [l3, h3] = observe_range(torch::histc(s, 2048, lo, hi), lo, hi, Observer::Percentile, 99.9);
  EXPECT_LT(l3, -2.5);
  EXPECT_GT(h3, 2.5);
  EXPECT_GT(l3, lo - 1e-9);
  EXPECT_THROW(observer_from_string("kl"), c10::Error);
}

TEST(Quantize, Int8MatchesFloatWithinQuantizationError) {
  if (!int8_runtime_available()) GTEST_SKIP() << "no oneDNN INT8 operators in this LibTorch";
  // no SE here (see the next test); PReLU is a fallback
  auto net = random_chain(mixed_specs(), torch::kFloat);
  const auto data = calib(64);
  for (const std::string eqz : {"no", "weights", "activations"}) {
    auto opts = QuantizeOptions().equalize(eqz != "no").observer(Observer::MinMax);
    if (eqz != "no") opts.equalize_by(equalize_by_from_string(eqz));
    auto r = quantize(*net, data, opts);
    EXPECT_EQ(r.net->metadata().at("quant.equalize"), eqz);
    ASSERT_EQ(r.activation_spread.size(), 5u);
    double log_before = 0, log_after = 0;
    for (const auto& a : r.activation_spread) {
      if (eqz == "no") EXPECT_EQ(a.before, a.after);
      log_before += std::log(a.before);
      log_after += std::log(a.after);
    }
    if (eqz == "activations") EXPECT_LT(log_after, log_before - 1.0);
    auto& q = *r.net;
    EXPECT_EQ(q.family(), "quantized");
    ASSERT_EQ(q.fallbacks().size(), 1u);
    EXPECT_NE(q.fallbacks()[0].find("PReLU"), std::string::npos);
    Int8Net exec(q);
    auto x = calib(16, 16, 9);
    torch::NoGradGuard g;
    const auto yf = net->forward(x), yq = q.forward(x), y8 = exec->forward(x);
    const double range = yf.abs().max().item<double>();
    const double e_ref = (y8 - yq).abs().max().item<double>() / range;  // executor vs its float reference
    const double e_fp = (y8 - yf).abs().max().item<double>() / range;   // INT8 vs the float network
    EXPECT_LE(e_ref, 0.02) << "equalize " << eqz;
    EXPECT_LE(e_fp, 0.08) << "equalize " << eqz;
    EXPECT_GE(y8.argmax(1).eq(yf.argmax(1)).to(torch::kFloat).mean().item<double>(), 0.8);
    // the quantization error is real (not a float path in disguise) and the checks can fail
    EXPECT_GT((y8 - yf).abs().max().item<double>(), 0.0);
  }
}

// The direct path's u8 max-pool (a oneDNN pooling primitive per input shape) equals max-pooling
// the codes exactly: odd sizes, padding, kernel = stride, any input layout; channels-last out.
TEST(Quantize, DirectU8MaxPoolEqualsPoolingTheCodes) {
  if (!onednn_direct_available()) GTEST_SKIP() << "this build has no direct oneDNN path";
  torch::manual_seed(3);
  struct Case {
    std::vector<int64_t> shape;
    int64_t k, s, p;
  };
  for (const auto& c : std::vector<Case>{{{1, 64, 112, 112}, 3, 2, 1},
                                         {{3, 5, 9, 7}, 3, 2, 1},
                                         {{2, 8, 8, 8}, 2, 2, 0},
                                         {{1, 3, 5, 5}, 3, 1, 1},
                                         {{2, 16, 10, 10}, 3, 3, 1}}) {
    SCOPED_TRACE(::testing::PrintToString(c.shape));
    auto pool = rmnet::detail::make_dnnl_u8_maxpool(c.k, c.s, c.p, c.shape);
    ASSERT_TRUE(pool);
    const auto x = torch::randint(0, 256, c.shape, torch::kByte);
    const auto ref = at::max_pool2d(x.to(torch::kFloat), {c.k, c.k}, {c.s, c.s}, {c.p, c.p}).to(torch::kByte);
    for (const auto& in : {x.contiguous(torch::MemoryFormat::ChannelsLast), x.contiguous()}) {
      const auto y = pool->run(in);
      EXPECT_TRUE(y.is_contiguous(torch::MemoryFormat::ChannelsLast));
      EXPECT_TRUE(y.equal(ref));
    }
  }
  EXPECT_FALSE(rmnet::detail::make_dnnl_u8_maxpool(3, 2, 1, std::vector<int64_t>{1, 2, 0, 0}));  // nothing to pool
  // floor mode dropping input rows (10x11, 3x3 stride 3, no padding: 3x3 out, the last row unread)
  // is no oneDNN pooling (it would need negative padding): null, and the executor keeps LibTorch's kernel
  EXPECT_FALSE(rmnet::detail::make_dnnl_u8_maxpool(3, 3, 0, std::vector<int64_t>{2, 16, 10, 11}));
}

TEST(Quantize, MaxPoolOnLargeMaps) {
  // a u8 max-pool on maps of real size (LibTorch's own uint8 channels-last max-pool refuses
  // C*H*W of 16x16x16 and more): the executor equals its float reference's pooling exactly
  if (!int8_runtime_available()) GTEST_SKIP() << "no oneDNN INT8 operators in this LibTorch";
  auto net = random_chain({LayerSpec::conv(3, 32, 3, 1, 1), LayerSpec::batchnorm(32), LayerSpec::relu(),
                           LayerSpec::maxpool(3, 2, 1), LayerSpec::conv(32, 16, 3, 1, 1), LayerSpec::relu(),
                           LayerSpec::avgpool(), LayerSpec::flatten(), LayerSpec::linear(16, 6)},
                          torch::kFloat);
  auto r = quantize(*net, calib(16, 40), QuantizeOptions().observer(Observer::MinMax));
  Int8Net exec(*r.net);
  torch::NoGradGuard g;
  for (const int64_t size : {40, 57}) {  // odd size too: the pooling's padded border
    auto x = calib(4, size, 11);
    const auto yf = net->forward(x), yq = r.net->forward(x), y8 = exec->forward(x);
    const double range = yf.abs().max().item<double>();
    EXPECT_LE((y8 - yq).abs().max().item<double>() / range, 0.02) << size;
    EXPECT_LE((y8 - yf).abs().max().item<double>() / range, 0.08) << size;
  }
  // at 57x57 the u8 activations (4x32x57x57) are cached between forwards: a repeat allocates
  // nothing and computes the same bits, as does an executor without the cache
  auto x = calib(4, 57, 12);
  const auto first = exec->forward(x);
  const auto before = exec->buffer_cache_stats();
  EXPECT_GT(before.allocations, 0);
  EXPECT_TRUE(torch::equal(exec->forward(x), first));
  EXPECT_EQ(exec->buffer_cache_stats().allocations, before.allocations);
  EXPECT_GT(exec->buffer_cache_stats().reuses, before.reuses);
  Int8Net uncached(*r.net, 0);
  EXPECT_TRUE(torch::equal(uncached->forward(x), first));
  EXPECT_EQ(uncached->buffer_cache_stats().allocations, 0);
}

// The INT8 executor's direct oneDNN path (where rmnet links libdnnl) against its path over
// LibTorch's operators: depthwise, grouped, padded and strided convs, per-channel clamps, a
// float32-output conv into a PReLU fallback, asymmetric input zero points, equalized or not. The two
// compute the same integer products and may round a requantization differently by one step
// (oneDNN 2.x scales the accumulator plus a rescaled bias; LibTorch scales, then adds the bias).
TEST(Quantize, DirectInt8PathEqualsLibTorchsOperators) {
  if (!int8_runtime_available()) GTEST_SKIP() << "no oneDNN INT8 operators in this LibTorch";
  if (!onednn_direct_available()) GTEST_SKIP() << "this build has no direct oneDNN path";
  auto net = random_chain(mixed_specs(), torch::kFloat);
  for (const bool eqz : {false, true}) {
    auto r = quantize(*net, calib(64), QuantizeOptions().equalize(eqz).observer(Observer::MinMax));
    Int8Net direct(*r.net, DeployOptions()), ops(*r.net, DeployOptions().onednn_direct(false));
    EXPECT_NE(direct->graph().find("through oneDNN " + onednn_direct_version()), std::string::npos) << direct->graph();
    EXPECT_EQ(ops->graph().find("through oneDNN"), std::string::npos) << ops->graph();
    torch::NoGradGuard g;
    for (const auto& [n, size] : std::vector<std::pair<int64_t, int64_t>>{{16, 16}, {1, 24}, {16, 16}}) {
      const auto x = calib(n, size, 9 + n);
      const auto yd = direct->forward(x), yo = ops->forward(x), yq = r.net->forward(x);
      const double range = yq.abs().max().item<double>();
      EXPECT_LE((yd - yo).abs().max().item<double>() / range, 0.01) << n << " equalize " << eqz;
      EXPECT_LE((yd - yq).abs().max().item<double>() / range, 0.02) << n << " equalize " << eqz;
      EXPECT_GE(yd.argmax(1).eq(yo.argmax(1)).to(torch::kFloat).mean().item<double>(), 0.9) << n;
      EXPECT_GT((yd - yq).abs().max().item<double>(), 0.0);  // INT8 for real
    }
  }
}

TEST(Quantize, TinyMapsRunAsOneInt8Gemm) {
  // convs on 3x3, 2x2 and 1x1 maps (stride 2, padding, no padding, a 1x1 kernel, ReLU fused or
  // not, a float32 output into the head): the INT8 GEMM path computes the same integer products as
  // the qconv kernel, so both executors agree to within one output step, and both stay within the
  // quantization error of the float network, across batch sizes (the GEMMs are packed per shape)
  if (!int8_runtime_available()) GTEST_SKIP() << "no oneDNN INT8 operators in this LibTorch";
  auto net = random_chain({LayerSpec::conv(3, 16, 3, 2, 1), LayerSpec::relu(),   // 6x6 -> 3x3: a qconv
                           LayerSpec::conv(16, 24, 3, 2, 1), LayerSpec::relu(),  // 3x3 -> 2x2: 36 > 18, qconv
                           LayerSpec::conv(24, 32, 3, 1, 1), LayerSpec::relu(),  // 2x2 -> 2x2: GEMM
                           LayerSpec::conv(32, 32, 3, 1, 1),                     // GEMM, no activation
                           LayerSpec::conv(32, 40, 3, 2, 1), LayerSpec::relu(),  // 2x2 -> 1x1: GEMM
                           LayerSpec::conv(40, 48, 1, 1, 0), LayerSpec::relu(),  // 1x1 kernel on 1x1: GEMM
                           LayerSpec::avgpool(), LayerSpec::flatten(), LayerSpec::linear(48, 7)},
                          torch::kFloat);
  auto r = quantize(*net, calib(64, 6), QuantizeOptions().observer(Observer::MinMax));
  Int8Net gemm(*r.net), conv(*r.net, 1024, false);
  torch::NoGradGuard g;
  for (const int64_t n : {5, 2, 5}) {
    auto x = calib(n, 6, 20 + n);
    const auto yf = net->forward(x), yq = r.net->forward(x), y8 = gemm->forward(x), yc = conv->forward(x);
    const double range = yf.abs().max().item<double>();
    EXPECT_LE((y8 - yc).abs().max().item<double>() / range, 0.02) << n;
    EXPECT_LE((y8 - yq).abs().max().item<double>() / range, 0.02) << n;
    EXPECT_LE((y8 - yf).abs().max().item<double>() / range, 0.2) << n;  // seven random convs, MinMax
    EXPECT_GE(y8.argmax(1).eq(yc.argmax(1)).to(torch::kFloat).mean().item<double>(), 0.8) << n;
  }
  EXPECT_EQ(gemm->packed_gemms(), 4 * 2);  // four tiny-map convs, two batch sizes
  EXPECT_EQ(conv->packed_gemms(), 0);
  // the per-step profile (bench --profile): the GEMM convs named, layer ranges, the convs' MACs
  const auto prof = gemm->profile(calib(2, 6, 30), 0, 2);
  int64_t as_gemm = 0, macs = 0;
  for (const auto& t : prof) {
    as_gemm += t.name.find("(as one INT8 GEMM)") != std::string::npos;
    macs += t.macs;
    EXPECT_GE(t.ms, 0.0);
  }
  EXPECT_EQ(as_gemm, 4);
  EXPECT_EQ(macs, 2 * (16 * 9 * 27 + 24 * 4 * 144 + 32 * 4 * 216 + 32 * 4 * 288 + 40 * 288 + 48 * 40));
  ASSERT_FALSE(prof.empty());
  EXPECT_EQ(prof.front().name, "qconv 3x3 s2 3->16 + relu");
  EXPECT_EQ(prof.front().first_layer, 0u);
  EXPECT_EQ(prof.front().last_layer, 1u);
  EXPECT_EQ(prof.back().last_layer, 13u);  // the float32 head's linear
}

// Dirac shortcuts in the INT8 executor (DeployOptions::dirac_shortcuts; src/deploy/int8_shortcuts.h):
// the copies an RM block reserves are not computed, the merge conv B adds their term from tables of
// the block input's codes (identity blocks) or from a 1x1 qconv of their codes (downsample blocks).
// Every copy is requantized on its way, and equalization scales it: the tables carry that. The same
// function as the executor without shortcuts and as the float reference of the INT8 computation
// (QuantizedNet::forward), up to rounding ties, with and without equalization, at large
// activations; the MACs executed are the residual network's convolutions'.
// Batch tiling on the INT8 runtime (DeployOptions::batch_tiling, untimed: every step on maps one
// image at a time): cut only where no shortcut is live (fused identity adds and projections,
// bottlenecks, MobileNetV2's clamps); the same outputs as the whole batch throughout (each image's
// integer arithmetic does not depend on the batch) and the same MACs per step in the profile.
TEST(Quantize, BatchTilingComputesTheSameInt8Function) {
  if (!int8_runtime_available()) GTEST_SKIP() << "no oneDNN INT8 operators in this LibTorch";
  torch::NoGradGuard g;
  for (const std::string arch : {"resnet8", "resnet50", "mobilenet_v2_cifar"}) {
    SCOPED_TRACE(arch);
    auto m = rmnet::test::random_model(arch, torch::kFloat, true, 10, true);
    auto conv = convert(*m, ConvertOptions());
    ASSERT_TRUE(conv.report.passed) << conv.report.to_string();
    conv.plain->eval();
    torch::manual_seed(7);
    auto q = quantize(*conv.plain, 10 * torch::randn({16, 3, 32, 32}), QuantizeOptions().observer(Observer::MinMax));
    for (const bool shortcuts : {true, false}) {
      SCOPED_TRACE(shortcuts ? "shortcuts" : "every channel");
      const auto o = DeployOptions().dirac_shortcuts(shortcuts).dirac_shortcuts_timed(false);
      Int8Net tiled(*q.net, DeployOptions(o).batch_tiling(true).batch_tiling_timed(false));
      Int8Net whole(*q.net, DeployOptions(o).batch_tiling(false));
      const auto x = 10 * torch::randn({3, 3, 32, 32}), saved = x.clone();
      const auto a = tiled->forward(x), b = whole->forward(x);
      const double range = b.abs().max().item<double>();
      EXPECT_LE((a - b).abs().max().item<double>() / range, 1e-6);
      EXPECT_TRUE(x.equal(saved));
      const auto pt = tiled->profile(x, 0, 1), pw = whole->profile(x, 0, 1);
      ASSERT_EQ(pt.size(), pw.size());
      const size_t named = rmnet::test::tiled_steps(pt, pw);
      EXPECT_GE(named, pt.size() - 4) << pt.size();
      EXPECT_LT(named, pt.size());
      const auto one = x.narrow(0, 0, 1);  // batch 1: nothing to tile
      for (const auto& s : tiled->profile(one, 0, 1)) EXPECT_EQ(s.name.find("image at a time"), std::string::npos);
    }
  }
}

TEST(Quantize, DiracShortcutsComputeTheSameInt8Function) {
  if (!int8_runtime_available()) GTEST_SKIP() << "no oneDNN INT8 operators in this LibTorch";
  struct Case {
    std::string arch;
    bool relu6;
    size_t shortcuts;
    bool projections;
    std::vector<bool> equalize;
    bool exact;  // QuantizeOptions::exact_copies: the ResNets' copies pass their codes unchanged
  };
  // bottlenecks (A, grouped M, B); MobileNetV2 with ReLU6 (its copies pass a per-channel clamp) and
  // with ReLU (a PReLU of slopes 1 and 0: a ReLU on the branch once the copies go), whose block
  // inputs are signed: no exact copies there. resnet8 both ways: the tables and the fused adds.
  for (const auto& c : std::vector<Case>{{"resnet8", true, 3, true, {false, true}, true},
                                         {"resnet8", true, 3, true, {true}, false},
                                         {"resnet50", true, 16, true, {true}, true},
                                         {"mobilenet_v2_cifar", true, 10, false, {true}, true},
                                         {"mobilenet_v2_cifar", false, 10, false, {false, true}, true}}) {
    auto m = rmnet::test::random_model(c.arch, torch::kFloat, true, 10, c.relu6);
    auto conv = convert(*m, ConvertOptions());
    ASSERT_TRUE(conv.report.passed) << conv.report.to_string();
    auto plain = conv.plain;
    plain->eval();
    torch::manual_seed(7);
    const auto data = 10 * torch::randn({16, 3, 32, 32});
    for (const bool eqz : c.equalize) {
      SCOPED_TRACE(c.arch + (c.relu6 ? "" : " relu") + (eqz ? " equalized" : "") + (c.exact ? "" : " tables"));
      auto q = quantize(*plain, data, QuantizeOptions().equalize(eqz).observer(Observer::MinMax).exact_copies(c.exact));
      // exact copies everywhere but through a PReLU run (the ReLU MobileNetV2's: a float32 fallback
      // in the plan); MobileNetV2's signed block inputs at their zero point
      const bool exact = c.exact && (c.arch.rfind("resnet", 0) == 0 || c.relu6);
      EXPECT_EQ(q.exact_copy_blocks, exact ? static_cast<int64_t>(c.shortcuts) : 0);
      Int8Net on(*q.net, DeployOptions().dirac_shortcuts_timed(false)), off(*q.net, DeployOptions().dirac_shortcuts(false));
      const std::string graph = on->graph();
      EXPECT_NE(graph.find(std::to_string(c.shortcuts) + " INT8 Dirac shortcuts\n"), std::string::npos) << graph;
      EXPECT_NE(off->graph().find("0 INT8 Dirac shortcuts (off)"), std::string::npos) << off->graph();
      EXPECT_EQ(graph.find("the shortcut's projection") != std::string::npos, c.projections) << graph;
      // exact copies: every merge conv adds its shortcut itself (direct path), no table step left;
      // otherwise tables where the copies are requantized (a block whose copies set their points'
      // ranges can pass its codes unchanged by itself: min/max makes s_A = f s_x, and is fused too)
      if (exact && onednn_direct_available()) {
        EXPECT_EQ(graph.find("per-channel tables"), std::string::npos) << graph;
        EXPECT_NE(graph.find("its codes added in the conv"), std::string::npos) << graph;
        EXPECT_EQ(graph.find("its projection added in the conv") != std::string::npos, c.projections) << graph;
      } else {
        EXPECT_NE(graph.find("per-channel tables"), std::string::npos) << graph;
      }
      torch::NoGradGuard g;
      for (const auto& shape : std::vector<std::vector<int64_t>>{{3, 3, 32, 32}, {1, 3, 20, 12}}) {
        const auto x = 10 * torch::randn(shape);
        const auto a = on->forward(x), b = off->forward(x), ref = q.net->forward(x);
        const double range = ref.abs().max().item<double>();
        EXPECT_LE((a - b).abs().max().item<double>() / range, 0.02) << x.sizes();
        EXPECT_LE((a - ref).abs().max().item<double>() / range, 0.02) << x.sizes();
        EXPECT_TRUE(a.argmax(1).equal(ref.argmax(1))) << x.sizes();
      }
      {
        // the codes themselves, up to the end of the last shortcut block (no head: its codes
        // dequantized): the same as without shortcuts, but where a rounding tie fell the other way
        // (B's float sum is rounded once either way) and what that changed after it
        const auto blocks = rmnet::detail::find_int8_shortcuts(*q.net);
        ASSERT_EQ(blocks.size(), c.shortcuts);
        const size_t cut = q.net->plan().point_of(blocks.back()->b) + 1;
        QuantizedNet body(std::vector<LayerSpec>(q.net->specs().begin(), q.net->specs().begin() + cut),
                          q.net->options());
        body->input_scale_tensor.copy_(q.net->input_scale_tensor);
        body->input_zero_point_tensor.copy_(q.net->input_zero_point_tensor);
        for (size_t i = 0; i < cut; ++i)
          for (const auto& [name, t] : q.net->layer(i).tensors()) body->layer(i).get(name).copy_(t);
        Int8Net bon(*body, DeployOptions().dirac_shortcuts_timed(false)), boff(*body, DeployOptions().dirac_shortcuts(false));
        EXPECT_NE(bon->graph().find(std::to_string(c.shortcuts) + " INT8 Dirac shortcuts\n"), std::string::npos);
        const auto x = 10 * torch::randn({2, 3, 32, 32});
        const auto a = bon->forward(x), b = boff->forward(x), ref = body->forward(x);
        const double half = q.net->out_scale(cut - 1) / 2;
        const auto differ = [&](const torch::Tensor& u, const torch::Tensor& v) {
          return (u - v).abs().gt(half).to(torch::kFloat).mean().item<double>();
        };
        EXPECT_LE(differ(a, b), 0.005);
        // the executor's distance from its reference (ties, amplified by deep chains) is no larger
        EXPECT_LE(differ(a, ref), differ(b, ref) + 0.005);
        EXPECT_GT(a.abs().max().item<double>(), 10 * half);  // codes in use
      }
      // MACs: the residual network's convolutions (its Linear runs in the float head: no MACs counted)
      const auto x = torch::randn({2, 3, 32, 32});
      int64_t macs_on = 0, macs_off = 0;
      for (const auto& s : on->profile(x, 0, 1)) macs_on += s.macs;
      for (const auto& s : off->profile(x, 0, 1)) macs_off += s.macs;
      const auto& fc = plain->spec(plain->size() - 1);
      ASSERT_EQ(fc.kind, LayerKind::Linear);
      const int64_t linear = fc.in_channels * fc.out_channels;
      EXPECT_EQ(macs_off, 2 * (count_flops(*plain, 3, 32) - linear));
      EXPECT_EQ(macs_on, 2 * (count_flops(*m, 3, 32) - linear));
      // the default times both plans at the first forward of a shape and runs the faster: the same
      // bits as one of them
      Int8Net timed(*q.net, DeployOptions());
      EXPECT_NE(timed->graph().find("timed against computing every channel"), std::string::npos) << timed->graph();
      EXPECT_EQ(on->graph().find("timed against"), std::string::npos);
      for (int k = 0; k < 2; ++k) {
        const auto y = timed->forward(x);
        EXPECT_TRUE(torch::equal(y, on->forward(x)) || torch::equal(y, off->forward(x)));
      }
    }
  }
}

// Exact copies (QuantizeOptions::exact_copies, the default): in an RM block whose input is after a
// ReLU, each reserved channel is rescaled so that every conv on its way maps the block input's u8
// code to the same code (weight s_out / s_in at the centre tap: s8 127), the conv reading it
// compensating; the points the copies pass are calibrated on the branch channels. The float
// function is unchanged, the copies' tables are the identity on codes (so the INT8 executor adds
// them inside the merge conv), and the executor's codes are the every-channel plan's up to ties.
TEST(Quantize, ExactCopiesPassTheBlockInputsCodes) {
  if (!int8_runtime_available()) GTEST_SKIP() << "no oneDNN INT8 operators in this LibTorch";
  // MobileNetV2 (ReLU6): signed block inputs, their points at the block input's zero point
  for (const std::string arch : {"resnet8", "resnet50", "mobilenet_v2_cifar"}) {
    SCOPED_TRACE(arch);
    auto m = rmnet::test::random_model(arch, torch::kFloat, true, 10, true);
    auto plain = convert(*m, ConvertOptions()).plain;
    plain->eval();
    torch::manual_seed(11);
    const auto data = 20 * torch::randn({12, 3, 32, 32});
    auto q = quantize(*plain, data, QuantizeOptions().observer(Observer::MinMax));
    const auto sc = dirac_shortcuts(*q.float_net);
    ASSERT_EQ(q.exact_copy_blocks, static_cast<int64_t>(sc.size()));
    ASSERT_GE(sc.size(), 3u);
    EXPECT_EQ(q.net->metadata().at("quant.exact_copies"), std::to_string(sc.size()));
    torch::NoGradGuard g;
    // the float function is the converted network's (rescaling is exact up to float rounding)
    const auto y0 = plain->forward(data), y1 = q.float_net->forward(data);
    EXPECT_LE((y0 - y1).abs().max().item<double>(), 1e-4 * y0.abs().max().item<double>());
    const auto& plan = q.net->plan();
    const auto point_before = [&](size_t a) {  // the scale and zero point entering layer a
      std::pair<double, int64_t> s{q.net->input_scale(), q.net->input_zero_point()};
      for (size_t k = 0; k < a; ++k)
        if (plan.point[k]) s = {q.net->out_scale(k), q.net->out_zero_point(k)};
      return s;
    };
    bool signed_input = false;
    // every copy row: s8 127 at the centre tap, s_in * weight == s_out; the point calibrated on the
    // branch rows alone (min/max: their largest value / 255)
    auto h = data;
    std::vector<torch::Tensor> outs;  // the float network's output of every layer
    for (size_t i = 0; i < q.float_net->size(); ++i) outs.push_back(h = q.float_net->forward_range(h, i, i + 1));
    for (const auto& blk : sc) {
      for (size_t t = 0; t + 1 < blk.convs.size(); ++t) {
        const size_t c = blk.convs[t];
        const auto& spec = q.net->spec(c);
        const auto w = q.net->tensor(c, "weight"), ws = q.net->tensor(c, "weight_scale");
        const size_t point = plan.point_of(c);
        const auto [s_in, z] = point_before(blk.convs[0]);
        const double s_out = q.net->out_scale(point);
        EXPECT_EQ(q.net->out_zero_point(point), z);  // the block input's zero point all the way
        signed_input = signed_input || z > 0;
        std::vector<int64_t> branch;
        for (int64_t r = 0; r < spec.out_channels; ++r) {
          if (blk.copies[t][r] < 0) {
            branch.push_back(r);
            continue;
          }
          EXPECT_EQ(w[r].abs().sum().item<int64_t>(), 127);
          EXPECT_EQ(w[r].select(1, spec.kernel / 2).select(1, spec.kernel / 2).max().item<int64_t>(), 127);
          EXPECT_NEAR(point_before(c).first * ws[r].item<double>() * 127 / s_out, 1.0, 1e-6);
        }
        // min/max on the branch rows alone, at zero point z: the smallest scale holding them
        const auto bv = outs[point].index_select(1, torch::tensor(branch));
        const double hi = std::max(0.0, bv.max().item<double>()), lo = std::min(0.0, bv.min().item<double>());
        const double want = std::max(z < 255 ? hi / (255 - z) : 0.0, z > 0 ? -lo / z : 0.0);
        EXPECT_NEAR(q.net->out_scale(point), want, 1e-6 * want) << "layer " << c;
      }
    }
    EXPECT_EQ(signed_input, arch == "mobilenet_v2_cifar");
    // the executor's view: identity tables linear in the code, projections reading the codes as they are
    const auto blocks = rmnet::detail::find_int8_shortcuts(*q.net);
    ASSERT_EQ(blocks.size(), sc.size());
    for (const auto& b : blocks) {
      if (b->identity) {
        ASSERT_TRUE(b->add_factor.defined());
        const auto codes = torch::arange(256, torch::kFloat).view({1, -1}) - static_cast<double>(b->add_zp);
        EXPECT_TRUE(b->add_factor.gt(0).all().item<bool>());  // every row adds its copy
        EXPECT_TRUE(b->add_bias.eq(0).all().item<bool>());
        EXPECT_TRUE(torch::allclose(b->table, b->add_factor.view({-1, 1}) * codes, 1e-5, 1e-6));
      } else {
        EXPECT_TRUE(b->codes_pass);
      }
    }
    // with exact copies off, the copies are requantized at their points' scales (percentile: not
    // the copies' own range): tables, not linear
    auto q_off = quantize(*plain, data, QuantizeOptions().exact_copies(false));
    EXPECT_EQ(q_off.exact_copy_blocks, 0);
    EXPECT_EQ(q_off.net->metadata().at("quant.exact_copies"), "off");
    int64_t linear = 0;
    for (const auto& b : rmnet::detail::find_int8_shortcuts(*q_off.net)) linear += b->add_factor.defined() || b->codes_pass;
    EXPECT_LT(linear, static_cast<int64_t>(sc.size()));
    // the fused plan against computing every channel: the same outputs up to ties, at 20x inputs
    Int8Net on(*q.net, DeployOptions().dirac_shortcuts_timed(false)), off(*q.net, DeployOptions().dirac_shortcuts(false));
    const auto x = 20 * torch::randn({4, 3, 32, 32});
    const auto a = on->forward(x), b = off->forward(x), ref = q.net->forward(x);
    const double range = ref.abs().max().item<double>();
    EXPECT_LE((a - b).abs().max().item<double>() / range, 0.02);
    EXPECT_TRUE(a.argmax(1).equal(b.argmax(1)));
    EXPECT_TRUE(a.argmax(1).equal(ref.argmax(1)));
    // where oneDNN cannot make a fused merge conv (forced by RMNET_INT8_FUSED_ADD=0), B runs to float32
    // and the shortcut's table (identity) or term (projection) is added: the same outputs
    if (onednn_direct_available()) {
      ASSERT_EQ(setenv("RMNET_INT8_FUSED_ADD", "0", 1), 0);
      Int8Net fallback(*q.net, DeployOptions().dirac_shortcuts_timed(false));
      const auto c = fallback->forward(x);
      unsetenv("RMNET_INT8_FUSED_ADD");
      EXPECT_NE(fallback->graph().find("its codes added in the conv"), std::string::npos);
      EXPECT_LE((a - c).abs().max().item<double>() / range, 0.02);
      EXPECT_TRUE(a.argmax(1).equal(c.argmax(1)));
      // and the fused plan with the variable unset again
      EXPECT_TRUE(torch::equal(on->forward(x), a));
    }
  }
}

// A pruned RM network's blocks: some merge rows have lost their copy (the pruner removed a reserve
// that was exactly zero: a shortcut scale <= 0) and some copies are constants (a reserve whose weight
// is ~0, here a shortcut scale of 1e-8, beside a bias or not: one code whatever the input). Their
// rows are still linear in the block input's codes (factor 0, the constant term in B's bias), so
// the merge conv adds the shortcut itself (the direct path's binary add, mul and sub): no table
// step, the same codes as the table path and as computing every channel, up to rounding ties.
TEST(Quantize, PrunedAndConstantCopiesAreAddedInTheConv) {
  if (!int8_runtime_available()) GTEST_SKIP() << "no oneDNN INT8 operators in this LibTorch";
  torch::manual_seed(31);
  auto residual = create_model(ModelOptions("resnet20").num_classes(10).track_block_stats(true).shortcut_scale(true));
  randomize_batchnorm(*residual, 32);
  {
    torch::NoGradGuard g;
    for (auto& p : residual->named_parameters())
      if (p.key().ends_with("shortcut_scale")) {
        p.value().uniform_(-1.0, 1.75);
        p.value()[1] = 1e-8;  // a dead reserve in every block
      }
  }
  residual->eval();
  auto net = convert(*residual, ConvertOptions().keep_bn(true)).plain;
  net->eval();
  // the reserves with a ~0 weight: every other one gets a bias (a constant copy of 3)
  int64_t constants = 0, dead = 0;
  {
    torch::NoGradGuard g;
    const auto units = prune_units(*net);
    for (const auto& u : units) {
      auto bn = net->layer_as<torch::nn::BatchNorm2dImpl>(u.importance);
      for (int64_t c = 0; c < u.channels; ++c) {
        const double gamma = bn->weight[c].item<double>();
        if (net->origin(u.producer).role(c) != ChannelRole::Reserved || gamma <= 0 || gamma > 1e-6) continue;
        if (dead++ % 2 == 0) {
          bn->bias[c] = 3.0 + bn->running_mean[c].item<double>() * gamma / std::sqrt(bn->running_var[c].item<double>() + bn->options.eps());
          ++constants;
        }
      }
    }
  }
  ASSERT_GE(dead, 6);
  // the exact zeros removed (and nothing else): merge rows without a copy
  auto pr = prune(*net, PruneOptions().threshold(1e-300).executed_macs(true));
  ASSERT_GT(pr.report.channels_removed, 10);
  auto& pruned = *pr.net;
  pruned.eval();
  torch::manual_seed(33);
  const auto data = 4 * torch::randn({16, 3, 32, 32});
  auto q = quantize(pruned, data, QuantizeOptions());
  const auto blocks = rmnet::detail::find_int8_shortcuts(*q.net);
  ASSERT_EQ(blocks.size(), 9u);
  int64_t missing = 0, constant_rows = 0, identity = 0, uncopied = 0;
  for (const auto& b : blocks) {
    if (!b->identity) {
      // a projection: a 1x1 conv of the kept input whose columns are the copies' (zero where a
      // channel has no copy)
      ASSERT_TRUE(b->codes_pass) << "block at layer " << b->a;
      ASSERT_EQ(b->kept_weight_s8.size(1), q.net->spec(b->a).in_channels);
      const auto kw = b->kept_weight_s8.flatten(1);  // [O, C]
      const auto constant = b->lut.eq(b->lut.narrow(1, 0, 1)).all(1);
      std::vector<bool> copied(kw.size(1), false);
      for (size_t t = 0; t < b->xs.size(); ++t) {
        if (constant[t].item<bool>()) continue;
        copied[b->xs[t]] = true;
        EXPECT_TRUE(kw.select(1, b->xs[t]).equal(b->weight_s8.select(1, t).flatten()));
      }
      int64_t zero_cols = 0;
      for (int64_t ch = 0; ch < kw.size(1); ++ch)
        if (!copied[ch]) {
          EXPECT_FALSE(kw.select(1, ch).ne(0).any().item<bool>());
          ++zero_cols;
        }
      EXPECT_GE(zero_cols, kw.size(1) - static_cast<int64_t>(b->xs.size()));
      uncopied += kw.size(1) - static_cast<int64_t>(b->xs.size());  // channels whose reserve was pruned
      continue;
    }
    ++identity;
    ASSERT_TRUE(b->add_factor.defined()) << "block at layer " << b->a;
    EXPECT_TRUE(b->add_factor.ge(0).all().item<bool>());
    // the table the executor would otherwise read is the linear term, row for row
    const auto codes = torch::arange(256, torch::kFloat).view({1, -1}) - static_cast<double>(b->add_zp);
    EXPECT_TRUE(torch::allclose(b->table, b->add_factor.view({-1, 1}) * codes + b->add_bias.view({-1, 1}), 1e-5, 1e-5));
    for (int64_t o = 0; o < b->add_factor.size(0); ++o) {
      if (b->add_factor[o].item<float>() > 0) continue;
      if (b->src[o] < 0) ++missing;
      if (b->add_bias[o].item<float>() != 0) ++constant_rows;
    }
  }
  EXPECT_EQ(identity, 7);
  EXPECT_GT(missing, 3);
  EXPECT_GT(constant_rows, 0);
  EXPECT_LE(constant_rows, constants);
  EXPECT_GT(uncopied, 0);

  // codes up to the end of the last block (the head dequantizes): fused, the table path and every channel
  const size_t cut = q.net->plan().point_of(blocks.back()->b) + 1;
  QuantizedNet body(std::vector<LayerSpec>(q.net->specs().begin(), q.net->specs().begin() + cut), q.net->options());
  body->input_scale_tensor.copy_(q.net->input_scale_tensor);
  body->input_zero_point_tensor.copy_(q.net->input_zero_point_tensor);
  for (size_t i = 0; i < cut; ++i)
    for (const auto& [name, t] : q.net->layer(i).tensors()) body->layer(i).get(name).copy_(t);
  Int8Net on(*body, DeployOptions().dirac_shortcuts_timed(false)), off(*body, DeployOptions().dirac_shortcuts(false));
  const std::string graph = on->graph();
  EXPECT_NE(graph.find("9 INT8 Dirac shortcuts\n"), std::string::npos) << graph;
  if (onednn_direct_available()) EXPECT_EQ(graph.find("per-channel tables"), std::string::npos) << graph;
  torch::NoGradGuard g;
  const auto x = 1 * torch::randn({3, 3, 32, 32});
  const auto a = on->forward(x), b = off->forward(x), ref = body->forward(x);
  const double half = q.net->out_scale(cut - 1) / 2;
  const auto differ = [&](const torch::Tensor& u, const torch::Tensor& v) {
    return (u - v).abs().gt(half).to(torch::kFloat).mean().item<double>();
  };
  EXPECT_GT(a.abs().max().item<double>(), 10 * half);  // codes in use
  // every channel computed: the same codes but where a rounding tie fell the other way (and what that
  // changed after it, amplified by 19 convs of random weights); the executor no further from its
  // reference than that plan
  EXPECT_LE(differ(a, b), 0.01);
  EXPECT_LE(differ(a, ref), differ(b, ref) + 0.01);
  if (onednn_direct_available()) {
    // the table path (B to float32, then the tables and the copies' projection): the same sums
    ASSERT_EQ(setenv("RMNET_INT8_FUSED_ADD", "0", 1), 0);
    Int8Net tables(*body, DeployOptions().dirac_shortcuts_timed(false));
    const auto c = tables->forward(x);
    unsetenv("RMNET_INT8_FUSED_ADD");
    EXPECT_LE(differ(a, c), 0.002);
  }
  // and the whole network's predictions
  Int8Net whole(*q.net, DeployOptions().dirac_shortcuts_timed(false));
  EXPECT_TRUE(whole->forward(x).argmax(1).equal(q.net->forward(x).argmax(1)));
}

TEST(Quantize, SEAndNoHeadChains) {
  if (!int8_runtime_available()) GTEST_SKIP() << "no oneDNN INT8 operators in this LibTorch";
  auto net = random_chain({LayerSpec::conv(3, 8, 3, 1, 1), LayerSpec::relu(), LayerSpec::se(8, 6, 2),
                           LayerSpec::conv(8, 8, 3, 1, 1), LayerSpec::clamp(8)},
                          torch::kFloat);
  auto r = quantize(*net, calib(32), QuantizeOptions().observer(Observer::Percentile));
  EXPECT_EQ(r.net->fallbacks().size(), 1u);
  Int8Net exec(*r.net);
  auto x = calib(4, 16, 7);
  torch::NoGradGuard g;
  const auto yf = net->forward(x), y8 = exec->forward(x);
  EXPECT_EQ(y8.sizes(), yf.sizes());
  EXPECT_LE((y8 - yf).abs().max().item<double>() / yf.abs().max().item<double>(), 0.08);
  EXPECT_LE((y8 - r.net->forward(x)).abs().max().item<double>() / yf.abs().max().item<double>(), 0.02);
}

TEST(Quantize, ModelFileRoundTripAndRuntime) {
  auto net = random_chain(mixed_specs(), torch::kFloat);
  net->metadata()["preprocess.mean"] = "0.5";
  auto r = quantize(*net, calib(32));
  const auto path = test::temp_path("q.rmnet");
  save_model(*r.net, path);
  auto loaded = load_model(path);
  std::filesystem::remove(path);
  auto* q = dynamic_cast<QuantizedNetImpl*>(loaded.get());
  ASSERT_NE(q, nullptr);
  EXPECT_EQ(q->metadata().at("preprocess.mean"), "0.5");
  EXPECT_EQ(q->metadata().at("quant.observer"), "percentile");
  EXPECT_EQ(q->metadata().at("quant.equalize"), "activations");
  EXPECT_EQ(q->tensor(0, "weight").scalar_type(), torch::kChar);
  EXPECT_TRUE(torch::equal(q->tensor(0, "weight"), r.net->tensor(0, "weight")));
  EXPECT_EQ(q->input_scale(), r.net->input_scale());
  size_t point = 0;
  while (!q->plan().point[point]) ++point;
  EXPECT_EQ(q->out_zero_point(point), r.net->out_zero_point(point));
  EXPECT_EQ(q->out_scale(point), r.net->out_scale(point));
  auto x = calib(3, 16, 4);
  torch::NoGradGuard g;
  EXPECT_TRUE(torch::equal(q->forward(x), r.net->forward(x)));
  if (int8_runtime_available()) {
    auto runner = prepare_inference(loaded, Runtime::Auto);
    EXPECT_NE(dynamic_cast<Int8NetImpl*>(runner.get()), nullptr);
    EXPECT_EQ(prepare_inference(loaded, Runtime::Eager).get(), loaded.get());
  }
  EXPECT_NE(test::error_of([&] { prepare_inference(net.ptr(), Runtime::Int8); }).find("quantize"), std::string::npos);
}

TEST(Quantize, Errors) {
  auto residual = test::random_model("resnet20");
  EXPECT_NE(test::error_of([&] { quantize(*residual, calib(4, 32)); }).find("residual model"), std::string::npos);
  auto net = random_chain(mixed_specs(), torch::kFloat);
  EXPECT_NE(test::error_of([&] { quantize(*net, torch::empty({0, 3, 16, 16})); }).find("empty"), std::string::npos);
  EXPECT_NE(test::error_of([&] { quantize(*net, torch::Tensor()); }).find("empty"), std::string::npos);
  TensorDataset empty(torch::zeros({0, 3, 8, 8}, torch::kByte), torch::zeros({0}, torch::kLong), 5);
  Transform id = [](const torch::Tensor& t, Rng&) { return t.to(torch::kFloat); };
  EXPECT_NE(test::error_of([&] { calibration_images(empty, id, 16); }).find("empty"), std::string::npos);
  TensorDataset some(torch::randint(0, 255, {10, 3, 8, 8}).to(torch::kByte), torch::zeros({10}, torch::kLong), 5);
  EXPECT_EQ(calibration_images(some, id, 16).size(0), 10);
  EXPECT_EQ(calibration_images(some, id, 4).sizes(), (std::vector<int64_t>{4, 3, 8, 8}));
}
