// compress (include/rmnet/compress/compress.h): the whole path on a tiny ResNet and data set: the
// target is met, every step is reported and saved, the folder appears whole; bad targets and an
// existing folder are refused, and a failed run leaves nothing.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>

#include "helpers.h"
#include "rmnet/compress/compress.h"
#include "rmnet/deploy/shortcuts.h"
#include "rmnet/io/model_file.h"
#include "rmnet/models/profile.h"
#include "rmnet/models/registry.h"
#include "rmnet/train/fit.h"

namespace rmnet {
namespace {
namespace fs = std::filesystem;

struct TempDir {
  fs::path path;
  explicit TempDir(const std::string& name) : path(test::temp_path(name)) { fs::remove_all(path); }
  ~TempDir() { fs::remove_all(path); }
};

ModelPtr trained_resnet8(const DatasetPtr& train, const DatasetPtr& test) {
  torch::manual_seed(1);
  auto m = create_model(ModelOptions("resnet8").num_classes(4).in_channels(1).track_block_stats(true));
  FitOptions fo;
  fo.epochs(2).batch_size(16).workers(0).seed(2);
  fo.train().schedule().lr(0.05);
  fit(*m, train, test, fo);
  m->eval();
  return m;
}

CompressOptions small(const std::string& out) {
  CompressOptions o;
  o.out(out).rounds(2).finetune_epochs(1).bench_batch(8).bench_iters(2).calibration_images(32);
  o.finetune().batch_size(16).workers(0).seed(3);
  o.finetune().train().schedule().lr(0.01);
  return o;
}

TEST(Compress, MacsTargetInRoundsWithInt8WritesAWholeReport) {
  auto train = test::quadrants(96, 3), test_set = test::quadrants(48, 4);
  auto model = trained_resnet8(train, test_set);
  const int64_t macs = count_flops(*model, 1, 12);
  TempDir dir("compress_macs");
  auto r = compress(*model, train, test_set, small(dir.path.string()).target_macs(0.7).int8(true));
  ASSERT_EQ(r.steps.size(), 5u);  // original, converted, 2 rounds, int8
  EXPECT_EQ(r.steps[0].name, "original");
  EXPECT_EQ(r.steps[1].name, "converted");
  EXPECT_EQ(r.steps[4].name, "int8");
  EXPECT_EQ(r.steps[0].macs, macs);
  EXPECT_GT(r.steps[1].macs, macs);                    // the RM form costs more
  EXPECT_EQ(r.steps[1].executed_macs, macs);           // but runs at the residual network's MACs
  EXPECT_EQ(r.steps[1].shortcuts, 3);                  // resnet8: three blocks
  EXPECT_NEAR(r.steps[1].top1, r.steps[0].top1, 1.0 / 48 + 1e-9);  // exact conversion (ties aside)
  EXPECT_LT(r.steps[2].executed_macs, r.steps[1].executed_macs);    // round 1 on the way
  // the target, met in executed MACs, with every shortcut kept through pruning and fine-tuning
  EXPECT_LE(r.steps[3].executed_macs, static_cast<int64_t>(0.7 * static_cast<double>(macs)));
  EXPECT_GT(r.steps[3].executed_macs, static_cast<int64_t>(0.4 * static_cast<double>(macs)));
  EXPECT_LT(r.steps[3].executed_macs, r.steps[3].macs);
  EXPECT_EQ(r.steps[2].shortcuts, 3);
  EXPECT_EQ(r.steps[3].shortcuts, 3);
  EXPECT_EQ(r.steps[4].runtime, "int8");
  for (const auto& s : r.steps) {
    EXPECT_GT(s.images_per_second, 0.0) << s.name;
    EXPECT_GE(s.top1, 0.0);
    EXPECT_LE(s.top1, 1.0);
  }
  // the folder: report, plot, one model file per step
  const auto report = nlohmann::json::parse(std::ifstream(dir.path / "report.json"));
  ASSERT_EQ(report["steps"].size(), 5u);
  for (const auto& s : report["steps"])
    for (const char* key : {"name", "macs", "params", "images_per_second", "top1", "runtime", "latency_ms",
                            "executed_macs", "shortcuts"})
      EXPECT_TRUE(s.contains(key)) << key;
  EXPECT_EQ(report["target"]["macs"], 0.7);
  EXPECT_EQ(report["keep_shortcuts"], true);
  EXPECT_EQ(report["grouping"], "stream");
  EXPECT_EQ(report["group_reduction"], "mean");
  EXPECT_TRUE(fs::exists(dir.path / "accuracy_vs_speed.png") || !RMNET_WITH_OPENCV);
  for (const char* f : {"converted.rmnet", "round_1.rmnet", "round_2.rmnet", "int8.rmnet"})
    EXPECT_TRUE(fs::exists(dir.path / f)) << f;
  auto back = load_model((dir.path / "round_2.rmnet").string());
  EXPECT_EQ(count_flops(*back, 1, 12), r.steps[3].macs);
  EXPECT_EQ(executed_macs(dynamic_cast<PlainNetImpl&>(*back), 12), r.steps[3].executed_macs);
  // keep_shortcuts off: the plain form's MACs meet the target; the copies are convolutions to it
  TempDir plain_dir("compress_macs_plain");
  auto p = compress(*model, train, test_set,
                    small(plain_dir.path.string()).target_macs(0.7).rounds(1).finetune_epochs(0).keep_shortcuts(false));
  ASSERT_EQ(p.steps.size(), 3u);
  EXPECT_LE(p.steps[2].macs, static_cast<int64_t>(0.7 * static_cast<double>(macs)));
  EXPECT_LT(p.steps[2].shortcuts, 3);  // the free refit moved the copies
  EXPECT_LE(p.steps[2].executed_macs, p.steps[2].macs);
  // the folder exists now: a second run is refused before any work
  EXPECT_NE(test::error_of([&] { compress(*model, train, test_set, small(dir.path.string()).target_macs(0.7)); })
                .find("exists"),
            std::string::npos);
}

TEST(Compress, BadTargetsAreRefusedAndAFailedRunLeavesNothing) {
  auto train = test::quadrants(64, 5), test_set = test::quadrants(32, 6);
  auto model = trained_resnet8(train, test_set);
  TempDir dir("compress_bad");
  const auto err = [&](CompressOptions o) { return test::error_of([&] { compress(*model, train, test_set, o); }); };
  EXPECT_NE(err(small(dir.path.string())).find("exactly one"), std::string::npos);
  EXPECT_NE(err(small(dir.path.string()).target_macs(1.5)).find("(0, 1]"), std::string::npos);
  EXPECT_NE(err(small(dir.path.string()).target_speedup(0.5)).find("at least 1"), std::string::npos);
  EXPECT_NE(err(small(dir.path.string()).target_latency_ms(2.0).target_macs(0.5)).find("exactly one"),
            std::string::npos);
  // unreachable: fails in the first round, after the folder was started
  const auto e = err(small(dir.path.string()).target_macs(1e-6));
  EXPECT_NE(e.find("cannot be reached"), std::string::npos) << e;
  EXPECT_FALSE(fs::exists(dir.path));
  for (const auto& entry : fs::directory_iterator(dir.path.parent_path()))
    EXPECT_EQ(entry.path().filename().string().find(dir.path.filename().string() + ".partial"), std::string::npos);
}

}  // namespace
}  // namespace rmnet
