// Data-parallel training: shards make the global batch, two Gloo ranks on 127.0.0.1 end with
// identical parameters equal to one process on the global batch, a dead rank or an incomplete
// rendezvous ends the job with an error in bounded time. The ranks are this test program run
// again (posix_spawn) with RMNET_TEST_DIST_ROLE set, so each is a separate process.
#include <gtest/gtest.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <sstream>
#include <thread>

#include "helpers.h"
#include "rmnet/convert/rm.h"
#include "rmnet/models/registry.h"
#include "rmnet/train/distributed.h"
#include "rmnet/train/trainer.h"

extern char** environ;

using namespace rmnet;
namespace fs = std::filesystem;

namespace {

constexpr int64_t kSamples = 64, kGlobalBatch = 16, kEpochs = 2;

std::shared_ptr<TensorDataset> quadrants() { return test::quadrants(kSamples, 7); }

/// A network without BatchNorm (resnet8 converted to its deploy form), same weights everywhere.
ModelPtr no_bn_model() {
  torch::manual_seed(3);
  auto m = create_model(ModelOptions("resnet8").num_classes(4).in_channels(1).track_block_stats(true));
  auto plain = convert(*m).plain;
  return plain.ptr();
}

/// resnet8 with its BatchNorm layers (training mode while training).
ModelPtr bn_model() {
  torch::manual_seed(3);
  return create_model(ModelOptions("resnet8").num_classes(4).in_channels(1));
}

/// Trains the model for kEpochs with the global batch split over `dist`'s ranks (or one process
/// when null); returns the parameters, then the floating buffers (BN running statistics).
std::vector<torch::Tensor> train_tiny(std::shared_ptr<Distributed> dist, bool with_bn = false, bool sync_bn = false) {
  const int world = dist ? dist->world_size() : 1, rank = dist ? dist->rank() : 0;
  auto model = with_bn ? bn_model() : no_bn_model();
  if (dist) dist->broadcast_module(*model);
  if (sync_bn) EXPECT_EQ(sync_batchnorm(*model, dist), 9u);  // resnet8: stem + 3 blocks x 2 + 2 downsamples
  DataLoader loader(quadrants(), random_crop_flip(2, normalization_for("mnist")),
                    LoaderOptions().batch_size(kGlobalBatch / world).drop_last(true).workers(1).seed(11)
                        .shard(rank).num_shards(world));
  TrainOptions o;
  o.weight_decay(5e-4).momentum(0.9).distributed(dist).schedule(
      ScheduleOptions().kind("cosine").lr(0.05).epochs(kEpochs).steps_per_epoch(
          static_cast<int64_t>(loader.batches_per_epoch())));
  auto opt = make_sgd(*model, o);
  TrainState state;
  while (state.epoch < kEpochs) train_epoch(*model, loader, *opt, o, state);
  std::vector<torch::Tensor> out;
  for (const auto& p : model->parameters()) out.push_back(p.detach().clone());
  for (const auto& b : model->buffers())
    if (b.is_floating_point()) out.push_back(b.clone());
  return out;
}

int free_port() {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = 0;
  bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a));
  socklen_t len = sizeof(a);
  getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  const int port = ntohs(a.sin_port);
  close(fd);
  return port;
}

/// Starts this test program as rank `rank` of 2 running the worker test `role`; output to `log`.
pid_t spawn_rank(const std::string& role, int rank, int port, const fs::path& dir, double timeout_s) {
  std::vector<std::string> env;
  for (char** e = environ; *e; ++e) env.emplace_back(*e);
  env.push_back("RMNET_TEST_DIST_ROLE=" + role);
  env.push_back("RMNET_TEST_DIST_DIR=" + dir.string());
  env.push_back("RMNET_TEST_DIST_TIMEOUT=" + std::to_string(timeout_s));
  env.push_back("WORLD_SIZE=2");
  env.push_back("RANK=" + std::to_string(rank));
  env.push_back("LOCAL_RANK=" + std::to_string(rank));
  env.push_back("MASTER_ADDR=127.0.0.1");
  env.push_back("MASTER_PORT=" + std::to_string(port));
  env.push_back("OMP_NUM_THREADS=1");
  std::vector<char*> envp;
  for (auto& s : env) envp.push_back(s.data());
  envp.push_back(nullptr);
  const std::string exe = fs::read_symlink("/proc/self/exe").string();
  std::string filter = "--gtest_filter=DistributedWorker.*";
  std::vector<char*> argv{const_cast<char*>(exe.c_str()), filter.data(), nullptr};
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  const std::string log = (dir / ("rank" + std::to_string(rank) + ".log")).string();
  posix_spawn_file_actions_addopen(&fa, 1, log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  posix_spawn_file_actions_adddup2(&fa, 1, 2);
  pid_t pid = -1;
  const int rc = posix_spawn(&pid, exe.c_str(), &fa, nullptr, argv.data(), envp.data());
  posix_spawn_file_actions_destroy(&fa);
  EXPECT_EQ(rc, 0) << "posix_spawn " << exe;
  return pid;
}

/// Waits for `pid` at most `limit`; returns its exit status (-1 if killed by a signal, -2 on
/// timeout, after killing it).
int wait_for(pid_t pid, std::chrono::seconds limit) {
  const auto end = std::chrono::steady_clock::now() + limit;
  while (std::chrono::steady_clock::now() < end) {
    int status = 0;
    if (waitpid(pid, &status, WNOHANG) == pid) return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  kill(pid, SIGKILL);
  waitpid(pid, nullptr, 0);
  return -2;
}

std::string read_text(const fs::path& p) {
  std::ifstream f(p);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

std::optional<std::string> role() {
  const char* r = std::getenv("RMNET_TEST_DIST_ROLE");
  if (!r) return std::nullopt;
  return std::string(r);
}

std::shared_ptr<Distributed> worker_group() {
  const double t = std::stod(std::getenv("RMNET_TEST_DIST_TIMEOUT"));
  return std::make_shared<Distributed>(
      *DistEnv::from_environment(),
      DistOptions().timeout(std::chrono::milliseconds(static_cast<int64_t>(t * 1000))), torch::kCPU);
}

fs::path fresh_dir(const std::string& name) {
  auto d = fs::temp_directory_path() / ("rmnet_dist_" + name + "_" + std::to_string(getpid()));
  fs::remove_all(d);
  fs::create_directories(d);
  return d;
}

}  // namespace

// ---- workers: run only as spawned ranks ---------------------------------------------------------

TEST(DistributedWorker, Train) {
  if (role() != "train") GTEST_SKIP() << "a rank of Distributed.TwoRanksEqualOneProcess";
  auto dist = worker_group();
  auto params = train_tiny(dist);
  torch::save(params, (fs::path(std::getenv("RMNET_TEST_DIST_DIR")) / ("params" + std::to_string(dist->rank()) + ".pt")).string());
}

TEST(DistributedWorker, SyncBN) {
  if (role() != "syncbn") GTEST_SKIP() << "a rank of Distributed.SyncBNTwoRanksEqualOneProcess";
  auto dist = worker_group();
  const auto dir = fs::path(std::getenv("RMNET_TEST_DIST_DIR"));
  const auto r = std::to_string(dist->rank());
  torch::save(train_tiny(dist, true, true), (dir / ("sync" + r + ".pt")).string());
  torch::save(train_tiny(dist, true, false), (dir / ("local" + r + ".pt")).string());
}

TEST(DistributedWorker, DieOrSurvive) {
  if (role() != "die") GTEST_SKIP() << "a rank of Distributed.DeadRankEndsTheJob";
  auto dist = worker_group();
  auto model = no_bn_model();
  auto params = model->parameters();
  for (int step = 0; step < 1000; ++step) {
    if (dist->rank() == 1 && step == 3) raise(SIGKILL);  // dies mid-run, like an OOM kill
    model->zero_grad();
    model->forward(torch::randn({4, 1, 12, 12})).sum().backward();
    dist->average_gradients(params);
  }
  FAIL() << "rank " << dist->rank() << " trained 1000 steps although rank 1 died";
}

// ---- tests ------------------------------------------------------------------------------------

TEST(Distributed, ShardsMakeTheGlobalBatch) {
  auto ds = quadrants();
  auto t = random_crop_flip(2, normalization_for("mnist"));
  DataLoader all(ds, t, LoaderOptions().batch_size(12).drop_last(true).workers(0).seed(5));
  DataLoader s0(ds, t, LoaderOptions().batch_size(4).drop_last(true).workers(2).seed(5).shard(0).num_shards(3));
  DataLoader s1(ds, t, LoaderOptions().batch_size(4).drop_last(true).workers(0).seed(5).shard(1).num_shards(3));
  DataLoader s2(ds, t, LoaderOptions().batch_size(4).drop_last(true).workers(1).seed(5).shard(2).num_shards(3));
  EXPECT_EQ(s0.samples_per_epoch(), 21u);  // floor(64 / 3): every shard the same
  EXPECT_EQ(s2.samples_per_epoch(), 21u);
  for (auto* l : {&s0, &s1, &s2}) EXPECT_EQ(l->batches_per_epoch(), all.batches_per_epoch());
  for (int64_t epoch : {0, 1}) {
    for (auto* l : {&all, &s0, &s1, &s2}) l->start_epoch(epoch);
    for (size_t b = 0; b < all.batches_per_epoch(); ++b) {
      auto g = *all.next();
      auto b0 = *s0.next(), b1 = *s1.next(), b2 = *s2.next();
      // shard r holds positions j * 3 + r: interleave to get the global batch, augmentation included
      auto images = torch::stack({b0.images, b1.images, b2.images}, 1).flatten(0, 1);
      auto labels = torch::stack({b0.labels, b1.labels, b2.labels}, 1).flatten(0, 1);
      EXPECT_TRUE(torch::equal(images, g.images)) << "epoch " << epoch << " batch " << b;
      EXPECT_TRUE(torch::equal(labels, g.labels)) << "epoch " << epoch << " batch " << b;
    }
  }
}

TEST(Distributed, EnvironmentParsing) {
  auto clear = [] {
    for (const char* v : {"WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT", "SLURM_NTASKS",
                          "SLURM_PROCID", "SLURM_LOCALID"})
      unsetenv(v);
  };
  if (role()) GTEST_SKIP();
  clear();
  EXPECT_FALSE(DistEnv::from_environment());
  setenv("WORLD_SIZE", "1", 1);
  EXPECT_FALSE(DistEnv::from_environment());  // one process: run as without data parallelism
  setenv("WORLD_SIZE", "4", 1);
  auto error_of = [] {
    try {
      DistEnv::from_environment();
    } catch (const std::exception& e) {
      return std::string(e.what());
    }
    return std::string();
  };
  EXPECT_NE(error_of().find("RANK"), std::string::npos);
  setenv("RANK", "4", 1);
  EXPECT_NE(error_of().find("RANK='4'"), std::string::npos);
  setenv("RANK", "2", 1);
  EXPECT_NE(error_of().find("MASTER_ADDR"), std::string::npos);
  setenv("MASTER_ADDR", "10.0.0.1", 1);
  setenv("MASTER_PORT", "http", 1);
  EXPECT_NE(error_of().find("MASTER_PORT"), std::string::npos);
  setenv("MASTER_PORT", "29400", 1);
  setenv("LOCAL_RANK", "1", 1);
  auto e = DistEnv::from_environment();
  ASSERT_TRUE(e);
  EXPECT_EQ(e->rank, 2);
  EXPECT_EQ(e->world_size, 4);
  EXPECT_EQ(e->local_rank, 1);
  EXPECT_EQ(e->master_addr, "10.0.0.1");
  EXPECT_EQ(e->master_port, 29400);
  clear();
  setenv("SLURM_NTASKS", "8", 1);  // srun without torchrun
  setenv("SLURM_PROCID", "5", 1);
  setenv("SLURM_LOCALID", "1", 1);
  setenv("MASTER_ADDR", "node1", 1);
  setenv("MASTER_PORT", "29500", 1);
  e = DistEnv::from_environment();
  ASSERT_TRUE(e);
  EXPECT_EQ(e->rank, 5);
  EXPECT_EQ(e->world_size, 8);
  EXPECT_EQ(e->local_rank, 1);
  clear();
}

TEST(Distributed, TwoRanksEqualOneProcess) {
  if (role()) GTEST_SKIP();
  const auto dir = fresh_dir("train");
  const int port = free_port();
  const pid_t r0 = spawn_rank("train", 0, port, dir, 60), r1 = spawn_rank("train", 1, port, dir, 60);
  const auto single = train_tiny(nullptr);  // meanwhile: one process, global batch
  const int s0 = wait_for(r0, std::chrono::seconds(300)), s1 = wait_for(r1, std::chrono::seconds(60));
  ASSERT_EQ(s0, 0) << read_text(dir / "rank0.log");
  ASSERT_EQ(s1, 0) << read_text(dir / "rank1.log");
  std::vector<torch::Tensor> p0, p1;
  torch::load(p0, (dir / "params0.pt").string());
  torch::load(p1, (dir / "params1.pt").string());
  ASSERT_EQ(p0.size(), single.size());
  ASSERT_EQ(p1.size(), single.size());
  const auto initial = no_bn_model()->parameters();
  double moved = 0;
  for (size_t i = 0; i < single.size(); ++i) {
    EXPECT_TRUE(torch::equal(p0[i], p1[i])) << "parameter " << i << " differs between the ranks";
    const double d = (p0[i] - single[i]).abs().max().item<double>();
    EXPECT_LT(d, 1e-5) << "parameter " << i << ": two ranks vs one process";
    moved = std::max(moved, (single[i] - initial[i]).abs().max().item<double>());
  }
  EXPECT_GT(moved, 1e-3);  // training did change the parameters (the comparison means something)
  fs::remove_all(dir);
}

TEST(Distributed, SyncBNTwoRanksEqualOneProcess) {
  // BatchNorm in training mode: with synchronised BN, 2 ranks x 8 images train like 1 process x
  // 16 (parameters and running statistics); with each rank's own statistics they do not.
  if (role()) GTEST_SKIP();
  const auto dir = fresh_dir("syncbn");
  const int port = free_port();
  const pid_t r0 = spawn_rank("syncbn", 0, port, dir, 60), r1 = spawn_rank("syncbn", 1, port, dir, 60);
  const auto single = train_tiny(nullptr, true);
  const int s0 = wait_for(r0, std::chrono::seconds(300)), s1 = wait_for(r1, std::chrono::seconds(60));
  ASSERT_EQ(s0, 0) << read_text(dir / "rank0.log");
  ASSERT_EQ(s1, 0) << read_text(dir / "rank1.log");
  std::vector<torch::Tensor> sync0, sync1, local0;
  torch::load(sync0, (dir / "sync0.pt").string());
  torch::load(sync1, (dir / "sync1.pt").string());
  torch::load(local0, (dir / "local0.pt").string());
  ASSERT_EQ(sync0.size(), single.size());
  ASSERT_EQ(sync1.size(), single.size());
  ASSERT_EQ(local0.size(), single.size());
  double sync_diff = 0, local_diff = 0;
  for (size_t i = 0; i < single.size(); ++i) {
    EXPECT_TRUE(torch::equal(sync0[i], sync1[i])) << "tensor " << i << " differs between the ranks";
    const double d = (sync0[i] - single[i]).abs().max().item<double>();
    EXPECT_LT(d, 1e-5) << "tensor " << i << ": two synchronised ranks vs one process";
    sync_diff = std::max(sync_diff, d);
    local_diff = std::max(local_diff, (local0[i] - single[i]).abs().max().item<double>());
  }
  EXPECT_GT(local_diff, 1e-3) << "per-rank statistics should train differently (else the test shows nothing)";
  std::cout << "max difference to one process: synchronised " << sync_diff << ", per-rank BN " << local_diff << "\n";
  fs::remove_all(dir);
}

TEST(Distributed, DeadRankEndsTheJob) {
  if (role()) GTEST_SKIP();
  const auto dir = fresh_dir("die");
  const int port = free_port();
  const auto t0 = std::chrono::steady_clock::now();
  const pid_t r0 = spawn_rank("die", 0, port, dir, 20), r1 = spawn_rank("die", 1, port, dir, 20);
  const int s1 = wait_for(r1, std::chrono::seconds(60));
  const int s0 = wait_for(r0, std::chrono::seconds(60));
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_EQ(s1, -1) << "rank 1 should have been killed";
  const auto log = read_text(dir / "rank0.log");
  EXPECT_NE(s0, 0) << log;
  EXPECT_NE(s0, -2) << "rank 0 hung after rank 1 died";
  EXPECT_LT(seconds, 50.0);
  EXPECT_NE(log.find("rank 0: gradient all-reduce failed"), std::string::npos) << log;
  fs::remove_all(dir);
}

TEST(Distributed, IncompleteRendezvousTimesOut) {
  if (role()) GTEST_SKIP();
  DistEnv e;
  e.rank = 0;
  e.world_size = 2;
  e.master_port = free_port();
  const auto t0 = std::chrono::steady_clock::now();
  std::string msg;
  try {
    Distributed d(e, DistOptions().timeout(std::chrono::seconds(2)), torch::kCPU);
  } catch (const DistributedError& err) {
    msg = err.what();
  }
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_NE(msg.find("rendezvous at MASTER_ADDR:MASTER_PORT=127.0.0.1:"), std::string::npos) << msg;
  EXPECT_NE(msg.find("WORLD_SIZE=2"), std::string::npos) << msg;
  EXPECT_LT(seconds, 15.0);
  EXPECT_GT(seconds, 1.0);
}

TEST(Distributed, BadOptions) {
  if (role()) GTEST_SKIP();
  DistEnv e;
  e.world_size = 2;
  auto error_of = [&](DistOptions o, torch::Device d) {
    try {
      Distributed x(e, o, d);
    } catch (const std::exception& err) {
      return std::string(err.what());
    }
    return std::string();
  };
  EXPECT_NE(error_of(DistOptions().backend("mpi"), torch::kCPU).find("backend 'mpi' is not one of"), std::string::npos);
  EXPECT_NE(error_of(DistOptions().backend("nccl"), torch::kCPU).find("backend nccl"), std::string::npos);
}
