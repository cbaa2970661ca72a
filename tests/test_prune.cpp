// Network slimming on plain networks (include/rmnet/prune/slim.h) and the residual baseline.
#include <gtest/gtest.h>

#include "helpers.h"
#include "rmnet/convert/rm.h"
#include "rmnet/deploy/runtime.h"
#include "rmnet/io/model_file.h"
#include "rmnet/prune/slim.h"
#include "rmnet/train/trainer.h"

namespace rmnet {
namespace {
using test::error_of;
using test::random_model;
using test::rel_diff;

PlainNet plain_of(const std::string& arch, torch::ScalarType dtype = torch::kDouble) {
  auto m = random_model(arch, dtype);
  auto r = convert(*m, ConvertOptions().keep_bn(true));
  EXPECT_TRUE(r.report.passed) << arch << ": " << r.report.to_string();
  r.plain->eval();
  return r.plain;
}

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
    auto net = plain_of(arch);
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
      auto net = plain_of(arch, dtype);
      const int64_t killed = kill_channels(net);
      ASSERT_GT(killed, 10) << arch;
      auto r = prune(*net, PruneOptions().threshold(1e-12));
      // grouped units keep equal counts per group, so they may keep some dead channels
      if (arch != "rmnet26x3_32") EXPECT_EQ(r.report.channels_removed, killed) << arch;
      EXPECT_GT(r.report.channels_removed, killed / 2) << arch;
      EXPECT_LT(r.report.params_after, r.report.params_before) << arch;
      EXPECT_LT(rel_diff(*net, *r.net, input(dtype)), test::tolerance_for(dtype)) << arch;
    }
  }
}

TEST(Prune, ShapesConsistentSaveLoadRun) {
  for (const std::string arch : {"resnet20", "mobilenet_v2_cifar", "rmnet26x3_32"}) {
    auto net = plain_of(arch, torch::kFloat);
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
  auto net = plain_of("rmnet26x3_32", torch::kFloat);
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
  auto net = plain_of("resnet8", torch::kFloat);
  auto r = prune(*net, PruneOptions().threshold(1e9).keep_one(true));
  for (const auto& u : r.report.units) EXPECT_EQ(static_cast<int64_t>(u.kept.size()), u.groups);
  EXPECT_EQ(r.net->forward(input(torch::kFloat)).sizes(), (std::vector<int64_t>{2, 10}));
}

TEST(Prune, BadInput) {
  auto residual = random_model("resnet8");
  EXPECT_NE(error_of([&] { prune(*residual, PruneOptions().ratio(0.5)); }).find("convert it first"), std::string::npos);
  auto fused = convert(*residual, ConvertOptions().keep_bn(false)).plain;
  EXPECT_NE(error_of([&] { prune(*fused, PruneOptions().ratio(0.5)); }).find("no BatchNorm"), std::string::npos);
  auto net = plain_of("resnet8", torch::kFloat);
  EXPECT_NE(error_of([&] { prune(*net, PruneOptions().ratio(1.0)); }).find("[0, 1)"), std::string::npos);
  EXPECT_NE(error_of([&] { prune(*net, PruneOptions()); }).find("exactly one"), std::string::npos);
  EXPECT_NE(error_of([&] { prune(*net, PruneOptions().ratio(0.5).threshold(0.1)); }).find("exactly one"),
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
  auto net = plain_of("resnet8", torch::kFloat);
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
  // the reserved channels' BN gamma carries the scale: gamma = s * sqrt(var + eps)
  auto m = scaled_model("resnet20", torch::kDouble);
  auto plain = reserve_merge(*m);
  auto block = m->named_modules()["layer1.0"];
  auto s = block->named_parameters()["shortcut_scale"];
  auto var = block->named_buffers()["rm_in_var"];
  auto bn = plain->layer_as<torch::nn::BatchNorm2dImpl>(4);  // conv, bn, relu, block conv1, its bn
  EXPECT_TRUE(torch::allclose(bn->weight.slice(0, 16), s * torch::sqrt(var + 1e-5), 1e-12, 1e-12));
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
