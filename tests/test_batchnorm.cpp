// Synchronised BatchNorm: its normalisation equals torch's BatchNorm2d in training mode (output,
// gradients, running statistics) when there is one rank, and ranks simulated by threads with an
// in-memory all-reduce together equal one BatchNorm on the whole batch, gradients included.
#include <gtest/gtest.h>

#include <condition_variable>
#include <mutex>
#include <thread>

#include "helpers.h"
#include "rmnet/models/batchnorm.h"
#include "rmnet/models/registry.h"
#include "rmnet/models/resnet.h"

using namespace rmnet;

namespace {

double max_rel(const torch::Tensor& a, const torch::Tensor& b) {
  return ((a - b).abs().max() / b.abs().max().clamp_min(1e-30)).item<double>();
}

/// A torch BatchNorm2d and an rmnet one with the same random affine parameters and running
/// statistics.
std::pair<torch::nn::BatchNorm2d, BatchNorm2d> twin_bns(int64_t c, torch::ScalarType dt,
                                                        torch::nn::BatchNorm2dOptions o) {
  torch::nn::BatchNorm2d ref(o);
  BatchNorm2d ours(o);
  ref->to(dt);
  ours->to(dt);
  torch::NoGradGuard g;
  if (o.affine()) {
    ref->weight.copy_(torch::rand({c}, dt) + 0.5);
    ref->bias.copy_(torch::randn({c}, dt));
    ours->weight.copy_(ref->weight);
    ours->bias.copy_(ref->bias);
  }
  if (o.track_running_stats()) {
    ref->running_mean.copy_(torch::randn({c}, dt) * 3);
    ref->running_var.copy_(torch::rand({c}, dt) + 0.5);
    ours->running_mean.copy_(ref->running_mean);
    ours->running_var.copy_(ref->running_var);
  }
  return {ref, ours};
}

/// An all-reduce over `world` threads of this process (what Gloo does across processes).
class ThreadGroup {
 public:
  explicit ThreadGroup(int world) : world_(world) {}
  void sum(torch::Tensor& t) {
    std::unique_lock<std::mutex> lock(m_);
    const int64_t generation = generation_;
    if (arrived_ == 0)
      acc_ = t.clone();
    else
      acc_ += t;
    if (++arrived_ == world_) {
      result_ = acc_;
      arrived_ = 0;
      ++generation_;
      ++calls_;
      cv_.notify_all();
    } else {
      cv_.wait(lock, [&] { return generation_ != generation; });
    }
    t.copy_(result_);
  }
  int64_t calls() const { return calls_; }

 private:
  int world_, arrived_ = 0;
  int64_t generation_ = 0, calls_ = 0;
  std::mutex m_;
  std::condition_variable cv_;
  torch::Tensor acc_, result_;
};

}  // namespace

class SyncBNOneRank : public ::testing::TestWithParam<torch::ScalarType> {};

TEST_P(SyncBNOneRank, EqualsTorchBatchNormInTraining) {
  const auto dt = GetParam();
  const double tol = dt == torch::kDouble ? 1e-10 : 2e-5;
  torch::manual_seed(5);
  const int64_t c = 3;
  // Far from zero mean and unit variance, so that the running-mean shift and the variance matter.
  for (auto o : {torch::nn::BatchNorm2dOptions(c), torch::nn::BatchNorm2dOptions(c).momentum(std::nullopt),
                 torch::nn::BatchNorm2dOptions(c).affine(false), torch::nn::BatchNorm2dOptions(c).track_running_stats(false)}) {
    auto [ref, ours] = twin_bns(c, dt, o);
    int64_t calls = 0;
    ours->set_sync(std::make_shared<const AllReduceSum>([&](torch::Tensor&) { ++calls; }));
    ASSERT_TRUE(ours->synchronised());
    for (int step = 0; step < 3; ++step) {
      auto x = (torch::randn({4, c, 5, 6}, dt) * 4 + 7).requires_grad_(true);
      auto x2 = x.detach().clone().requires_grad_(true);
      auto gy = torch::randn({4, c, 5, 6}, dt);
      auto y_ref = ref->forward(x);
      auto y = ours->forward(x2);
      EXPECT_EQ(y.scalar_type(), dt);
      EXPECT_LT(max_rel(y, y_ref), tol) << "output, step " << step;
      (y_ref * gy).sum().backward();
      (y * gy).sum().backward();
      EXPECT_LT(max_rel(x2.grad(), x.grad()), tol) << "input gradient, step " << step;
      if (o.affine()) {
        EXPECT_LT(max_rel(ours->weight.grad(), ref->weight.grad()), tol);
        EXPECT_LT(max_rel(ours->bias.grad(), ref->bias.grad()), tol);
        ours->weight.mutable_grad().zero_();
        ours->bias.mutable_grad().zero_();
        ref->weight.mutable_grad().zero_();
        ref->bias.mutable_grad().zero_();
      }
      if (o.track_running_stats()) {
        EXPECT_LT(max_rel(ours->running_mean, ref->running_mean), tol) << "running mean, step " << step;
        EXPECT_LT(max_rel(ours->running_var, ref->running_var), tol) << "running var, step " << step;
        EXPECT_EQ(ours->num_batches_tracked.item<int64_t>(), ref->num_batches_tracked.item<int64_t>());
      }
    }
    EXPECT_EQ(calls, 6);  // one all-reduce in forward and one in backward per step
    // Evaluation mode uses the running statistics and no collective.
    ours->eval();
    ref->eval();
    auto x = torch::randn({2, c, 3, 3}, dt);
    EXPECT_LT(max_rel(ours->forward(x), ref->forward(x)), tol);
    EXPECT_EQ(calls, 6);
  }
}

INSTANTIATE_TEST_SUITE_P(DTypes, SyncBNOneRank, ::testing::Values(torch::kFloat, torch::kDouble),
                         [](const auto& info) { return info.param == torch::kDouble ? "f64" : "f32"; });

TEST(SyncBN, ThreadRanksEqualOneBatchNormOnTheWholeBatch) {
  // Three ranks of 2 images each against one BatchNorm over the 6: outputs, input gradients,
  // parameter gradients (summed over ranks) and running statistics agree to float64 precision.
  torch::manual_seed(9);
  const int world = 3;
  const int64_t c = 4;
  const auto dt = torch::kDouble;
  auto [ref, proto] = twin_bns(c, dt, torch::nn::BatchNorm2dOptions(c));
  auto x = torch::randn({2 * world, c, 4, 4}, dt) * 2 - 5;
  auto gy = torch::randn({2 * world, c, 4, 4}, dt);
  auto xr = x.clone().requires_grad_(true);
  auto y_ref = ref->forward(xr);
  (y_ref * gy).sum().backward();

  ThreadGroup group(world);
  auto sum = std::make_shared<const AllReduceSum>([&group](torch::Tensor& t) { group.sum(t); });
  std::vector<BatchNorm2d> ranks;
  for (int r = 0; r < world; ++r) {
    BatchNorm2d bn{torch::nn::BatchNorm2dOptions(c)};
    bn->to(dt);
    torch::NoGradGuard g;
    for (auto& item : bn->named_parameters()) item.value().copy_(proto->named_parameters()[item.key()]);
    for (auto& item : bn->named_buffers()) item.value().copy_(proto->named_buffers()[item.key()]);
    EXPECT_EQ(set_batchnorm_sync(*bn, sum), 1u);
    ranks.push_back(bn);
  }
  std::vector<torch::Tensor> ys(world), grads(world);
  std::vector<std::thread> threads;
  for (int r = 0; r < world; ++r)
    threads.emplace_back([&, r] {
      auto xi = x.narrow(0, 2 * r, 2).clone().requires_grad_(true);
      ys[r] = ranks[r]->forward(xi);
      (ys[r] * gy.narrow(0, 2 * r, 2)).sum().backward();  // rank r's own loss
      grads[r] = xi.grad();
    });
  for (auto& t : threads) t.join();
  EXPECT_EQ(group.calls(), 2);
  EXPECT_LT(max_rel(torch::cat(ys), y_ref), 1e-12);
  // Each rank's input gradient includes what its images do to the other ranks' losses through the
  // shared statistics: together they are the gradient of the sum of all losses.
  EXPECT_LT(max_rel(torch::cat(grads), xr.grad()), 1e-10);
  auto wg = torch::zeros({c}, dt), bg = torch::zeros({c}, dt);
  for (auto& bn : ranks) {
    wg += bn->weight.grad();
    bg += bn->bias.grad();
    EXPECT_LT(max_rel(bn->running_mean, ref->running_mean), 1e-12);
    EXPECT_LT(max_rel(bn->running_var, ref->running_var), 1e-12);  // unbiased over all 6 images
  }
  EXPECT_LT(max_rel(wg, ref->weight.grad()), 1e-10);
  EXPECT_LT(max_rel(bg, ref->bias.grad()), 1e-10);

  // Without synchronisation a rank normalises with its own two images: clearly different.
  BatchNorm2d local{torch::nn::BatchNorm2dOptions(c)};
  local->to(dt);
  EXPECT_GT(max_rel(local->forward(x.narrow(0, 0, 2)), y_ref.narrow(0, 0, 2)), 1e-2);
}

TEST(SyncBN, EveryModelBatchNormCanSynchronise) {
  // The zoo builds its BN layers as rmnet::BatchNorm2d: set_batchnorm_sync finds them all.
  for (const std::string arch : {"resnet20", "resnet50", "mobilenet_v2_cifar", "repvgg_a0", "preact_resnet20",
                                 "se_resnet20", "rmnet26x3_32"}) {
    auto m = create_model(ModelOptions(arch).num_classes(10));
    size_t torch_bns = 0;
    for (const auto& mod : m->modules()) torch_bns += mod->as<torch::nn::BatchNorm2dImpl>() != nullptr;
    ASSERT_GT(torch_bns, 0u) << arch;
    EXPECT_EQ(set_batchnorm_sync(*m, std::make_shared<const AllReduceSum>([](torch::Tensor&) {})), torch_bns) << arch;
    EXPECT_EQ(set_batchnorm_sync(*m, nullptr), torch_bns) << arch;
  }
  // A torch::nn::BatchNorm2d (not ours) is named in the error.
  torch::nn::Sequential seq(torch::nn::Conv2d(3, 4, 3), torch::nn::BatchNorm2d(4));
  const auto msg = test::error_of([&] { set_batchnorm_sync(*seq, nullptr); });
  EXPECT_NE(msg.find("module '1' is a torch::nn::BatchNorm2d"), std::string::npos) << msg;
}

TEST(SyncBN, WholeModelOneRankEqualsUnsynchronised) {
  // A ResNet in training mode through the sync path (one rank) trains as through torch's BN.
  auto a = test::random_model("resnet8", torch::kDouble, true, 4);
  auto b = test::random_model("resnet8", torch::kDouble, true, 4);
  a->train();
  b->train();
  set_batchnorm_sync(*b, std::make_shared<const AllReduceSum>([](torch::Tensor&) {}));
  auto x = torch::randn({6, 3, 16, 16}, torch::kDouble) * 3;
  auto ya = a->forward(x), yb = b->forward(x);
  EXPECT_LT(max_rel(yb, ya), 1e-10);
  ya.square().sum().backward();
  yb.square().sum().backward();
  auto pa = a->parameters(), pb = b->parameters();
  ASSERT_EQ(pa.size(), pb.size());
  for (size_t i = 0; i < pa.size(); ++i)
    if (pa[i].grad().defined()) EXPECT_LT(max_rel(pb[i].grad(), pa[i].grad()), 1e-9) << "parameter " << i;
}

TEST(SyncBN, OneValuePerChannelOverAllRanksIsAnError) {
  // One image of 1x1 on a single rank: no batch statistics, as torch's BatchNorm2d says too.
  BatchNorm2d bn{torch::nn::BatchNorm2dOptions(3)};
  bn->set_sync(std::make_shared<const AllReduceSum>([](torch::Tensor&) {}));
  const auto msg = test::error_of([&] { bn->forward(torch::randn({1, 3, 1, 1})); });
  EXPECT_NE(msg.find("expected more than 1 value per channel over all ranks, got 1"), std::string::npos) << msg;
  // The same image on two ranks (the all-reduce doubles the sums and counts) is fine.
  bn->set_sync(std::make_shared<const AllReduceSum>([](torch::Tensor& t) { t.mul_(2); }));
  EXPECT_EQ(test::error_of([&] { bn->forward(torch::randn({1, 3, 1, 1})); }), "");
}
