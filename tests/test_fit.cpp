// fit (train/fit.h): a stopped run resumed from its checkpoint ends exactly where the uninterrupted
// run ends, the files of a run, the NaN stop keeps the last checkpoint, mismatches are refused.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>

#include "helpers.h"
#include "rmnet/train/checkpoint.h"
#include "rmnet/train/fit.h"

using namespace rmnet;
namespace fs = std::filesystem;

namespace {

ModelPtr tiny_resnet(uint64_t seed) {
  torch::manual_seed(seed);
  return create_model(ModelOptions("resnet8").num_classes(4).in_channels(1).track_block_stats(true));
}

/// 128 training images in batches of 16: 8 steps per epoch.
FitOptions tiny_fit(const std::string& out) {
  FitOptions o;
  o.epochs(2).batch_size(16).test_batch_size(64).workers(1).seed(5).out(out);
  o.train_transform(random_crop_flip(1, {{0.3}, {0.3}})).test_transform(normalize({{0.3}, {0.3}}));
  o.train().weight_decay(1e-4).schedule().lr(0.05);
  o.config(R"({"dataset": "quadrants"})");
  return o;
}

std::vector<torch::Tensor> tensors_of(const ModelImpl& m) {
  std::vector<torch::Tensor> v;
  for (const auto& p : m.parameters()) v.push_back(p.detach().clone());
  for (const auto& b : m.buffers()) v.push_back(b.detach().clone());
  return v;
}

int64_t lines_of(const fs::path& path) {
  std::ifstream in(path);
  int64_t n = 0;
  for (std::string line; std::getline(in, line);) n += !line.empty();
  return n;
}

struct TempDir {
  fs::path path;
  explicit TempDir(const std::string& name) : path(test::temp_path(name)) { fs::remove_all(path); }
  ~TempDir() { fs::remove_all(path); }
};

}  // namespace

TEST(Fit, StoppedAndResumedRunEqualsTheUninterruptedOne) {
  auto train = test::quadrants(128, 3), test_set = test::quadrants(64, 4);
  TempDir a_dir("fit_a"), b_dir("fit_b");
  // uninterrupted: 2 epochs
  auto a = tiny_resnet(1);
  const auto ra = fit(*a, train, test_set, tiny_fit(a_dir.path.string()));
  EXPECT_FALSE(ra.stopped);
  EXPECT_EQ(ra.state.epoch, 2);
  EXPECT_EQ(ra.state.global_step, 16);
  ASSERT_EQ(ra.epochs.size(), 2u);
  EXPECT_EQ(ra.epochs[1].epoch, 2);
  EXPECT_DOUBLE_EQ(ra.best_top1, std::max(ra.epochs[0].test.top1, ra.epochs[1].test.top1));
  for (const char* f : {"checkpoint.ckpt", "best.rmnet", "final.rmnet", "config.json", "train_summary.json"})
    EXPECT_TRUE(fs::exists(a_dir.path / f)) << f;
  EXPECT_EQ(lines_of(a_dir.path / "metrics.jsonl"), 2);
  nlohmann::json cfg;
  std::ifstream(a_dir.path / "config.json") >> cfg;
  EXPECT_EQ(cfg.at("dataset"), "quadrants");  // the caller's description
  EXPECT_EQ(cfg.at("batch_size"), 16);        // and fit's settings
  EXPECT_DOUBLE_EQ(cfg.at("lr").get<double>(), 0.05);

  // stopped after 11 steps (epoch 2, batch 3): a checkpoint, one metrics line, no final model
  auto b = tiny_resnet(1);
  int64_t steps = 0;
  auto ob = tiny_fit(b_dir.path.string());
  ob.on_batch([&](size_t, size_t, const EpochStats&, double) { ++steps; });
  ob.stop([&] { return steps >= 11; });
  const auto rb = fit(*b, train, test_set, ob);
  EXPECT_TRUE(rb.stopped);
  EXPECT_EQ(rb.state.epoch, 1);
  EXPECT_EQ(rb.state.batch_in_epoch, 3);
  EXPECT_EQ(rb.state.global_step, 11);
  EXPECT_EQ(rb.checkpoint, (b_dir.path / "checkpoint.ckpt").string());
  EXPECT_EQ(lines_of(b_dir.path / "metrics.jsonl"), 1);
  EXPECT_FALSE(fs::exists(b_dir.path / "final.rmnet"));
  EXPECT_EQ(load_checkpoint(rb.checkpoint).state.batch_in_epoch, 3);

  // resumed into a model with other weights: they, the optimizer and the position are restored
  auto c = tiny_resnet(99);
  const auto rc = fit(*c, train, test_set, tiny_fit(b_dir.path.string()).resume(rb.checkpoint));
  EXPECT_FALSE(rc.stopped);
  EXPECT_EQ(rc.state.global_step, 16);
  ASSERT_EQ(rc.epochs.size(), 1u);
  EXPECT_EQ(rc.epochs[0].epoch, 2);
  EXPECT_EQ(lines_of(b_dir.path / "metrics.jsonl"), 2);
  EXPECT_DOUBLE_EQ(rc.epochs[0].test.top1, ra.epochs[1].test.top1);
  const auto ta = tensors_of(*a), tc = tensors_of(*c);
  ASSERT_EQ(ta.size(), tc.size());
  for (size_t i = 0; i < ta.size(); ++i) EXPECT_TRUE(torch::equal(ta[i], tc[i])) << "tensor " << i;
}

TEST(Fit, NonFiniteLossStopsAndKeepsTheLastCheckpoint) {
  auto train = test::quadrants(64, 5), test_set = test::quadrants(32, 6);
  TempDir dir("fit_nan");
  auto model = tiny_resnet(2);
  auto o = tiny_fit(dir.path.string()).batch_size(32);
  o.on_epoch([&](const EpochRecord&) {  // after epoch 1 the weights become NaN
    torch::NoGradGuard g;
    model->parameters().front().fill_(std::numeric_limits<double>::quiet_NaN());
  });
  try {
    fit(*model, train, test_set, o);
    FAIL() << "expected NonFiniteLoss";
  } catch (const NonFiniteLoss& e) {
    EXPECT_EQ(e.epoch, 1);
    EXPECT_NE(std::string(e.what()).find("epoch 2"), std::string::npos) << e.what();
  }
  EXPECT_EQ(load_checkpoint((dir.path / "checkpoint.ckpt").string()).state.epoch, 1);
  EXPECT_EQ(lines_of(dir.path / "metrics.jsonl"), 1);
  EXPECT_FALSE(fs::exists(dir.path / "final.rmnet"));
}

TEST(Fit, RefusesMismatchedDataAndCheckpoints) {
  auto train = test::quadrants(32, 7);
  TempDir dir("fit_bad");
  torch::manual_seed(0);
  auto three = create_model(ModelOptions("resnet8").num_classes(3).in_channels(1));
  EXPECT_NE(test::error_of([&] { fit(*three, train, train, tiny_fit("")); }).find("3 classes"), std::string::npos);
  // a checkpoint of another architecture is refused, naming the file
  auto model = tiny_resnet(3);
  auto o = tiny_fit(dir.path.string()).epochs(1).batch_size(32);
  fit(*model, train, train, o);
  torch::manual_seed(0);
  auto other = create_model(ModelOptions("resnet14").num_classes(4).in_channels(1));
  const auto ckpt = (dir.path / "checkpoint.ckpt").string();
  const auto err = test::error_of([&] { fit(*other, train, train, tiny_fit("").resume(ckpt)); });
  EXPECT_NE(err.find(ckpt), std::string::npos) << err;
  EXPECT_NE(err.find("resnet8"), std::string::npos) << err;
}

// Distillation: the loss is (1 - a) CE + a T^2 KL(teacher || student), zero KL when the logits agree;
// a student trained on the distillation term alone moves towards the teacher's predictions, even
// against labels that say otherwise.
TEST(Fit, DistillationLossAndTeacher) {
  torch::manual_seed(3);
  auto logits = torch::randn({6, 5}, torch::kDouble), other = torch::randn({6, 5}, torch::kDouble) * 3;
  auto y = torch::randint(0, 5, {6}, torch::kLong);
  TrainOptions to;
  to.distill_weight(0.7).distill_temperature(2.0);
  const double ce = torch::nn::functional::cross_entropy(logits, y).item<double>();
  EXPECT_NEAR(training_loss(logits, y, {}, to).item<double>(), ce, 1e-12);
  EXPECT_NEAR(training_loss(logits, y, logits, to).item<double>(), 0.3 * ce, 1e-6);
  auto q = torch::softmax(other / 2.0, 1), p = torch::softmax(logits / 2.0, 1);
  const double kl = (q * (q.log() - p.log())).sum(1).mean().item<double>();
  EXPECT_NEAR(training_loss(logits, y, other, to).item<double>(), 0.3 * ce + 0.7 * 4.0 * kl, 1e-5);
  EXPECT_NE(test::error_of([&] { training_loss(logits, y, torch::zeros({6, 4}), to); }).find("same classes"),
            std::string::npos);

  // a teacher that always answers "class (true + 1) % 4": the student learns the teacher, not the labels
  auto train = test::quadrants(128, 3), test_set = test::quadrants(64, 4);
  struct Shifted : ModelImpl {
    ModelPtr inner;
    explicit Shifted(ModelPtr m) : ModelImpl(m->options()), inner(std::move(m)) {}
    torch::Tensor forward(torch::Tensor x) override { return inner->forward(x).roll(1, 1) * 3.0; }
    std::string family() const override { return "resnet"; }
  };
  auto trained = tiny_resnet(1);
  auto fo = tiny_fit("");
  fo.epochs(3);
  fit(*trained, train, test_set, fo);  // a teacher that knows the task
  trained->eval();
  auto teacher = std::make_shared<Shifted>(trained);
  auto student = tiny_resnet(2);
  auto so = tiny_fit("");
  so.epochs(3).teacher(teacher).distill_weight(1.0).distill_temperature(1.0);
  EXPECT_EQ(so.train().teacher(), so.teacher());
  fit(*student, train, test_set, so);
  student->eval();
  torch::NoGradGuard ng;
  int64_t agree = 0, n = 0;
  Rng rng(0);
  const auto norm = normalize({{0.3}, {0.3}});
  for (size_t i = 0; i < test_set->size(); ++i) {
    auto img = norm(test_set->get(i).image, rng).unsqueeze(0);
    agree += student->forward(img).argmax(1).item<int64_t>() == teacher->forward(img).argmax(1).item<int64_t>();
    ++n;
  }
  EXPECT_GT(agree, n * 3 / 4) << agree << " of " << n;
  auto bad = tiny_fit("");
  bad.epochs(1).teacher(teacher).distill_weight(1.5);
  EXPECT_NE(test::error_of([&] { fit(*tiny_resnet(3), train, test_set, bad); }).find("distill_weight"),
            std::string::npos);
}
