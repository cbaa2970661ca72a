// Provenance of plain networks (include/rmnet/models/provenance.h): recorded by the conversion,
// stored in model files (files without it still load), sliced by pruning.
#include <gtest/gtest.h>

#include "helpers.h"
#include "rmnet/convert/fuse.h"
#include "rmnet/convert/rm.h"
#include "rmnet/io/model_file.h"
#include "rmnet/models/provenance.h"
#include "rmnet/prune/slim.h"

namespace rmnet {
namespace {
using test::random_model;

LayerOrigin of(ChannelRole role, const std::string& module, int64_t n) { return LayerOrigin::of(role, module, n); }
constexpr auto kLayer = ChannelRole::Layer;
constexpr auto kBranch = ChannelRole::Branch;
constexpr auto kReserved = ChannelRole::Reserved;
constexpr auto kMerged = ChannelRole::Merged;

TEST(Provenance, Runs) {
  auto o = of(kBranch, "b.conv1", 4) + of(kReserved, "b", 3);
  EXPECT_EQ(o.channels(), 7);
  EXPECT_EQ(o.role(3), kBranch);
  EXPECT_EQ(o.role(4), kReserved);
  EXPECT_EQ(o.at(5).second, 1);
  EXPECT_EQ(o.describe(), "branch b.conv1[0:4] + reserved b[0:3]");
  auto s = o.select({0, 1, 3, 4, 6});
  EXPECT_EQ(s.describe(), "branch b.conv1[0:2] + branch b.conv1[3:4] + reserved b[0:1] + reserved b[2:3]");
  EXPECT_EQ(s.channels(), 5);
  EXPECT_FALSE((o + LayerOrigin()).known());
  EXPECT_NE(test::error_of([&] { o.at(7); }).find("outside the 7 channels"), std::string::npos);
  EXPECT_NE(test::error_of([&] { channel_role_from_string("stream"); }).find("unknown channel role 'stream'"),
            std::string::npos);
}

TEST(Provenance, ResNetConversionRecordsBranchReservedAndMerged) {
  auto m = random_model("resnet20");
  auto p = reserve_merge(*m);
  ASSERT_EQ(p->provenance().size(), p->size());
  EXPECT_EQ(p->origin(0), of(kLayer, "conv1", 16));
  EXPECT_EQ(p->origin(1), p->origin(0));  // BN and ReLU inherit the conv's origin
  EXPECT_EQ(p->origin(2), p->origin(0));
  EXPECT_EQ(p->origin(3), of(kBranch, "layer1.0.conv1", 16) + of(kReserved, "layer1.0", 16));
  EXPECT_EQ(p->origin(4), p->origin(3));
  EXPECT_EQ(p->origin(6), of(kMerged, "layer1.0", 16));
  // the first block of stage 2 (stride 2, projection shortcut), type 2: Dirac reserve of the input
  const size_t s2 = 3 + 6 * 3;
  EXPECT_EQ(p->origin(s2), of(kBranch, "layer2.0.conv1", 32) + of(kReserved, "layer2.0", 16));
  EXPECT_EQ(p->origin(s2 + 3), of(kMerged, "layer2.0", 32));
  EXPECT_EQ(p->origin(p->size() - 1), of(kLayer, "fc", 10));
  // type 1: the projection joins the first conv
  auto p1 = reserve_merge(*m, DownsampleMode::Type1);
  EXPECT_EQ(p1->origin(s2), of(kBranch, "layer2.0.conv1", 32) + of(kReserved, "layer2.0.downsample.0", 32));
}

TEST(Provenance, MobileNetV2ConversionRecordsBranchReservedAndMerged) {
  auto m = random_model("mobilenet_v2_cifar");
  auto p = reserve_merge(*m);
  ASSERT_EQ(p->provenance().size(), p->size());
  // features.2 is the first residual block (16 -> 24 in features.1? find it by name instead)
  bool residual = false, plain_block = false;
  for (size_t i = 0; i < p->size(); ++i) {
    if (p->spec(i).kind != LayerKind::Conv) continue;
    const auto& o = p->origin(i);
    ASSERT_TRUE(o.known()) << "layer " << i;
    const auto& first = o.runs.front();
    if (first.role == kBranch && o.runs.size() == 2) {  // a residual block's expand or depthwise conv
      EXPECT_EQ(o.runs[1].role, kReserved);
      EXPECT_TRUE(first.module.starts_with(o.runs[1].module + ".conv.")) << o.describe();
      residual = true;
    }
    if (first.role == kBranch && o.runs.size() == 1) plain_block = true;  // a block without residual
  }
  EXPECT_TRUE(residual);
  EXPECT_TRUE(plain_block);
  EXPECT_EQ(p->origin(0), of(kLayer, "features.0.0", 32));
}

TEST(Provenance, EveryFamilyConvertsWithProvenance) {
  for (const std::string arch : {"resnet8", "resnet50", "mobilenet_v2_cifar", "rmnet26x3_32", "preact_resnet20",
                                 "repvgg8_cifar", "mobilenet_v1_cifar"}) {
    auto m = random_model(arch);
    auto r = convert(*m, ConvertOptions().keep_bn(true).verify(false).cost_input_size(-1));
    ASSERT_EQ(r.plain->provenance().size(), r.plain->size()) << arch;
    for (size_t i = 0; i < r.plain->size(); ++i) EXPECT_TRUE(r.plain->origin(i).known()) << arch << " layer " << i;
    // the deploy form keeps it too (BN folded into the convs, activations simplified)
    auto d = convert(*m, ConvertOptions().verify(false).cost_input_size(-1));
    ASSERT_EQ(d.plain->provenance().size(), d.plain->size()) << arch;
    for (size_t i = 0; i < d.plain->size(); ++i) EXPECT_TRUE(d.plain->origin(i).known()) << arch << " layer " << i;
  }
}

TEST(Provenance, ModelFilesKeepItAndFilesWithoutItLoad) {
  auto p = convert(*random_model("resnet8"), ConvertOptions().keep_bn(true).verify(false)).plain;
  const auto path = test::temp_path("prov.rmnet");
  save_model(*p, path);
  auto back = std::dynamic_pointer_cast<PlainNetImpl>(load_model(path));
  ASSERT_TRUE(back);
  EXPECT_EQ(back->provenance(), p->provenance());
  // a network without provenance (as every file written before it existed) saves and loads without
  PlainNet bare(p->specs(), p->options());
  save_model(*bare, path);
  back = std::dynamic_pointer_cast<PlainNetImpl>(load_model(path));
  std::filesystem::remove(path);
  EXPECT_TRUE(back->provenance().empty());
  EXPECT_FALSE(back->origin(0).known());
  EXPECT_EQ(serialize_model(*bare).find("provenance"), std::string::npos);
  // provenance that does not fit the layers is refused by name
  auto bad = p->provenance();
  bad[3] = of(kLayer, "x", 5);
  EXPECT_NE(test::error_of([&] { bare->set_provenance(bad); }).find("provenance of plain layer 3"), std::string::npos);
}

TEST(Provenance, PruningSlicesIt) {
  auto p = convert(*random_model("resnet20"), ConvertOptions().keep_bn(true).verify(false)).plain;
  auto r = prune(*p, PruneOptions().ratio(0.5).keep_one(true));
  ASSERT_EQ(r.net->provenance().size(), r.net->size());
  for (const auto& u : r.report.units) {
    const auto expected = p->origin(u.producer).select(u.kept);
    EXPECT_EQ(r.net->origin(u.producer), expected) << "layer " << u.producer;
    for (auto j : u.sliced) EXPECT_EQ(r.net->origin(j), expected) << "layer " << j;
  }
  int64_t by_role = 0;
  for (const auto& [role, n] : r.report.removed_by_role) {
    EXPECT_NE(role, "unknown");
    by_role += n;
  }
  EXPECT_EQ(by_role, r.report.channels_removed);
}

}  // namespace
}  // namespace rmnet
