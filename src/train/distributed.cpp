#include "rmnet/train/distributed.h"

#include <cstdlib>
#include <map>

#include <fmt/format.h>
#include <torch/torch.h>

#include "rmnet/models/batchnorm.h"

// c10d: the torch wheel's headers. ProcessGroupGloo.hpp includes Gloo headers the wheel does not
// ship; src/train/c10d_shim provides the few declarations it needs (see the README there).
#include <torch/csrc/distributed/c10d/Backend.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#include <torch/csrc/distributed/c10d/Work.hpp>
#ifdef USE_C10D_GLOO
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#endif
#ifdef USE_C10D_NCCL
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#endif

namespace rmnet {

bool nccl_compiled() {
#ifdef USE_C10D_NCCL
  return true;
#else
  return false;
#endif
}

namespace {

std::optional<std::string> env(const char* name) {
  const char* v = std::getenv(name);
  if (!v || !*v) return std::nullopt;
  return std::string(v);
}

int env_int(const std::string& name, const std::string& value, int lo, int hi) {
  size_t used = 0;
  long long v = 0;
  try {
    v = std::stoll(value, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  TORCH_CHECK(used == value.size() && used > 0 && v >= lo && v <= hi, "environment variable ", name, "='", value,
              "' is not an integer in [", lo, ", ", hi, "]");
  return static_cast<int>(v);
}

/// The value of the first variable that is set, with its name.
std::optional<std::pair<std::string, std::string>> first_env(std::initializer_list<const char*> names) {
  for (const char* n : names)
    if (auto v = env(n)) return std::make_pair(std::string(n), *v);
  return std::nullopt;
}

/// An exception's message without the C++ backtrace c10 errors carry.
std::string brief(const std::exception& e) {
  if (const auto* c = dynamic_cast<const c10::Error*>(&e)) return c->what_without_backtrace();
  return e.what();
}

bool is_loopback(const std::string& host) {
  return host == "localhost" || host.rfind("127.", 0) == 0 || host == "::1";
}

}  // namespace

std::optional<DistEnv> DistEnv::from_environment() {
  auto ws = first_env({"WORLD_SIZE", "SLURM_NTASKS"});
  if (!ws) return std::nullopt;
  DistEnv e;
  e.world_size = env_int(ws->first, ws->second, 1, 1 << 20);
  if (e.world_size == 1) return std::nullopt;
  auto rank = ws->first == "WORLD_SIZE" ? first_env({"RANK"}) : first_env({"SLURM_PROCID"});
  TORCH_CHECK(rank, ws->first, "=", e.world_size, " but ", ws->first == "WORLD_SIZE" ? "RANK" : "SLURM_PROCID",
              " is not set (each process needs its rank in [0, ", e.world_size, "))");
  e.rank = env_int(rank->first, rank->second, 0, e.world_size - 1);
  auto local = ws->first == "WORLD_SIZE" ? first_env({"LOCAL_RANK"}) : first_env({"SLURM_LOCALID"});
  e.local_rank = local ? env_int(local->first, local->second, 0, e.world_size - 1) : 0;
  auto addr = env("MASTER_ADDR");
  TORCH_CHECK(addr, "WORLD_SIZE=", e.world_size, " but MASTER_ADDR is not set (the host of rank 0, e.g. 127.0.0.1)");
  e.master_addr = *addr;
  auto port = env("MASTER_PORT");
  TORCH_CHECK(port, "WORLD_SIZE=", e.world_size, " but MASTER_PORT is not set (a free TCP port on ", e.master_addr, ")");
  e.master_port = env_int("MASTER_PORT", *port, 1, 65535);
  return e;
}

struct Distributed::Impl {
  c10::intrusive_ptr<c10d::Store> store;
  c10::intrusive_ptr<c10d::Backend> pg;
  bool failed = false;

  ~Impl() {
    // After a failed collective the process group may still wait on a dead peer; tearing it down
    // could block for the whole timeout. The process is ending with an error anyway: leak it.
    if (failed) {
      (void)pg.release();
      (void)store.release();
    }
  }
};

Distributed::Distributed(const DistEnv& env_, const DistOptions& options, torch::Device device)
    : impl_(std::make_unique<Impl>()), env_(env_), options_(options), device_(device) {
  TORCH_CHECK(env_.world_size >= 1 && env_.rank >= 0 && env_.rank < env_.world_size, "rank ", env_.rank,
              " is not in [0, WORLD_SIZE=", env_.world_size, ")");
  TORCH_CHECK(options.timeout().count() > 0, "DistOptions::timeout must be positive (got ", options.timeout().count(), " ms)");
  backend_ = options.backend();
  if (backend_ == "auto") backend_ = device.is_cuda() ? "nccl" : "gloo";
  TORCH_CHECK(backend_ == "gloo" || backend_ == "nccl", "process group backend '", options.backend(),
              "' is not one of auto, gloo, nccl");
  if (backend_ == "nccl") {
    TORCH_CHECK(nccl_compiled(), "backend nccl: this build of LibTorch has no NCCL (use gloo)");
    TORCH_CHECK(device.is_cuda() && torch::cuda::is_available(),
                "backend nccl needs a CUDA device; use gloo on the CPU");
  }
  const auto where = fmt::format("{}:{}", env_.master_addr, env_.master_port);
  const double secs = static_cast<double>(options.timeout().count()) / 1000.0;
  try {
    c10d::TCPStoreOptions so;
    so.port = static_cast<uint16_t>(env_.master_port);
    so.isServer = env_.rank == 0;
    so.numWorkers = static_cast<size_t>(env_.world_size);
    so.waitWorkers = true;
    so.timeout = options.timeout();
    impl_->store = c10::make_intrusive<c10d::TCPStore>(env_.master_addr, so);
  } catch (const std::exception& e) {
    throw DistributedError(fmt::format(
        "rank {}: rendezvous at MASTER_ADDR:MASTER_PORT={} did not complete within the timeout ({} s) "
        "(WORLD_SIZE={}; did every rank start, is the port free on rank 0's host and reachable?): {}",
        env_.rank, where, secs, env_.world_size, brief(e)));
  }
  try {
    if (backend_ == "gloo") {
#ifdef USE_C10D_GLOO
      auto go = c10d::ProcessGroupGloo::Options::create(options.timeout());
      // GLOO_SOCKET_IFNAME picks a network interface (as in PyTorch); on one machine, loopback.
      if (auto ifname = env("GLOO_SOCKET_IFNAME"))
        go->devices.push_back(c10d::ProcessGroupGloo::createDeviceForInterface(*ifname));
      else if (is_loopback(env_.master_addr))
        go->devices.push_back(c10d::ProcessGroupGloo::createDeviceForHostname("127.0.0.1"));
      else
        go->devices.push_back(c10d::ProcessGroupGloo::createDefaultDevice());
      impl_->pg = c10::make_intrusive<c10d::ProcessGroupGloo>(impl_->store, env_.rank, env_.world_size, go);
#else
      TORCH_CHECK(false, "backend gloo: this build of LibTorch has no Gloo");
#endif
    } else {
#ifdef USE_C10D_NCCL
      auto no = c10d::ProcessGroupNCCL::Options::create();
      no->timeout = options.timeout();
      impl_->pg = c10::make_intrusive<c10d::ProcessGroupNCCL>(impl_->store, env_.rank, env_.world_size, no);
#endif
    }
    barrier();
  } catch (const DistributedError&) {
    throw;
  } catch (const std::exception& e) {
    impl_->failed = true;
    throw DistributedError(fmt::format("rank {}: could not connect the {} process group of {} ranks (rendezvous at {}) "
                                       "within the timeout ({} s): {}",
                                       env_.rank, backend_, env_.world_size, where, secs,
                                       brief(e)));
  }
}

Distributed::~Distributed() = default;

namespace {

/// Runs `op` and waits for its work; turns any failure into a DistributedError naming the peer
/// problem. Marks the group failed so teardown does not block.
template <typename Op>
void run_collective(bool& failed, int rank, const char* what, std::chrono::milliseconds timeout,
                    Op&& op) {
  try {
    auto work = op();
    work->wait(timeout);
  } catch (const std::exception& e) {
    failed = true;
    throw DistributedError(fmt::format(
        "rank {}: {} failed: another rank exited, hung or lost its connection (bounded by the timeout, {} s): {}",
        rank, what, static_cast<double>(timeout.count()) / 1000.0, brief(e)));
  }
}

/// Consecutive tensors of one dtype grouped into buckets of at most `bytes` (at least one
/// tensor each).
std::vector<std::vector<size_t>> buckets_of(const std::vector<torch::Tensor>& ts, int64_t bytes) {
  std::map<c10::ScalarType, std::vector<size_t>> by_type;
  std::vector<c10::ScalarType> order;
  for (size_t i = 0; i < ts.size(); ++i) {
    auto t = ts[i].scalar_type();
    if (!by_type.count(t)) order.push_back(t);
    by_type[t].push_back(i);
  }
  std::vector<std::vector<size_t>> out;
  for (auto t : order) {
    int64_t used = 0;
    out.emplace_back();
    for (size_t i : by_type[t]) {
      const int64_t b = ts[i].numel() * static_cast<int64_t>(ts[i].element_size());
      if (!out.back().empty() && used + b > bytes) {
        out.emplace_back();
        used = 0;
      }
      out.back().push_back(i);
      used += b;
    }
  }
  return out;
}

torch::Tensor flatten(const std::vector<torch::Tensor>& ts, const std::vector<size_t>& idx) {
  std::vector<torch::Tensor> parts;
  parts.reserve(idx.size());
  for (size_t i : idx) parts.push_back(ts[i].reshape(-1));
  return torch::cat(parts);
}

void unflatten(const torch::Tensor& flat, const std::vector<torch::Tensor>& ts, const std::vector<size_t>& idx) {
  int64_t off = 0;
  for (size_t i : idx) {
    const int64_t n = ts[i].numel();
    ts[i].copy_(flat.narrow(0, off, n).view(ts[i].sizes()));
    off += n;
  }
}

}  // namespace

void Distributed::barrier() {
  if (device_.is_cuda() && backend_ == "nccl") {
    // NCCL's barrier needs a device; a tiny all-reduce on it is the portable barrier.
    auto t = torch::zeros({1}, torch::TensorOptions().device(device_));
    std::vector<at::Tensor> v{t};
    run_collective(impl_->failed, rank(), "barrier", options_.timeout(), [&] { return impl_->pg->allreduce(v); });
    t.cpu();
    return;
  }
  run_collective(impl_->failed, rank(), "barrier", options_.timeout(), [&] { return impl_->pg->barrier(); });
}

void Distributed::broadcast_module(torch::nn::Module& module) {
  torch::NoGradGuard no_grad;
  std::vector<torch::Tensor> ts;
  for (const auto& p : module.parameters()) ts.push_back(p);
  for (const auto& b : module.buffers()) ts.push_back(b);
  std::vector<torch::Tensor> flats;
  const auto groups = buckets_of(ts, options_.bucket_bytes());
  for (const auto& g : groups) flats.push_back(flatten(ts, g));
  for (size_t i = 0; i < groups.size(); ++i) {
    std::vector<at::Tensor> v{flats[i]};
    c10d::BroadcastOptions bo;
    bo.rootRank = 0;
    run_collective(impl_->failed, rank(), "broadcast of the model from rank 0", options_.timeout(),
                   [&] { return impl_->pg->broadcast(v, bo); });
  }
  for (size_t i = 0; i < groups.size(); ++i) unflatten(flats[i], ts, groups[i]);
}

void Distributed::average_gradients(const std::vector<torch::Tensor>& params) {
  torch::NoGradGuard no_grad;
  const auto t0 = std::chrono::steady_clock::now();
  std::vector<torch::Tensor> grads;
  grads.reserve(params.size());
  for (auto p : params) {
    if (!p.requires_grad()) continue;
    if (!p.grad().defined()) p.mutable_grad() = torch::zeros_like(p);
    grads.push_back(p.grad());
  }
  const auto groups = buckets_of(grads, options_.bucket_bytes());
  std::vector<torch::Tensor> flats;
  std::vector<c10::intrusive_ptr<c10d::Work>> works;
  try {
    for (const auto& g : groups) {
      flats.push_back(flatten(grads, g));
      std::vector<at::Tensor> v{flats.back()};
      works.push_back(impl_->pg->allreduce(v));  // every bucket in flight at once
    }
  } catch (const std::exception& e) {
    impl_->failed = true;
    throw DistributedError(fmt::format("rank {}: gradient all-reduce failed: {}", rank(), brief(e)));
  }
  for (auto& w : works)
    run_collective(impl_->failed, rank(), "gradient all-reduce", options_.timeout(), [&] { return w; });
  const double inv = 1.0 / world_size();
  for (size_t i = 0; i < groups.size(); ++i) {
    flats[i].mul_(inv);
    unflatten(flats[i], grads, groups[i]);
  }
  gradient_seconds_ += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

void Distributed::average_buffers(torch::nn::Module& module) {
  torch::NoGradGuard no_grad;
  std::vector<torch::Tensor> fl, in;
  for (const auto& b : module.buffers()) (b.is_floating_point() ? fl : in).push_back(b);
  for (const auto& g : buckets_of(fl, options_.bucket_bytes())) {
    auto flat = flatten(fl, g);
    std::vector<at::Tensor> v{flat};
    run_collective(impl_->failed, rank(), "buffer all-reduce", options_.timeout(), [&] { return impl_->pg->allreduce(v); });
    flat.mul_(1.0 / world_size());
    unflatten(flat, fl, g);
  }
  for (const auto& g : buckets_of(in, options_.bucket_bytes())) {
    auto flat = flatten(in, g);
    std::vector<at::Tensor> v{flat};
    c10d::BroadcastOptions bo;
    bo.rootRank = 0;
    run_collective(impl_->failed, rank(), "buffer broadcast", options_.timeout(), [&] { return impl_->pg->broadcast(v, bo); });
    unflatten(flat, in, g);
  }
}

void Distributed::sum(torch::Tensor& values, const char* what) {
  TORCH_CHECK(values.defined(), "Distributed::sum: undefined tensor");
  auto t = backend_ == "nccl" ? values.to(device_) : values.contiguous();
  std::vector<at::Tensor> v{t};
  run_collective(impl_->failed, rank(), what, options_.timeout(), [&] { return impl_->pg->allreduce(v); });
  if (!t.is_same(values)) values.copy_(t);
}

size_t sync_batchnorm(torch::nn::Module& model, const std::shared_ptr<Distributed>& group) {
  std::shared_ptr<const AllReduceSum> sum;
  if (group)
    sum = std::make_shared<const AllReduceSum>(
        [group](torch::Tensor& t) { group->sum(t, "all-reduce of synchronised BatchNorm statistics"); });
  return set_batchnorm_sync(model, sum);
}

}  // namespace rmnet
