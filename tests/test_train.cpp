// The trainer: it learns, schedules are right, resume is exact, checkpoints are atomic, NaN stops.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "helpers.h"
#include "rmnet/deploy/shortcuts.h"
#include "rmnet/models/profile.h"
#include "rmnet/convert/rm.h"
#include "rmnet/deploy/runtime.h"
#include "rmnet/io/model_file.h"
#include "rmnet/train/checkpoint.h"
#include "rmnet/train/trainer.h"

using namespace rmnet;
namespace fs = std::filesystem;

namespace {

using test::quadrants;

ModelPtr small_resnet() {
  torch::manual_seed(0);
  return create_model(ModelOptions("resnet20").num_classes(4).in_channels(1).track_block_stats(true));
}

TrainOptions options_for(int64_t epochs, size_t steps) {
  TrainOptions o;
  o.weight_decay(1e-4).schedule(ScheduleOptions().kind("cosine").lr(0.05).epochs(epochs).steps_per_epoch(
      static_cast<int64_t>(steps)));
  return o;
}

std::vector<torch::Tensor> params_of(const ModelImpl& m) {
  std::vector<torch::Tensor> v;
  for (const auto& p : m.parameters()) v.push_back(p.detach().clone());
  for (const auto& b : m.buffers()) v.push_back(b.detach().clone());
  return v;
}

}  // namespace

TEST(Train, Schedules) {
  auto s = ScheduleOptions().lr(1.0).epochs(10).steps_per_epoch(10);
  EXPECT_DOUBLE_EQ(learning_rate(s.kind("cosine"), 0), 1.0);
  EXPECT_NEAR(learning_rate(s.kind("cosine"), 50), 0.5, 1e-12);
  EXPECT_NEAR(learning_rate(s.kind("cosine"), 100), 0.0, 1e-12);
  EXPECT_NEAR(learning_rate(s.kind("step").step_size(3).gamma(0.1), 35), 0.1, 1e-12);  // epoch 3
  EXPECT_NEAR(learning_rate(s.kind("step").step_size(3).gamma(0.1), 65), 0.01, 1e-12);  // epoch 6
  EXPECT_NEAR(learning_rate(s.kind("multistep").milestones({2, 5}).gamma(0.5), 19), 1.0, 1e-12);
  EXPECT_NEAR(learning_rate(s.kind("multistep").milestones({2, 5}).gamma(0.5), 20), 0.5, 1e-12);
  EXPECT_NEAR(learning_rate(s.kind("multistep").milestones({2, 5}).gamma(0.5), 55), 0.25, 1e-12);
  auto w = ScheduleOptions().kind("constant").lr(1.0).epochs(10).steps_per_epoch(10).warmup_epochs(2).warmup_factor(0.0);
  EXPECT_NEAR(learning_rate(w, 10), 0.5, 1e-12);
  EXPECT_NEAR(learning_rate(w, 20), 1.0, 1e-12);
  EXPECT_THROW(learning_rate(s.kind("linear"), 0), c10::Error);
}

// TrainOptions::keep_dirac: fine-tuning a converted network (BN kept) leaves its Dirac copies, the
// identity BNs after them (running statistics included) and the merge columns exactly as they were,
// so the onednn runtime still finds every block's shortcut; the rest trains. Without it the copies
// train too and the shortcuts are gone.
TEST(Train, KeepDiracKeepsTheShortcuts) {
  auto train = quadrants(256, 1);
  torch::manual_seed(0);
  auto residual = create_model(ModelOptions("resnet8").num_classes(4).in_channels(1).track_block_stats(true));
  residual->eval();
  for (const bool keep : {true, false}) {
    SCOPED_TRACE(keep);
    auto r = convert(*residual, ConvertOptions().keep_bn(true));
    ASSERT_TRUE(r.report.passed);
    auto plain = r.plain;
    const auto before = params_of(*plain);
    DataLoader tl(train, normalize({{0.3}, {0.3}}), LoaderOptions().batch_size(32).drop_last(true).seed(1));
    auto o = options_for(1, tl.batches_per_epoch()).keep_dirac(keep);
    auto opt = make_sgd(*plain, o);
    TrainState state;
    train_epoch(*plain, tl, *opt, o, state);
    const auto after = params_of(*plain);
    int64_t changed = 0;
    for (size_t i = 0; i < before.size(); ++i) changed += !before[i].equal(after[i]);
    EXPECT_GT(changed, static_cast<int64_t>(before.size()) / 2);  // it trained
    plain->eval();
    // kept as they were: the identity block still adds its input (its merge BN did not move), so the
    // runtime executes exactly the residual network's MACs
    if (keep) EXPECT_EQ(executed_macs(*plain, 12), count_flops(*residual, 1, 12));
    if (!onednn_direct_available()) continue;
    const auto g = deploy(*plain, DeployOptions().runtime(Runtime::OneDNN))->graph();
    EXPECT_EQ(g.find("; 3 Dirac shortcuts") != std::string::npos, keep) << g;
    // and the runtime computes the trained network's function
    const auto x = torch::randn({2, 1, 12, 12});
    const auto ref = plain->forward(x);
    EXPECT_LE((deploy(*plain, DeployOptions().runtime(Runtime::OneDNN))->forward(x) - ref).abs().max().item<double>(),
              1e-4 * ref.abs().max().item<double>());
  }
}

TEST(Train, LearnsASyntheticTask) {
  auto train = quadrants(512, 1), test = quadrants(256, 2);
  auto model = small_resnet();
  DataLoader tl(train, normalize({{0.3}, {0.3}}), LoaderOptions().batch_size(32).drop_last(true).seed(1));
  DataLoader vl(test, normalize({{0.3}, {0.3}}), LoaderOptions().batch_size(64).shuffle(false));
  auto o = options_for(3, tl.batches_per_epoch());
  auto opt = make_sgd(*model, o);
  TrainState state;
  for (int e = 0; e < 3; ++e) train_epoch(*model, tl, *opt, o, state);
  EXPECT_EQ(state.epoch, 3);
  EXPECT_EQ(state.global_step, 3 * 16);
  auto ev = evaluate(*model, vl);
  EXPECT_GE(ev.top1, 0.95) << "test accuracy " << ev.top1;
  EXPECT_EQ(ev.samples, 256);
  EXPECT_EQ(predict(*model, vl).numel(), 256);
}

TEST(Train, ResumeReproducesTheUninterruptedRun) {
  auto train = quadrants(128, 3);
  auto make_loader = [&] {
    return std::make_unique<DataLoader>(train, random_crop_flip(1, {{0.3}, {0.3}}),
                                        LoaderOptions().batch_size(16).drop_last(true).seed(7).workers(2));
  };
  const auto path = test::temp_path("resume.ckpt");
  // uninterrupted: 2 epochs
  torch::manual_seed(11);
  auto a = small_resnet();
  auto la = make_loader();
  auto o = options_for(2, la->batches_per_epoch());
  auto opt_a = make_sgd(*a, o);
  TrainState sa;
  train_epoch(*a, *la, *opt_a, o, sa);
  train_epoch(*a, *la, *opt_a, o, sa);
  // interrupted: 1 epoch and 3 batches, checkpoint, then a fresh process-like restart
  auto b = small_resnet();
  auto lb = make_loader();
  auto opt_b = make_sgd(*b, o);
  TrainState sb;
  train_epoch(*b, *lb, *opt_b, o, sb);
  int calls = 0;
  train_epoch(*b, *lb, *opt_b, o, sb, nullptr, [&] { return calls++ == 3; });
  EXPECT_EQ(sb.epoch, 1);
  EXPECT_EQ(sb.batch_in_epoch, 3);
  save_checkpoint(path, *b, *opt_b, sb, 0.5, "{}");
  auto c = load_checkpoint(path);
  EXPECT_EQ(c.state.batch_in_epoch, 3);
  EXPECT_DOUBLE_EQ(c.best_top1, 0.5);
  auto lc = make_loader();
  auto opt_c = make_sgd(*c.model, o);
  load_optimizer_state(path, *opt_c);
  train_epoch(*c.model, *lc, *opt_c, o, c.state);
  EXPECT_EQ(c.state.epoch, 2);
  EXPECT_EQ(c.state.global_step, sa.global_step);
  auto pa = params_of(*a), pc = params_of(*c.model);
  ASSERT_EQ(pa.size(), pc.size());
  for (size_t i = 0; i < pa.size(); ++i) EXPECT_TRUE(torch::equal(pa[i], pc[i])) << "tensor " << i;
  fs::remove(path);
}

TEST(Train, InterruptedCheckpointWriteKeepsThePreviousOne) {
  auto model = small_resnet();
  auto o = options_for(1, 1);
  auto opt = make_sgd(*model, o);
  const auto path = test::temp_path("atomic.ckpt");
  TrainState st;
  st.epoch = 4;
  save_checkpoint(path, *model, *opt, st, 0.25, "{}");
  // A writer killed part-way leaves only a partial temporary file beside the checkpoint
  // (write_file_atomic renames only complete files); the checkpoint itself is untouched.
  std::string bytes;
  {
    std::ifstream in(path, std::ios::binary);
    bytes.assign(std::istreambuf_iterator<char>(in), {});
  }
  std::ofstream(path + ".tmp-99999", std::ios::binary) << bytes.substr(0, bytes.size() / 3);
  auto c = load_checkpoint(path);
  EXPECT_EQ(c.state.epoch, 4);
  // and a failed write (unwritable folder) changes nothing
  EXPECT_THROW(save_checkpoint(test::temp_path("no-dir") + "/x.ckpt", *model, *opt, st, 0.0, "{}"), c10::Error);
  // a truncated checkpoint is rejected with its name
  std::ofstream(path, std::ios::binary) << bytes.substr(0, bytes.size() / 2);
  try {
    load_checkpoint(path);
    FAIL() << "expected an error";
  } catch (const c10::Error& e) {
    EXPECT_NE(std::string(e.what()).find(path), std::string::npos) << e.what();
  }
  fs::remove(path);
  fs::remove(path + ".tmp-99999");
}

TEST(Train, NonFiniteLossStopsWithEpochAndStep) {
  auto train = quadrants(64, 4);
  auto model = small_resnet();
  DataLoader tl(train, normalize({{0.3}, {0.3}}), LoaderOptions().batch_size(16).seed(1));
  auto o = options_for(1, tl.batches_per_epoch());
  o.schedule(o.schedule().lr(1e30));
  auto opt = make_sgd(*model, o);
  TrainState state;
  try {
    train_epoch(*model, tl, *opt, o, state);
    FAIL() << "expected NonFiniteLoss";
  } catch (const NonFiniteLoss& e) {
    EXPECT_NE(std::string(e.what()).find("epoch 1, step"), std::string::npos) << e.what();
  }
}

TEST(Train, NoDecayOnBatchNormAndBias) {
  auto model = small_resnet();
  auto opt = make_sgd(*model, TrainOptions().no_decay_bn_bias(true));
  ASSERT_EQ(opt->param_groups().size(), 2u);
  for (const auto& p : opt->param_groups()[1].params()) EXPECT_LE(p.dim(), 1);
  EXPECT_EQ(static_cast<const torch::optim::SGDOptions&>(opt->param_groups()[1].options()).weight_decay(), 0.0);
}
