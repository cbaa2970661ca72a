// Network slimming on plain networks (include/rmnet/prune/slim.h): exact removal of dead channels,
// folding the constant a removed channel leaves behind, the importance rule, and the residual
// baseline (include/rmnet/prune/residual_baseline.h). The selection controls (targets, caps,
// rounding) are in test_prune_controls.cpp.
#include <gtest/gtest.h>

#include <limits>
#include <set>

#include "helpers.h"
#include "rmnet/convert/rm.h"
#include "rmnet/deploy/runtime.h"
#include "rmnet/io/model_file.h"
#include "rmnet/models/profile.h"
#include "rmnet/prune/residual_baseline.h"
#include "rmnet/prune/slim.h"
#include "rmnet/train/trainer.h"

namespace rmnet {
namespace {
using test::error_of;
using test::plain_bn_of;
using test::random_model;
using test::rel_diff;

/// Zeroes (gamma = 0, beta <= 0) about a third of the channels of every unit whose activation after
/// the importance BN maps such a channel to exactly zero (ReLU, or a clamp with min 0); returns how
/// many channels it zeroed.
int64_t kill_channels(PlainNet& net) {
  int64_t killed = 0;
  torch::NoGradGuard g;
  for (const auto& u : prune_units(*net)) {
    auto bn = net->layer_as<torch::nn::BatchNorm2dImpl>(u.importance);
    const auto& act = net->spec(u.importance + 1);
    torch::Tensor lo;
    if (act.kind == LayerKind::Clamp)
      lo = net->layer_as<ChannelClampImpl>(u.importance + 1)->min;
    else if (act.kind != LayerKind::ReLU)
      continue;
    for (int64_t c = 1; c < u.channels; c += 3) {
      if (lo.defined() && lo[c].item<double>() != 0.0) continue;
      bn->weight[c] = 0.0;
      bn->bias[c] = -std::abs(bn->bias[c].item<double>());
      ++killed;
    }
  }
  return killed;
}

torch::Tensor input(torch::ScalarType dtype = torch::kDouble) {
  torch::manual_seed(7);
  return torch::randn({2, 3, 32, 32}, torch::TensorOptions().dtype(dtype));
}

TEST(Prune, RatioZeroChangesNothing) {
  for (const std::string arch : {"resnet20", "mobilenet_v2_cifar"}) {
    auto net = plain_bn_of(arch);
    auto r = prune(*net, PruneOptions().ratio(0.0));
    EXPECT_EQ(r.report.channels_removed, 0) << arch;
    EXPECT_EQ(r.net->specs(), net->specs()) << arch;
    EXPECT_EQ(count_parameters(*r.net), count_parameters(*net));
    EXPECT_EQ(rel_diff(*net, *r.net, input()), 0.0) << arch;
  }
}

TEST(Prune, DeadChannelsAreRemovedExactly) {
  for (const std::string arch : {"resnet20", "mobilenet_v2_cifar", "rmnet26x3_32"}) {
    for (auto dtype : {torch::kDouble, torch::kFloat}) {
      auto net = plain_bn_of(arch, dtype);
      const int64_t killed = kill_channels(net);
      ASSERT_GT(killed, 10) << arch;
      for (auto rule : {PruneImportance::Gamma, PruneImportance::Contribution}) {
        auto r = prune(*net, PruneOptions().threshold(1e-12).importance(rule));
        // grouped units keep equal counts per group, so they may keep some dead channels; the
        // contribution rule also finds the channels that only feed dead outputs (a reserved channel
        // whose Dirac weight reaches a merge output with gamma 0), so it removes at least as many
        if (arch != "rmnet26x3_32" && rule == PruneImportance::Gamma) EXPECT_EQ(r.report.channels_removed, killed) << arch;
        if (arch != "rmnet26x3_32") EXPECT_GE(r.report.channels_removed, killed) << arch;
        EXPECT_GT(r.report.channels_removed, killed / 2) << arch;
        EXPECT_LT(r.report.params_after, r.report.params_before) << arch;
        EXPECT_LT(rel_diff(*net, *r.net, input(dtype)), test::tolerance_for(dtype)) << arch << " " << to_string(rule);
      }
    }
  }
}

TEST(Prune, ShapesConsistentSaveLoadRun) {
  for (const std::string arch : {"resnet20", "mobilenet_v2_cifar", "rmnet26x3_32"}) {
    auto net = plain_bn_of(arch, torch::kFloat);
    auto r = prune(*net, PruneOptions().ratio(0.5).keep_one(true));
    EXPECT_GT(r.report.channels_removed, r.report.channels_total / 3) << arch;
    EXPECT_LT(r.report.params_after, r.report.params_before) << arch;
    check_chain(r.net->specs(), 3);
    bool grouped = false, depthwise = false;
    for (const auto& s : r.net->specs()) {
      if (s.kind != LayerKind::Conv) continue;
      EXPECT_GE(s.out_channels, s.groups) << arch << " " << s.describe();
      EXPECT_EQ(s.in_channels % s.groups, 0) << arch << " " << s.describe();
      EXPECT_EQ(s.out_channels % s.groups, 0) << arch << " " << s.describe();
      if (s.groups > 1 && s.groups == s.in_channels) depthwise = true;
      if (s.groups > 1 && s.groups != s.in_channels) grouped = true;
    }
    if (arch == "mobilenet_v2_cifar") EXPECT_TRUE(depthwise);
    if (arch == "rmnet26x3_32") EXPECT_TRUE(grouped);
    EXPECT_EQ(r.net->metadata().at("pruned_channels"),
              std::to_string(r.report.channels_removed) + "/" + std::to_string(r.report.channels_total));
    const auto path = test::temp_path("pruned_" + arch + ".rmnet");
    save_model(*r.net, path);
    auto back = load_model(path);
    std::filesystem::remove(path);
    auto x = input(torch::kFloat);
    r.net->eval();
    EXPECT_EQ(r.net->forward(x).sizes(), (std::vector<int64_t>{2, 10}));
    EXPECT_EQ(rel_diff(*r.net, *back, x), 0.0) << arch;
    EXPECT_EQ(back->metadata().at("pruned_ratio"), r.net->metadata().at("pruned_ratio"));
  }
}

TEST(Prune, GroupedUnitsKeepEqualChannelsPerGroup) {
  auto net = plain_bn_of("rmnet26x3_32", torch::kFloat);
  auto r = prune(*net, PruneOptions().ratio(0.3).keep_one(true));
  int64_t checked = 0;
  for (const auto& u : r.report.units) {
    if (u.groups == 1) continue;
    const int64_t per = u.channels / u.groups;
    std::vector<int64_t> count(u.groups, 0);
    for (auto c : u.kept) ++count[c / per];
    for (auto n : count) EXPECT_EQ(n, count.front()) << "unit at layer " << u.producer;
    ++checked;
  }
  EXPECT_GT(checked, 0);
}

TEST(Prune, NeverBelowOneChannel) {
  auto net = plain_bn_of("resnet8", torch::kFloat);
  auto r = prune(*net, PruneOptions().threshold(1e9).keep_one(true));
  for (const auto& u : r.report.units) EXPECT_EQ(static_cast<int64_t>(u.kept.size()), u.groups);
  EXPECT_EQ(r.net->forward(input(torch::kFloat)).sizes(), (std::vector<int64_t>{2, 10}));
}

TEST(Prune, BadInput) {
  auto residual = random_model("resnet8");
  EXPECT_NE(error_of([&] { prune(*residual, PruneOptions().ratio(0.5)); }).find("convert it first"), std::string::npos);
  auto fused = convert(*residual, ConvertOptions().keep_bn(false)).plain;
  EXPECT_NE(error_of([&] { prune(*fused, PruneOptions().ratio(0.5)); }).find("no BatchNorm"), std::string::npos);
  auto net = plain_bn_of("resnet8", torch::kFloat);
  EXPECT_NE(error_of([&] { prune(*net, PruneOptions().ratio(1.0)); }).find("[0, 1)"), std::string::npos);
  EXPECT_NE(error_of([&] { prune(*net, PruneOptions()); }).find("exactly one"), std::string::npos);
  EXPECT_NE(error_of([&] { prune(*net, PruneOptions().ratio(0.5).threshold(0.1)); }).find("exactly one"),
            std::string::npos);
  EXPECT_NE(error_of([&] { prune(*net, PruneOptions().ratio(0.5).target_macs(0.5)); }).find("exactly one"),
            std::string::npos);
  EXPECT_NE(error_of([&] { prune(*net, PruneOptions().target_macs(0.0)); }).find("target_macs must be in (0, 1]"),
            std::string::npos);
  EXPECT_NE(error_of([&] { prune(*net, PruneOptions().target_params(1.5)); }).find("target_params"),
            std::string::npos);
  EXPECT_NE(error_of([&] { prune(*net, PruneOptions().ratio(0.5).max_layer_ratio(0.0)); }).find("max_layer_ratio"),
            std::string::npos);
  EXPECT_NE(error_of([&] { prune(*net, PruneOptions().ratio(0.5).round_to(0)); }).find("round_to"),
            std::string::npos);
  EXPECT_NE(error_of([&] { prune(*net, PruneOptions().threshold(0.1).scope(PruneScope::Layer)); }).find("scope"),
            std::string::npos);
  EXPECT_NE(error_of([&] { prune(*net, PruneOptions().target_params(1e-6)); }).find("cannot be reached"),
            std::string::npos);
  const auto e = error_of([&] { prune(*net, PruneOptions().threshold(1e9)); });
  EXPECT_NE(e.find("would remove every channel of layer 0"), std::string::npos) << e;
  // a ratio that empties a layer: one unit with tiny gammas
  {
    torch::NoGradGuard g;
    net->layer_as<torch::nn::BatchNorm2dImpl>(1)->weight.fill_(1e-6);
  }
  EXPECT_NE(error_of([&] { prune(*net, PruneOptions().ratio(0.1)); }).find("every channel of layer 0"),
            std::string::npos);
}

TEST(Prune, DeployedNetworkIsRefusedClearly) {
  // A DeployedNet calls itself "plain" but is not a PlainNet: a clear error, not std::bad_cast.
  auto net = plain_bn_of("resnet8", torch::kFloat);
  auto deployed = deploy(*net);
  const auto e = error_of([&] { prune(*deployed, PruneOptions().ratio(0.5)); });
  EXPECT_NE(e.find("deployed"), std::string::npos) << e;
}

TEST(Prune, ResidualBaselinePrunesOnlyInBlockChannels) {
  auto m = random_model("resnet20", torch::kFloat);
  auto r = prune_residual(*m, PruneOptions().ratio(0.5));
  // resnet20: 3 stages x 3 BasicBlocks, bn1 widths 16, 32, 64
  EXPECT_EQ(r.plain.report.channels_total, 3 * (16 + 32 + 64));
  EXPECT_EQ(r.plain.report.channels_removed, 3 * (16 + 32 + 64) / 2);
  EXPECT_EQ(r.residual_params_before, count_parameters(*m));
  // each removed bn1 channel of a block of width w: 9w (conv1 filter) + 2 (BN) + 9w (conv2 input)
  EXPECT_LT(r.residual_params_after, r.residual_params_before);
  auto ratio0 = prune_residual(*m, PruneOptions().ratio(0.0));
  EXPECT_EQ(ratio0.residual_params_after, ratio0.residual_params_before);
  EXPECT_LT(rel_diff(*m, *ratio0.plain.net, input(torch::kFloat)), 1e-4);
  // the residual stream is never cut: every merge conv keeps its outputs
  auto plain = reserve_merge(*m, DownsampleMode::Type2, false);
  size_t convs = 0;
  for (size_t i = 0; i < plain->size(); ++i) {
    if (plain->spec(i).kind != LayerKind::Conv) continue;
    if (++convs % 2 == 0) {  // conv1 of a block: only its first w (in-block) outputs go
      EXPECT_LE(r.plain.net->spec(i).out_channels, plain->spec(i).out_channels);
    } else {
      EXPECT_EQ(r.plain.net->spec(i).out_channels, plain->spec(i).out_channels) << "layer " << i;
    }
  }
  auto mb = random_model("mobilenet_v2_cifar", torch::kFloat);
  auto rb = prune_residual(*mb, PruneOptions().ratio(0.3));
  EXPECT_GT(rb.plain.report.channels_removed, 0);
  EXPECT_LT(rb.residual_params_after, rb.residual_params_before);
  EXPECT_EQ(rb.plain.net->forward(input(torch::kFloat)).sizes(), (std::vector<int64_t>{2, 10}));
  EXPECT_NE(error_of([&] { prune_residual(*plain, PruneOptions().ratio(0.5)); }).find("already a plain"),
            std::string::npos);
}

}  // namespace
}  // namespace rmnet

namespace rmnet {
namespace {

ModelPtr scaled_model(const std::string& arch, torch::ScalarType dtype) {
  torch::manual_seed(3);
  auto m = create_model(ModelOptions(arch).num_classes(10).track_block_stats(true).shortcut_scale(true));
  randomize_batchnorm(*m, 5);
  torch::NoGradGuard g;
  int64_t n = 0;
  for (auto& p : m->named_parameters())
    if (p.key().ends_with("shortcut_scale")) {
      p.value().uniform_(-0.5, 1.5);
      ++n;
    }
  EXPECT_GT(n, 2) << arch;
  m->to(dtype);
  m->eval();
  return m;
}

TEST(Prune, ShortcutScaleFoldsExactly) {
  for (const std::string arch : {"resnet20", "resnet50"}) {
    for (auto dtype : {torch::kDouble, torch::kFloat}) {
      auto m = scaled_model(arch, dtype);
      torch::manual_seed(9);
      auto x = torch::randn({2, 3, 32, 32}, torch::TensorOptions().dtype(dtype));
      for (auto mode : {DownsampleMode::Type1, DownsampleMode::Type2}) {
        for (bool keep_bn : {true, false}) {
          auto r = convert(*m, ConvertOptions().keep_bn(keep_bn).downsample(mode).verify(false));
          EXPECT_LT(test::rel_diff(*m, *r.plain, x), test::tolerance_for(dtype))
              << arch << " type " << static_cast<int>(mode) << " keep_bn " << keep_bn;
        }
      }
    }
  }
  // the reserved channels' BN gamma carries the scale: gamma = max(s, 0) * sqrt(var + eps) (a scale <= 0
  // reserves relu(s * x) = 0 for the block's non-negative input: an exact zero)
  auto m = scaled_model("resnet20", torch::kDouble);
  auto plain = reserve_merge(*m);
  auto block = m->named_modules()["layer1.0"];
  auto s = block->named_parameters()["shortcut_scale"];
  auto var = block->named_buffers()["rm_in_var"];
  auto bn = plain->layer_as<torch::nn::BatchNorm2dImpl>(4);  // conv, bn, relu, block conv1, its bn
  EXPECT_TRUE(torch::allclose(bn->weight.slice(0, 16), torch::relu(s) * torch::sqrt(var + 1e-5), 1e-12, 1e-12));
  EXPECT_GT(s.le(0).sum().item<int64_t>(), 0);
}

TEST(Prune, SparsitySubgradient) {
  auto m = scaled_model("resnet8", torch::kFloat);
  for (auto& p : m->parameters()) p.mutable_grad() = torch::zeros_like(p);
  add_sparsity_subgradient(*m, 0.01);
  int64_t bns = 0, scales = 0;
  for (auto& p : m->named_parameters()) {
    const auto& k = p.key();
    const bool bn_weight = k.find("bn") != std::string::npos && k.ends_with("weight");
    const bool ds_bn = k.find("downsample.1.weight") != std::string::npos;
    if (bn_weight || ds_bn || k.ends_with("shortcut_scale")) {
      EXPECT_TRUE(torch::equal(p.value().grad(), 0.01 * torch::sign(p.value()))) << k;
      (k.ends_with("shortcut_scale") ? scales : bns)++;
    } else {
      EXPECT_EQ(p.value().grad().abs().sum().item<double>(), 0.0) << k;
    }
  }
  EXPECT_EQ(bns, 1 + 3 * 2 + 2);  // stem, 3 BasicBlocks x 2, 2 downsample BNs
  EXPECT_EQ(scales, 3);
}

}  // namespace
}  // namespace rmnet

namespace rmnet {
namespace {

/// A chain with every kind of path a removed channel's constant takes: a clamp with clipped and
/// unclipped channels and a padded max pool before a grouped 1x1 consumer, a PReLU before a grouped
/// unpadded 3x3 consumer, a tied depthwise conv before the linear head. Random weights and BN.
PlainNet fold_chain(torch::ScalarType dtype) {
  const double inf = std::numeric_limits<double>::infinity();
  std::vector<LayerSpec> L = {LayerSpec::conv(3, 8, 3, 1, 1, 1, false), LayerSpec::batchnorm(8),
                              LayerSpec::clamp(8), LayerSpec::maxpool(3, 1, 1),
                              LayerSpec::conv(8, 12, 1, 1, 0, 2, false), LayerSpec::batchnorm(12),
                              LayerSpec::prelu(12), LayerSpec::conv(12, 8, 3, 1, 0, 4, false),
                              LayerSpec::batchnorm(8), LayerSpec::relu(), LayerSpec::conv(8, 8, 3, 1, 1, 8, false),
                              LayerSpec::batchnorm(8), LayerSpec::relu(), LayerSpec::avgpool(), LayerSpec::flatten(),
                              LayerSpec::linear(8, 5)};
  torch::manual_seed(11);
  PlainNet net(L, ModelOptions("plain").num_classes(5));
  randomize_batchnorm(*net, 12);
  torch::NoGradGuard g;
  auto clamp = net->layer_as<ChannelClampImpl>(2);
  clamp->min.copy_(torch::tensor({0.0, 0.0, 0.0, 0.0, -inf, -inf, -inf, -inf}));
  clamp->max.copy_(torch::tensor({6.0, 6.0, 6.0, 6.0, inf, inf, inf, inf}));
  net->layer_as<torch::nn::PReLUImpl>(6)->weight.uniform_(-0.5, 0.5);
  net->to(dtype);
  net->eval();
  return net;
}

/// gamma = 0 and the given betas on channels `cs` of BN layer `bn`.
void zero_gamma(PlainNet& net, size_t bn, const std::vector<int64_t>& cs, const std::vector<double>& betas) {
  torch::NoGradGuard g;
  auto b = net->layer_as<torch::nn::BatchNorm2dImpl>(bn);
  for (size_t i = 0; i < cs.size(); ++i) {
    b->weight[cs[i]] = 0.0;
    b->bias[cs[i]] = betas[i];
  }
}

TEST(PruneFold, ZeroGammaChannelsWithAnyBetaAreRemovedExactly) {
  for (auto dtype : {torch::kDouble, torch::kFloat}) {
    auto net = fold_chain(dtype);
    // one channel per equal-k group of each unit; betas of both signs, one clipped by the clamp at 6
    // and one far beyond it (large activations)
    zero_gamma(net, 1, {1, 5}, {7.5, -2.0});                   // clamp [0, 6] and an unclipped channel
    zero_gamma(net, 5, {0, 4, 7, 10}, {1.5, -3.0, 40.0, -0.7});  // PReLU with random slopes
    zero_gamma(net, 11, {1, 2, 5, 6}, {2.0, 0.3, -1.0, 25.0});   // depthwise BN before the linear head
    torch::manual_seed(5);
    auto x = 3.0 * torch::randn({2, 3, 12, 12}, torch::TensorOptions().dtype(dtype));
    for (bool fold : {true, false}) {
      auto r = prune(*net, PruneOptions().threshold(1e-30).fold_removed(fold));
      ASSERT_EQ(r.report.channels_removed, 10);
      EXPECT_EQ(r.net->spec(4).in_channels, 6);
      EXPECT_EQ(r.net->spec(7).in_channels, 8);
      EXPECT_EQ(r.net->spec(10).groups, 4);
      EXPECT_EQ(r.net->spec(15).in_channels, 4);
      const double err = rel_diff(*net, *r.net, x);
      if (fold) {
        EXPECT_EQ(r.report.folded, 9);  // relu(-1.0) is 0: nothing to fold; the other nine are nonzero
        EXPECT_EQ(r.report.folds_at_border, 0);
        EXPECT_LT(err, test::tolerance_for(dtype)) << "dtype " << dtype;
      } else {
        EXPECT_GT(err, 1e-2) << "without folding the constants are lost";
      }
    }
  }
}

TEST(PruneFold, PaddedConsumerIsExactInsideTheBorder) {
  // resnet8's block convs are 3x3 with padding 1: the folded constant is exact on the pixels whose
  // receptive field lies inside the image, an approximation on the border (counted in the report)
  for (auto dtype : {torch::kDouble, torch::kFloat}) {
    auto net = plain_bn_of("resnet8", dtype);
    const size_t bn = 4, consumer_bn = 7;  // block conv1's BN ([bn1 | reserved]) and the merge conv's BN
    zero_gamma(net, bn, {2, 9, 20, 27}, {0.8, 1.7, 2.5, 0.4});
    auto r = prune(*net, PruneOptions().threshold(1e-30));
    ASSERT_EQ(r.report.channels_removed, 4);
    EXPECT_EQ(r.report.folded, 4);
    EXPECT_EQ(r.report.folds_at_border, 2);  // the branch channels (the reserved ones feed a Dirac kernel)
    torch::NoGradGuard g;
    auto x = 3.0 * input(dtype);
    auto a = net->forward_range(x, 0, consumer_bn + 1), b = r.net->forward_range(x, 0, consumer_bn + 1);
    using torch::indexing::Slice;
    auto inner = [](const torch::Tensor& t) { return t.index({Slice(), Slice(), Slice(1, -1), Slice(1, -1)}); };
    EXPECT_LT((inner(a) - inner(b)).abs().max().item<double>() / a.abs().max().item<double>(),
              test::tolerance_for(dtype));
    EXPECT_GT((a - b).abs().max().item<double>() / a.abs().max().item<double>(), 1e-3);
  }
}

TEST(PruneImportance, ContributionIsGammaTimesScaledConsumerNorm) {
  auto net = plain_bn_of("resnet8");
  auto units = prune_units(*net);
  ASSERT_EQ(units.size(), 7u);
  // block conv1 (branch channels 0..15, reserved 16..31) into the merge conv and its BN
  const auto& u = units[1];
  ASSERT_EQ(u.producer, 3u);
  auto gamma = net->layer_as<torch::nn::BatchNorm2dImpl>(u.importance)->weight.detach();
  auto w = net->layer_as<torch::nn::Conv2dImpl>(u.consumer)->weight.detach();
  auto bn = net->layer_as<torch::nn::BatchNorm2dImpl>(u.consumer + 1);
  std::vector<double> expected(u.channels, 0.0);
  for (int64_t c = 0; c < u.channels; ++c) {
    double sum = 0.0;
    for (int64_t o = 0; o < w.size(0); ++o) {
      const double a = bn->weight[o].item<double>() / std::sqrt(bn->running_var[o].item<double>() + 1e-5);
      sum += a * a * w[o][c].pow(2).sum().item<double>();
    }
    expected[c] = std::abs(gamma[c].item<double>()) * std::sqrt(sum);
  }
  auto got = unit_importance(*net, u, PruneImportance::Contribution);
  for (int64_t c = 0; c < u.channels; ++c) EXPECT_NEAR(got[c].item<double>(), expected[c], 1e-12 * expected[c]);
  EXPECT_TRUE(torch::equal(unit_importance(*net, u, PruneImportance::Gamma), gamma.abs()));
  // the head: |gamma| times the column norm of the linear layer
  const auto& head = units.back();
  auto fc = net->layer_as<torch::nn::LinearImpl>(head.consumer)->weight.detach();
  auto g2 = net->layer_as<torch::nn::BatchNorm2dImpl>(head.importance)->weight.detach().abs();
  EXPECT_TRUE(torch::allclose(unit_importance(*net, head, PruneImportance::Contribution),
                              g2 * fc.pow(2).sum(0).sqrt(), 1e-12, 0));
}

TEST(PruneImportance, MeasuredIsTheConsumerOutputChangeOfReplacingTheChannelByItsMean) {
  // every unit of resnet8 (3x3 padded consumers at stride 1 and 2, the linear head), against a brute
  // force: replace the channel the consumer reads by its calibration mean and measure the root-mean-
  // square change of the consumer's BN-scaled output; 20 images (more than one chunk of 16), inputs
  // large enough that ReLUs clip
  torch::NoGradGuard no_grad;
  auto net = plain_bn_of("resnet8", torch::kDouble);
  auto units = prune_units(*net);
  ASSERT_EQ(units.size(), 7u);
  // a channel the ReLU never lets through: contribution still ranks it by its gamma, measured sees 0
  auto dead_bn = net->layer_as<torch::nn::BatchNorm2dImpl>(units[1].importance);
  dead_bn->bias[3].fill_(-1e3);
  torch::manual_seed(7);
  auto x = 2.5 * torch::randn({20, net->options().in_channels(), 12, 12}, torch::kDouble);
  auto measured = units_importance(*net, units, PruneImportance::Measured, x);
  ASSERT_EQ(measured.size(), units.size());
  for (size_t k = 0; k < units.size(); ++k) {
    const auto& u = units[k];
    auto in = net->forward_range(x, 0, u.consumer);
    auto y0 = net->forward_range(in, u.consumer, u.consumer + 1);
    torch::Tensor a = torch::ones({y0.size(1)}, torch::kDouble);
    if (net->spec(u.consumer).kind == LayerKind::Conv) {
      auto bn = net->layer_as<torch::nn::BatchNorm2dImpl>(u.consumer + 1);
      a = bn->weight.detach() / torch::sqrt(bn->running_var + bn->options.eps());
    }
    const auto shape = y0.dim() == 4 ? std::vector<int64_t>{1, -1, 1, 1} : std::vector<int64_t>{1, -1};
    ASSERT_EQ(measured[k].size(0), u.channels);
    for (int64_t c = 0; c < u.channels; ++c) {
      auto r = in.clone();
      r.select(1, c).fill_(in.select(1, c).mean().item<double>());
      auto d = (net->forward_range(r, u.consumer, u.consumer + 1) - y0) * a.view(shape);
      const double expected = std::sqrt(d.pow(2).sum(1).mean().item<double>());
      EXPECT_NEAR(measured[k][c].item<double>(), expected, 1e-9 * (1.0 + expected)) << "unit " << k << " channel " << c;
    }
  }
  EXPECT_EQ(measured[1][3].item<double>(), 0.0);
  EXPECT_GT(unit_importance(*net, units[1], PruneImportance::Contribution)[3].item<double>(), 0.0);
  // it needs calibration images, and the selection uses it
  EXPECT_THROW(units_importance(*net, units, PruneImportance::Measured), c10::Error);
  EXPECT_THROW(unit_importance(*net, units[0], PruneImportance::Measured), c10::Error);
  const auto o = PruneOptions().target_macs(0.7).importance(PruneImportance::Measured).keep_one(true);
  try {
    prune(*net, o);
    ADD_FAILURE() << "measured importance without calibration images";
  } catch (const c10::Error& e) {
    EXPECT_NE(std::string(e.what()).find("calibration"), std::string::npos) << e.what();
  }
  auto r = prune(*net, o, x);
  EXPECT_LE(r.report.macs_after, 0.7 * r.report.macs_before);
  EXPECT_TRUE(std::none_of(r.report.units[1].kept.begin(), r.report.units[1].kept.end(),
                           [](int64_t c) { return c == 3; }))
      << "the dead channel goes first";
  // float32 measures the same
  net->to(torch::kFloat);
  auto m32 = units_importance(*net, units, PruneImportance::Measured, x.to(torch::kFloat));
  for (size_t k = 0; k < units.size(); ++k) EXPECT_TRUE(torch::allclose(m32[k], measured[k], 1e-4, 1e-6)) << k;
}

TEST(PruneImportance, GlobalRatioRemovesTheLeastImportantOfAllUnits) {
  auto net = plain_bn_of("resnet8");
  for (auto rule : {PruneImportance::Contribution, PruneImportance::Gamma}) {
    auto units = prune_units(*net);
    std::vector<std::tuple<double, size_t, int64_t>> all;  // importance, unit, channel
    for (size_t i = 0; i < units.size(); ++i) {
      auto v = unit_importance(*net, units[i], rule);
      for (int64_t c = 0; c < units[i].channels; ++c) all.emplace_back(v[c].item<double>(), i, c);
    }
    std::sort(all.begin(), all.end());
    const double ratio = 0.2;
    const auto n = static_cast<size_t>(ratio * static_cast<double>(all.size()));
    std::set<std::pair<size_t, int64_t>> expected;
    for (size_t j = 0; j < n; ++j) expected.insert({std::get<1>(all[j]), std::get<2>(all[j])});
    auto r = prune(*net, PruneOptions().ratio(ratio).importance(rule));
    std::set<std::pair<size_t, int64_t>> removed;
    for (size_t i = 0; i < r.report.units.size(); ++i) {
      const auto& u = r.report.units[i];
      std::vector<bool> kept(u.channels, false);
      for (auto c : u.kept) kept[c] = true;
      for (int64_t c = 0; c < u.channels; ++c)
        if (!kept[c]) removed.insert({i, c});
    }
    EXPECT_EQ(removed, expected) << to_string(rule);
    EXPECT_DOUBLE_EQ(r.report.threshold, std::get<0>(all[n - 1]));
    // both kinds of channel the RM operation produces compete on that one scale
    EXPECT_GT(r.report.removed_by_role["branch"] + r.report.removed_by_role["reserved"] +
                  r.report.removed_by_role["merged"] + r.report.removed_by_role["layer"],
              0);
  }
}

}  // namespace
}  // namespace rmnet
