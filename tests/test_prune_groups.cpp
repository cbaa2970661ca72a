// Stream groups and least-squares reconstruction in pruning (include/rmnet/prune/slim.h): the plain
// channels that carry one residual-stream channel are found from the Dirac links and go together;
// consumers refitted on calibration images reproduce the original network.
#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <set>

#include "helpers.h"
#include "rmnet/convert/rm.h"
#include "rmnet/deploy/runtime.h"
#include "rmnet/deploy/shortcuts.h"
#include "rmnet/models/profile.h"
#include "rmnet/prune/residual_baseline.h"
#include "rmnet/prune/slim.h"

namespace rmnet {
namespace {
using test::error_of;
using test::plain_bn_of;
using test::rel_diff;

torch::Tensor images(int64_t n, int64_t size = 32, torch::ScalarType dtype = torch::kDouble) {
  torch::manual_seed(11);
  return torch::randn({n, 3, size, size}, torch::TensorOptions().dtype(dtype));
}

// On a converted ResNet, every group is one stream channel: its members are stem/merged/reserved
// channels with the same source channel, no branch channel is in a group, and the sizes follow the
// stage structure (resnet20: 3 blocks per stage, downsample blocks reserve with a strided Dirac and
// merge through the projection).
TEST(PruneGroups, GroupsAreStreamChannelsOfTheResidualNetwork) {
  auto net = plain_bn_of("resnet20");
  const auto units = prune_units(*net);
  const auto groups = prune_groups(*net, units);
  std::map<size_t, int64_t> sizes;
  std::set<std::pair<size_t, int64_t>> seen;
  for (const auto& g : groups) {
    ++sizes[g.size()];
    std::set<int64_t> source;
    for (const auto& [u, c] : g) {
      EXPECT_TRUE(seen.insert({u, c}).second) << "a channel in two groups";
      const auto& origin = net->origin(units[u].producer);
      ASSERT_TRUE(origin.known());
      const auto [run, ch] = origin.at(c);
      EXPECT_NE(run->role, ChannelRole::Branch) << run->module;
      source.insert(ch);
    }
    EXPECT_EQ(source.size(), 1u) << "members of one group carry different source channels";
  }
  // stage 1 (16 channels): stem + 3 x (reserved, merged) + the reserve of the first stage-2 block = 8;
  // stage 2 (32): merged of block 2.0, then 2 x (reserved, merged), reserve of block 3.0 = 6;
  // stage 3 (64): merged of block 3.0 + 2 x (reserved, merged) = 5 (the head's input ends it)
  EXPECT_EQ(sizes, (std::map<size_t, int64_t>{{8, 16}, {6, 32}, {5, 64}}));
  // MobileNetV2: the reserved channels of the expansion blocks and the merged outputs they join
  auto mb = plain_bn_of("mobilenet_v2_cifar");
  EXPECT_FALSE(prune_groups(*mb, prune_units(*mb)).empty());
}

// A stream group goes as a whole: after pruning, each group is kept or removed entirely (up to the
// one group the count boundary may split), and with grouping none groups are split freely.
TEST(PruneGroups, StreamGroupsAreRemovedTogether) {
  auto net = plain_bn_of("resnet20");
  const auto units = prune_units(*net);
  const auto groups = prune_groups(*net, units);
  const auto split_groups = [&](const PruneResult& r) {
    int64_t split = 0;
    for (const auto& g : groups) {
      int64_t kept = 0;
      for (const auto& [u, c] : g) {
        const auto& k = r.report.units[u].kept;
        kept += std::binary_search(k.begin(), k.end(), c) ? 1 : 0;
      }
      split += (kept > 0 && kept < static_cast<int64_t>(g.size())) ? 1 : 0;
    }
    return split;
  };
  // (the sum: the mean cuts resnet20's first stage to one channel here, and keep_one splits those groups)
  auto stream = prune(*net, PruneOptions().target_macs(0.5).keep_one(true).grouping(PruneGrouping::Stream).per_cost(true)
                                .group_reduction(PruneGroupReduction::Sum));
  EXPECT_EQ(stream.report.stream_groups, static_cast<int64_t>(groups.size()));
  EXPECT_LE(split_groups(stream), 1);
  EXPECT_GT(stream.report.removed_by_role["merged"], 0);
  EXPECT_EQ(stream.net->metadata().at("prune_grouping"), "stream");
  auto none = prune(*net, PruneOptions().target_macs(0.5).keep_one(true).per_cost(true));
  EXPECT_EQ(none.report.stream_groups, 0);
  EXPECT_GT(split_groups(none), 10);
  EXPECT_EQ(prune_grouping_from_string("none"), PruneGrouping::None);
  EXPECT_NE(error_of([] { prune_grouping_from_string("depgraph"); }).find("stream or none"), std::string::npos);
}

// Per cost, each channel is scored by what removing it saves in the cost model, not by what its unit's
// first channel saves. In executed MACs a reserved copy is a shortcut (free): removing it alone saves
// nothing and breaks its block's shortcut, so without stream groups a per-cost target takes branch
// channels only and every block still runs as a shortcut; with stream groups a whole stream channel
// (all its copies and merge rows) is scored by what the group saves, and goes when it is cheap per MAC.
TEST(PruneGroups, PerCostScoresEachChannelByItsOwnSaving) {
  auto net = plain_bn_of("resnet20");
  const auto base = PruneOptions().target_macs(0.8).keep_one(true).executed_macs(true).per_cost(true);
  auto none = prune(*net, base);
  EXPECT_GT(none.report.removed_by_role["branch"], 0);
  EXPECT_EQ(none.report.removed_by_role["reserved"], 0);
  EXPECT_EQ(none.report.removed_by_role["merged"], 0);
  EXPECT_EQ(none.report.shortcuts_after, none.report.shortcuts_before);
  EXPECT_LE(none.report.executed_macs_after, 0.8 * none.report.executed_macs_before);
  auto stream = prune(*net, PruneOptions(base).grouping(PruneGrouping::Stream));
  EXPECT_EQ(stream.report.shortcuts_after, stream.report.shortcuts_before);
  EXPECT_LE(stream.report.executed_macs_after, 0.8 * stream.report.executed_macs_before);
  EXPECT_EQ(stream.report.removed_by_role["reserved"] > 0, stream.report.removed_by_role["merged"] > 0);
}

// A stream group's score: the sum of its members' importances (a stream channel weighs as all its
// copies together, so it goes last) or their mean (one copy's weight, Torch-Pruning's "mean"), under
// which stream channels compete with branch channels and more of them go at the same target.
TEST(PruneGroups, MeanReductionScoresAStreamChannelAsOneCopy) {
  auto net = plain_bn_of("resnet20");
  const auto base = PruneOptions().target_macs(0.3).keep_one(true).executed_macs(true).grouping(PruneGrouping::Stream);
  auto sum = prune(*net, PruneOptions(base).group_reduction(PruneGroupReduction::Sum));
  auto mean = prune(*net, base);  // the default
  EXPECT_GT(mean.report.removed_by_role["merged"], sum.report.removed_by_role["merged"]);
  EXPECT_LT(mean.report.removed_by_role["branch"], sum.report.removed_by_role["branch"]);
  for (const auto* r : {&sum, &mean}) {
    EXPECT_LE(r->report.executed_macs_after, 0.3 * r->report.executed_macs_before);
    EXPECT_EQ(r->report.shortcuts_after, r->report.shortcuts_before);
  }
  EXPECT_EQ(sum.net->metadata().at("prune_group_reduction"), "sum");
  EXPECT_EQ(mean.net->metadata().at("prune_group_reduction"), "mean");
  EXPECT_EQ(prune_group_reduction_from_string("mean"), PruneGroupReduction::Mean);
  EXPECT_NE(error_of([] { prune_group_reduction_from_string("max"); }).find("sum or mean"), std::string::npos);
}

// A branch channel that duplicates another (same filter, same BN) carries no information of its own:
// removing it and refitting the consumer reproduces the original network (float64), while removal
// with the constant fold alone does not.
TEST(PruneGroups, ReconstructionRecoversARedundantChannelExactly) {
  auto net = plain_bn_of("resnet8");
  const auto units = prune_units(*net);
  // the first block's first conv: branch channels 0..15; channel 5 becomes a copy of channel 2 with
  // weak consumer weights (so it ranks last), channel 2 carries the rest of its weight
  const auto& u = units[1];
  ASSERT_EQ(net->origin(u.producer).role(5), ChannelRole::Branch);
  {
    torch::NoGradGuard g;
    auto p = net->layer_as<torch::nn::Conv2dImpl>(u.producer);
    p->weight[5].copy_(p->weight[2]);
    auto bn = net->layer_as<torch::nn::BatchNorm2dImpl>(u.importance);
    for (auto* t : {&bn->weight, &bn->bias, &bn->running_mean, &bn->running_var}) (*t)[5].copy_((*t)[2]);
    for (int64_t c : {2, 5}) {  // alive on every input (a dead channel would leave the fit free)
      bn->weight[c].fill_(1.0);
      bn->bias[c].fill_(1.0);
    }
    auto cw = net->layer_as<torch::nn::Conv2dImpl>(u.consumer)->weight;
    cw.select(1, 5).mul_(1e-4);
  }
  const auto x = images(12);
  // exactly that channel goes: a threshold just above its importance
  const double t = unit_importance(*net, u, PruneImportance::Contribution)[5].item<double>() * 1.0001;
  auto plain = prune(*net, PruneOptions().threshold(t).grouping(PruneGrouping::None));
  ASSERT_EQ(plain.report.channels_removed, 1);
  auto rec = prune(*net, PruneOptions().threshold(t).grouping(PruneGrouping::None).reconstruct(true)
                             .reconstruct_ridge(1e-12).reconstruct_positions(300), x);
  ASSERT_EQ(rec.report.channels_removed, 1);
  EXPECT_EQ(static_cast<int64_t>(rec.report.units[1].kept.size()), u.channels - 1);
  EXPECT_GT(rec.report.reconstructed, 0);
  const auto probe = images(4, 32).mul(1.5);
  EXPECT_GT(rel_diff(*net, *plain.net, probe), 1e-6);
  // exact up to the normal equations' rounding, on the calibration images and on others (x1.5)
  EXPECT_LT(rel_diff(*net, *rec.net, x), 1e-7);
  EXPECT_LT(rel_diff(*net, *rec.net, probe), 1e-7);
  {
    torch::NoGradGuard ng;
    for (size_t i = u.consumer; i < net->size(); ++i) {  // every layer after the cut, not only the end
      auto a = net->forward_range(probe, 0, i + 1), b = rec.net->forward_range(probe, 0, i + 1);
      if (a.sizes() == b.sizes()) EXPECT_LT(((a - b).norm() / a.norm()).item<double>(), 1e-6) << net->spec(i).describe();
    }
  }
  EXPECT_LT(rec.report.reconstruction_error_after, 1e-6);
}

// On random networks (float32 and float64, BN statistics randomised by the helper), reconstruction
// lowers the error against the original on held-out images, at a deep cut and in a regime where
// activations are large.
TEST(PruneGroups, ReconstructionLowersTheErrorOfADeepCut) {
  for (auto dtype : {torch::kDouble, torch::kFloat}) {
    auto net = plain_bn_of("resnet8", dtype);
    const auto calib = images(64, 32, dtype), held = images(8, 32, dtype).mul(4.0);
    auto plain = prune(*net, PruneOptions().target_macs(0.5).keep_one(true));
    auto rec = prune(*net, PruneOptions().target_macs(0.5).keep_one(true).reconstruct(true), calib);
    EXPECT_EQ(plain.report.units.size(), rec.report.units.size());
    for (size_t u = 0; u < plain.report.units.size(); ++u)
      EXPECT_EQ(plain.report.units[u].kept, rec.report.units[u].kept) << "reconstruction changed the selection";
    EXPECT_EQ(plain.net->specs(), rec.net->specs());
    const double e0 = rel_diff(*net, *plain.net, held), e1 = rel_diff(*net, *rec.net, held);
    EXPECT_LT(e1, 0.8 * e0) << "before " << e0 << ", after " << e1;
    EXPECT_LT(rec.report.reconstruction_error_after, rec.report.reconstruction_error_before);
    EXPECT_EQ(rec.net->metadata().at("prune_reconstructed"), std::to_string(rec.report.reconstructed));
  }
  auto net = plain_bn_of("resnet8");
  EXPECT_NE(error_of([&] { prune(*net, PruneOptions().ratio(0.3).reconstruct(true)); }).find("calibration"),
            std::string::npos);
  EXPECT_NE(error_of([&] {
              prune(*net, PruneOptions().ratio(0.3).reconstruct(true), torch::randn({4, 1, 32, 32}, torch::kDouble));
            }).find("channels"),
            std::string::npos);
}

}  // namespace
}  // namespace rmnet

namespace rmnet {
namespace {

// The latency table reproduces the measured whole at full size, and a latency target is met on the
// runtime as measured (loose target: timing in a test runs beside other tests).
TEST(PruneLatency, TargetSpeedupIsMetAsMeasured) {
  torch::manual_seed(5);
  auto net = test::plain_bn_of("resnet8", torch::kFloat);
  const auto lo = LatencyOptions().batch(16).input_size(32).iters(7).warmup(2).grid({0.5, 1.0});
  std::vector<bool> all(net->size(), true);
  const auto table = LatencyTable::measure(*net, all, lo);
  EXPECT_GT(table.whole_ms(), 0.0);
  EXPECT_GT(table.points(), 10);
  EXPECT_NEAR(table.estimate(net->specs()), table.whole_ms(), 1e-9 * table.whole_ms());
  // fewer channels: a smaller prediction
  auto smaller = net->specs();
  for (auto& s : smaller)
    if (s.kind == LayerKind::Conv && s.out_channels >= 32 && s.groups == 1) s.out_channels /= 2;
  EXPECT_LT(table.estimate(smaller), table.whole_ms());

  // timing beside other tests: a miss the library reports as such (the machine was busy) is retried
  PruneResult r;
  for (int attempt = 0;; ++attempt) {
    try {
      r = prune(*net, PruneOptions().target_speedup(1.25).latency(lo).keep_one(true));
      break;
    } catch (const c10::Error& e) {
      const std::string what = e.what_without_backtrace();
      if (attempt == 2 || what.find("was not met") == std::string::npos) throw;
    }
  }
  const auto& rep = r.report;
  EXPECT_NEAR(rep.latency_target_ms, rep.latency_before_ms / 1.25, 1e-9);
  EXPECT_GE(rep.latency_rounds, 1);
  EXPECT_LE(rep.latency_after_ms, rep.latency_target_ms * 1.05);
  EXPECT_LT(rep.macs_after, rep.macs_before);
  EXPECT_GT(rep.latency_table_points, 0);
  EXPECT_NE(r.net->metadata().at("prune_criterion").find("target_speedup 1.25"), std::string::npos);
  // the result has fewer MACs and is predicted faster by the table
  EXPECT_LT(table.estimate(r.net->specs()), table.whole_ms());

  EXPECT_NE(test::error_of([&] { prune(*net, PruneOptions().target_latency_ms(0.0)); }).find("positive"),
            std::string::npos);
  EXPECT_NE(test::error_of([&] { prune(*net, PruneOptions().target_speedup(0.5)); }).find("at least 1"),
            std::string::npos);
  EXPECT_NE(test::error_of([&] { prune(*net, PruneOptions().target_speedup(2).target_macs(0.5)); }).find("exactly one"),
            std::string::npos);
  const auto unreachable = test::error_of([&] {
    prune(*net, PruneOptions().target_latency_ms(1e-6).latency(lo).keep_one(true));
  });
  EXPECT_NE(unreachable.find("cannot be reached"), std::string::npos) << unreachable;
}

// With executed MACs the latency table times the convs at the shapes the runtime executes (the
// copies are shortcuts): at full size it reproduces the measured whole, the copies' removal from the
// shapes is what executed_specs gives, and a speedup target is met with every shortcut kept.
TEST(PruneLatency, ExecutedShapesKeepTheShortcuts) {
  torch::manual_seed(6);
  auto net = test::plain_bn_of("resnet8", torch::kFloat);
  const auto lo = LatencyOptions().batch(16).input_size(32).iters(7).warmup(2).grid({0.5, 1.0});
  const auto o = PruneOptions().target_speedup(1.2).latency(lo).keep_one(true).grouping(PruneGrouping::Stream)
                     .executed_macs(true);
  PruneResult r;
  for (int attempt = 0;; ++attempt) {
    try {
      r = prune(*net, o);
      break;
    } catch (const c10::Error& e) {
      const std::string what = e.what_without_backtrace();
      if (attempt == 2 || what.find("was not met") == std::string::npos) throw;
    }
  }
  const auto& rep = r.report;
  EXPECT_LE(rep.latency_after_ms, rep.latency_target_ms * 1.05);
  EXPECT_EQ(rep.shortcuts_after, 3);
  EXPECT_LT(rep.executed_macs_after, rep.executed_macs_before);
  for (const auto& n : rep.notes) EXPECT_EQ(n.find("the runtime executes"), std::string::npos) << n;
}


// reconstruct_keep_dirac: the reserved channels' copies and the merge convs' shortcut columns keep
// their exact Dirac weights while the rest is refitted, so the onednn runtime still runs every block
// of a residual-baseline pruning (branch channels only) as a shortcut; a plain refit loses them.
// The refit still lowers the error (on the calibration images: on a random network the end-to-end
// error of a gentle cut is too small to measure a refit by), and the runtime computes the pruned
// network's function.
TEST(PruneGroups, ReconstructionCanKeepTheDiracShortcuts) {
  const auto residual = test::random_model("resnet8", torch::kDouble);
  const auto calib = images(48, 32, torch::kDouble);
  const auto held = torch::randn({6, 3, 32, 32}, torch::kDouble);  // held out, at the calibration's scale
  const auto o = PruneOptions().target_macs(0.7).keep_one(true).reconstruct(true);
  auto kept = prune_residual(*residual, PruneOptions(o).reconstruct_keep_dirac(true), calib).plain;
  auto refit = prune_residual(*residual, o, calib).plain;
  auto none = prune_residual(*residual, PruneOptions(o).reconstruct(false), calib).plain;
  EXPECT_GT(kept.report.reconstructed, 0);
  EXPECT_LT(kept.report.reconstruction_error_after, kept.report.reconstruction_error_before);
  // the kept Dirac weights are the pruned network's own: reconstruction changed only the other ones
  EXPECT_EQ(kept.net->specs(), none.net->specs());
  if (!onednn_direct_available()) GTEST_SKIP() << "this build has no direct oneDNN path";
  const auto shortcuts = [](PlainNetImpl& net) {
    net.eval();
    const auto g = deploy(net, DeployOptions().runtime(Runtime::OneDNN))->graph();
    const auto at = g.find(" Dirac shortcut");
    return at == std::string::npos ? -1 : std::stoi(g.substr(g.rfind(' ', at - 1) + 1));
  };
  EXPECT_EQ(shortcuts(*none.net), 3);  // resnet8: three blocks, the stream untouched
  EXPECT_EQ(shortcuts(*kept.net), 3) << deploy(*kept.net, DeployOptions().runtime(Runtime::OneDNN))->graph();
  EXPECT_LT(shortcuts(*refit.net), 3);
  auto d = deploy(*kept.net, DeployOptions().runtime(Runtime::OneDNN));
  const auto x = held.to(torch::kFloat);
  const auto ref = kept.net->forward(held).to(torch::kFloat);
  EXPECT_LE((d->forward(x) - ref).abs().max().item<double>() / ref.abs().max().item<double>(), 1e-4);
}

// The MACs the onednn runtime executes (deploy/shortcuts.h): a converted ResNet or MobileNetV2 runs
// at its residual network's MACs (identity and projection shortcuts, bottleneck and depthwise middle
// convs), and the count is the runtime's own per-step count; a plain network without reserved
// channels executes what count_flops counts.
TEST(PruneGroups, ExecutedMacsAreTheResidualNetworks) {
  for (const std::string arch : {"resnet8", "resnet14", "rmnet26x3_32", "mobilenet_v2_cifar"}) {
    const auto residual = test::random_model(arch, torch::kFloat);
    auto plain = convert(*residual, ConvertOptions().keep_bn(true)).plain;
    plain->eval();
    const auto sc = dirac_shortcuts(*plain);
    EXPECT_GE(sc.size(), 3u) << arch;
    bool projection = false;
    for (const auto& s : sc) {
      projection = projection || s.projection;
      ASSERT_EQ(s.copies.size() + 1, s.convs.size());
      EXPECT_EQ(s.merged.size(), static_cast<size_t>(plain->spec(s.convs.back()).in_channels));
    }
    EXPECT_EQ(projection, arch != "mobilenet_v2_cifar") << arch << ": a ResNet's downsample blocks";
    for (int64_t size : {32, 20}) {
      // (the RMNet's stem is a RepVGG block: its 1x1 branch merged into the 3x3 costs nothing)
      if (arch == "rmnet26x3_32")
        EXPECT_EQ(executed_macs(*plain, size), count_flops(*residual, 3, size) - 64 * 3 * size * size);
      else
        EXPECT_EQ(executed_macs(*plain, size), count_flops(*residual, 3, size)) << arch << " at " << size;
      EXPECT_LT(executed_macs(*plain, size), count_flops(*plain, 3, size));
    }
    if (!onednn_direct_available()) continue;
    auto d = deploy(*plain, DeployOptions().runtime(Runtime::OneDNN));
    int64_t macs = 0;
    for (const auto& t : d->profile(torch::randn({2, 3, 32, 32}), 0, 1)) macs += t.macs;
    EXPECT_EQ(macs, 2 * executed_macs(*plain, 32)) << arch;
  }
  auto vgg = plain_bn_of("repvgg_a0");
  EXPECT_TRUE(dirac_shortcuts(*vgg).empty());
  EXPECT_EQ(executed_macs(*vgg, 32), count_flops(*vgg, 3, 32));
}

// Pruning to executed MACs (PruneOptions::executed_macs) with stream groups keeps every shortcut and
// meets the target as the runtime executes the result; counting the plain form's MACs instead, the
// same fraction cuts the network much deeper than it needs. A refit that keeps the Dirac copies keeps
// the count; a free refit is refused (it would move them).
TEST(PruneGroups, ExecutedMacsTargetIsMetAsTheRuntimeRunsIt) {
  auto net = plain_bn_of("resnet20");
  const int64_t size = 32;
  const auto base = PruneOptions().target_macs(0.5).keep_one(true).grouping(PruneGrouping::Stream).executed_macs(true);
  auto r = prune(*net, base);
  EXPECT_EQ(r.report.shortcuts_before, 9);  // resnet20: nine blocks
  EXPECT_EQ(r.report.shortcuts_after, 9);
  EXPECT_EQ(r.report.executed_macs_before, executed_macs(*net, size));
  EXPECT_EQ(r.report.executed_macs_after, executed_macs(*r.net, size));
  const auto target = static_cast<int64_t>(0.5 * static_cast<double>(r.report.executed_macs_before));
  EXPECT_LE(r.report.executed_macs_after, target);
  EXPECT_GE(r.report.executed_macs_after, static_cast<int64_t>(0.4 * static_cast<double>(r.report.executed_macs_before)));
  EXPECT_EQ(r.report.macs_before, count_flops(*net, 3, size));  // macs_* stay count_flops
  EXPECT_EQ(r.report.macs_after, count_flops(*r.net, 3, size));
  for (const auto& n : r.report.notes) EXPECT_EQ(n.find("the runtime executes"), std::string::npos) << n;
  EXPECT_NE(r.report.to_string().find("9 -> 9 Dirac shortcuts"), std::string::npos) << r.report.to_string();
  // every channel on its own: chains get broken, the count stays an upper bound of what runs
  auto none = prune(*net, PruneOptions(base).grouping(PruneGrouping::None));
  EXPECT_LE(none.report.executed_macs_after, target);
  // with a refit that keeps the copies: the same shortcuts, the same count
  const auto calib = images(32, size);
  auto rec = prune(*net, PruneOptions(base).reconstruct(true).reconstruct_keep_dirac(true), calib);
  EXPECT_EQ(rec.report.shortcuts_after, 9);
  EXPECT_EQ(rec.report.executed_macs_after, r.report.executed_macs_after);
  EXPECT_LT(rec.report.reconstruction_error_after, rec.report.reconstruction_error_before);
  const auto e = error_of([&] { prune(*net, PruneOptions(base).reconstruct(true), calib); });
  EXPECT_NE(e.find("reconstruct_keep_dirac"), std::string::npos) << e;
  if (!onednn_direct_available()) return;
  // the runtime runs the pruned network at that count, and computes the same function
  auto pruned = r.net;
  pruned->to(torch::kFloat);
  auto d = deploy(*pruned, DeployOptions().runtime(Runtime::OneDNN));
  const auto x = images(2, size, torch::kFloat);
  int64_t macs = 0;
  for (const auto& t : d->profile(x, 0, 1)) macs += t.macs;
  EXPECT_EQ(macs, 2 * r.report.executed_macs_after);
  const auto ref = pruned->forward(x);
  EXPECT_LE((d->forward(x) - ref).abs().max().item<double>() / ref.abs().max().item<double>(), 1e-4);
  // pruned by the plain form's MACs, every channel on its own: copies go while their channel stays,
  // and such an identity block adds the others (factor 0 for the gone ones) rather than running a
  // dense projection; the runtime still computes the same function at executed_macs
  auto broken = prune(*net, PruneOptions().target_macs(0.6).keep_one(true)).net;
  broken->to(torch::kFloat);
  int64_t partial = 0;
  for (const auto& sc : dirac_shortcuts(*broken))
    if (!sc.projection && std::count(sc.scale.begin(), sc.scale.end(), 0.0) > 0) ++partial;
  EXPECT_GT(partial, 0);
  auto db = deploy(*broken, DeployOptions().runtime(Runtime::OneDNN));
  int64_t macs_b = 0;
  for (const auto& t : db->profile(x, 0, 1)) macs_b += t.macs;
  EXPECT_EQ(macs_b, 2 * executed_macs(*broken, size));
  const auto ref_b = broken->forward(x);
  EXPECT_LE((db->forward(x) - ref_b).abs().max().item<double>() / ref_b.abs().max().item<double>(), 1e-4);
}

// A ResNet trained with shortcut scales (its copies carry the factor s: rmnet train --sparsity) is
// pruned to executed MACs the same way: its shortcuts are found (scaled), the original's executed MACs
// are the residual network's, and the target is met with every shortcut kept.
TEST(PruneGroups, ShortcutScaledNetworksPruneToExecutedMacs) {
  torch::manual_seed(21);
  auto residual = create_model(ModelOptions("resnet20").num_classes(10).track_block_stats(true).shortcut_scale(true));
  randomize_batchnorm(*residual, 22);
  {
    torch::NoGradGuard g;
    for (auto& p : residual->named_parameters())
      if (p.key().ends_with("shortcut_scale")) p.value().uniform_(0.25, 1.75);
  }
  residual->to(torch::kDouble);
  residual->eval();
  auto net = convert(*residual, ConvertOptions().keep_bn(true)).plain;
  net->eval();
  const int64_t size = 32;
  EXPECT_EQ(executed_macs(*net, size), count_flops(*residual, 3, size));
  auto r = prune(*net, PruneOptions().target_macs(0.5).keep_one(true).grouping(PruneGrouping::Stream).executed_macs(true));
  EXPECT_EQ(r.report.shortcuts_before, 9);
  EXPECT_EQ(r.report.shortcuts_after, 9);
  EXPECT_EQ(r.report.executed_macs_after, executed_macs(*r.net, size));
  EXPECT_LE(r.report.executed_macs_after, static_cast<int64_t>(0.5 * static_cast<double>(r.report.executed_macs_before)));
  EXPECT_GE(r.report.executed_macs_after, static_cast<int64_t>(0.4 * static_cast<double>(r.report.executed_macs_before)));
  for (const auto& n : r.report.notes) EXPECT_EQ(n.find("the runtime executes"), std::string::npos) << n;
  int64_t scaled = 0;
  for (const auto& sc : dirac_shortcuts(*r.net)) scaled += !sc.scale.empty();
  EXPECT_GT(scaled, 0);
}

// A shortcut scale s <= 0 reserves relu(s * x) = 0 (x >= 0 after a ResNet block): the conversion makes
// that an exact zero (BN gamma and beta 0) and pruning removes those channels first, alone (not with
// their stream group), with nothing changed in what the network computes; removing just them brings
// the executed MACs to at most the residual network's (they were computed convolution rows).
TEST(PruneGroups, ZeroShortcutScalesAreRemovedFirstAndExactly) {
  torch::manual_seed(23);
  auto residual = create_model(ModelOptions("resnet20").num_classes(10).track_block_stats(true).shortcut_scale(true));
  randomize_batchnorm(*residual, 24);
  int64_t negative = 0;
  {
    torch::NoGradGuard g;
    for (auto& p : residual->named_parameters())
      if (p.key().ends_with("shortcut_scale")) {
        p.value().uniform_(-1.0, 1.75);
        negative += p.value().le(0).sum().item<int64_t>();
      }
  }
  ASSERT_GT(negative, 20);
  residual->to(torch::kDouble);
  residual->eval();
  auto net = convert(*residual, ConvertOptions().keep_bn(true)).plain;
  net->eval();
  const int64_t size = 32;
  const auto x = images(3, size) * 4;
  EXPECT_LT(rel_diff(*residual, *net, x), 1e-12);
  EXPECT_GT(executed_macs(*net, size), count_flops(*residual, 3, size));

  // the exact zeros: one per scale <= 0, each a reserved channel
  const auto units = prune_units(*net);
  int64_t zeros = 0;
  std::set<std::pair<size_t, int64_t>> zero;
  for (size_t u = 0; u < units.size(); ++u) {
    auto bn = net->layer_as<torch::nn::BatchNorm2dImpl>(units[u].importance);
    for (int64_t c = 0; c < units[u].channels; ++c)
      if (bn->weight[c].item<double>() == 0.0) {
        EXPECT_EQ(bn->bias[c].item<double>(), 0.0);
        EXPECT_EQ(net->origin(units[u].producer).role(c), ChannelRole::Reserved);
        zero.emplace(u, c);
        ++zeros;
      }
  }
  EXPECT_EQ(zeros, negative);

  // a threshold just above 0 removes exactly those: the same function
  auto r = prune(*net, PruneOptions().threshold(1e-300).executed_macs(true));
  EXPECT_EQ(r.report.channels_removed, zeros);
  EXPECT_EQ(r.report.folded, 0);
  EXPECT_LT(rel_diff(*residual, *r.net, x), 1e-12);
  EXPECT_EQ(r.report.shortcuts_after, 9);
  EXPECT_LE(executed_macs(*r.net, size), count_flops(*residual, 3, size));
  bool noted = false;
  for (const auto& n : r.report.notes) noted |= n.find("exactly zero") != std::string::npos;
  EXPECT_TRUE(noted);

  // a MACs target with stream groups removes every zero, on its own, even one the target does not need
  // (0.99: the first block's zeros would do)
  auto t = prune(*net, PruneOptions().target_macs(0.99).keep_one(true).grouping(PruneGrouping::Stream).executed_macs(true));
  for (size_t u = 0; u < t.report.units.size(); ++u)
    for (auto c : t.report.units[u].kept) EXPECT_FALSE(zero.count({u, c})) << "unit " << u << " channel " << c;
  EXPECT_EQ(t.report.channels_removed, zeros);
  EXPECT_LT(rel_diff(*residual, *t.net, x), 1e-12);
  EXPECT_EQ(t.report.shortcuts_after, 9);
}

}  // namespace
}  // namespace rmnet
