// The cudagraph runtime: the plain chain on CUDA, captured in a CUDA graph per input shape.
//
// The chain is compiled by compile_chain (onednn_plan.cpp: BN folded in float64, activations
// classified exactly as for the onednn runtime) and its tensors moved to the device in the deploy
// dtype, conv weights channels-last. A step runs as ATen ops: Conv + ReLU as one
// at::cudnn_convolution_relu (cuDNN's fused conv + bias + activation; float32 and float16), any
// other conv as at::convolution followed by its activation in place; the other steps as on the
// CPU (run_aten_step). For each new input shape the chain runs three times on a side stream
// (cuDNN chooses its algorithms, lazy initialisation happens outside the capture), then once more
// under capture into an at::cuda::CUDAGraph with static input and output tensors; a forward copies
// its input into the static one, replays the graph on the caller's stream and returns a copy of
// the static output. Graphs are kept per shape (DeployOptions::packed_shapes, least recently used
// evicted) and share one memory pool; forwards are serialised (a mutex, and the caller's stream
// waits on an event recorded after the previous copy-out, whatever stream that ran on). A conv
// whose fused cuDNN engine is missing falls back to convolution + ReLU, decided before capture.
// profile() runs the steps eagerly, synchronising after each.
#include <chrono>
#include <list>
#include <memory>
#include <mutex>
#include <sstream>
#include <string>
#include <vector>

#include <fmt/format.h>
#include <torch/cuda.h>
#include <torch/torch.h>

#include "onednn_steps.h"

#ifndef RMNET_CUDA_GRAPH
#define RMNET_CUDA_GRAPH 0
#endif
#if RMNET_CUDA_GRAPH
#include <ATen/cuda/CUDAGraph.h>
#include <c10/cuda/CUDAEvent.h>
#include <c10/cuda/CUDAFunctions.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#endif

namespace rmnet {

bool cuda_graph_available(const DeployOptions& o, std::string* why) {
  auto no = [&](std::string reason) {
    if (why) *why = std::move(reason);
    return false;
  };
  if (!RMNET_CUDA_GRAPH)
    return no("the cudagraph runtime needs rmnet built against a CUDA LibTorch with the CUDA runtime headers (this "
              "build has no CUDA graphs)");
  if (!o.device().is_cuda())
    return no("the cudagraph runtime runs on CUDA (device " + o.device().str() + ")");
  if (!torch::cuda::is_available()) return no("the cudagraph runtime needs a CUDA device, and none is available");
  if (o.device().has_index() && o.device().index() >= static_cast<int64_t>(torch::cuda::device_count()))
    return no("CUDA device " + o.device().str() + " does not exist");
  if (!at::isFloatingType(o.dtype()))
    return no(std::string("the cudagraph runtime computes in a floating dtype (got ") + c10::toString(o.dtype()) + ")");
  return true;
}

namespace detail {

#if RMNET_CUDA_GRAPH
namespace {

using torch::Tensor;

class CudaGraphExecutor : public Executor {
 public:
  CudaGraphExecutor(const PlainNetImpl& net, const DeployOptions& o)
      : options_(o), device_(o.device().has_index() ? o.device() : torch::Device(torch::kCUDA, c10::cuda::current_device())) {
    steps_ = compile_chain(net, o.dtype());
    auto dev = [&](Tensor& t) {
      if (t.defined()) t = t.to(device_);
    };
    for (auto& s : steps_) {
      if (s.kind == StepKind::Conv && s.weight.defined())
        s.weight = s.weight.to(device_).contiguous(torch::MemoryFormat::ChannelsLast);
      else
        dev(s.weight);
      for (Tensor* t : {&s.bias, &s.lo_t, &s.hi_t, &s.slope, &s.scale, &s.shift, &s.w1, &s.b1, &s.w2, &s.b2}) dev(*t);
      // cuDNN's fused conv + bias + ReLU takes float32 and float16
      s.fused_cudnn = s.kind == StepKind::Conv && s.attr == "relu" &&
                      (o.dtype() == torch::kFloat || o.dtype() == torch::kHalf) && at::globalContext().hasCuDNN() &&
                      at::globalContext().userEnabledCuDNN();
    }
    pool_ = at::cuda::graph_pool_handle();  // one memory pool for every shape's graph: replays never overlap
  }

  Tensor run(const Tensor& x0, std::vector<StepTiming>* timings) override {
    c10::cuda::CUDAGuard guard(device_);
    std::lock_guard<std::mutex> lock(mutex_);  // one capture or replay at a time (also keeps profile out of a capture)
    const Tensor x = x0.to(device_);
    if (timings) return run_steps(x, timings);
    auto& g = graph_for(x);
    // the caller's stream waits for the last forward's copy-out before the static input is overwritten
    auto stream = c10::cuda::getCurrentCUDAStream(device_.index());
    if (done_.isCreated()) done_.block(stream);
    g.in.copy_(x);
    g.graph->replay();
    auto y = g.out.clone();  // the static output is overwritten by the next replay
    done_.record(stream);
    return y;
  }

  std::string plan() const override {
    std::ostringstream os;
    os << "cudagraph runtime (" << c10::toString(options_.dtype()) << ", " << device_.str() << ", channels-last, "
       << steps_.size() << " steps captured in one CUDA graph per input shape)\n";
    for (const auto& s : steps_)
      os << fmt::format("  [{}{}] {}{}\n", s.first, s.last != s.first ? fmt::format("-{}", s.last) : "", s.name,
                        s.kind == StepKind::Conv && s.fused_cudnn ? " (cudnn_convolution_relu)" : "");
    return os.str();
  }

 private:
  struct Captured {
    std::vector<int64_t> key;
    std::unique_ptr<at::cuda::CUDAGraph> graph;
    Tensor in, out;
  };

  Tensor run_steps(const Tensor& x0, std::vector<StepTiming>* timings) {
    Tensor x = x0.contiguous(torch::MemoryFormat::ChannelsLast);
    bool owned = x.data_ptr() != x0.data_ptr();
    for (auto& s : steps_) {
      const auto t0 = timings ? std::chrono::steady_clock::now() : std::chrono::steady_clock::time_point();
      int64_t macs = 0;
      if (s.kind == StepKind::Conv) {
        const auto bias = s.bias.defined() ? std::optional<Tensor>(s.bias) : std::nullopt;
        Tensor y;
        if (s.fused_cudnn) {
          try {
            y = at::cudnn_convolution_relu(x, s.weight, bias, {s.stride, s.stride}, {s.padding, s.padding}, {1, 1},
                                           s.groups);
          } catch (const c10::Error&) {
            // cuDNN may have no fused engine for this configuration: decided in the warm-up runs
            // (or an eager run), never inside a capture
            if (capturing_) throw;
            s.fused_cudnn = false;
          }
        }
        if (!y.defined()) {
          y = at::convolution(x, s.weight, bias, {s.stride, s.stride}, {s.padding, s.padding}, {1, 1}, false, {0, 0},
                              s.groups);
          if (s.attr == "relu") y.relu_();
          if (s.attr == "hardtanh") y.clamp_(s.scalars[0], s.scalars[1]);
        }
        if (timings) macs = y.numel() * (s.in / s.groups) * s.kernel * s.kernel;
        x = std::move(y);
        owned = true;
      } else {
        run_aten_step(s, x, owned, timings ? &macs : nullptr);
      }
      if (timings) {
        torch::cuda::synchronize(device_.index());
        timings->push_back(step_timing(s.name, s.first, s.last, t0, macs, x));
      }
    }
    return x;
  }

  Captured& graph_for(const Tensor& x0) {
    const auto key = x0.sizes().vec();
    for (auto it = graphs_.begin(); it != graphs_.end(); ++it)
      if (it->key == key) {
        graphs_.splice(graphs_.begin(), graphs_, it);
        return graphs_.front();
      }
    Captured c;
    c.key = key;
    c.in = torch::empty(x0.sizes(), x0.options().device(device_).memory_format(torch::MemoryFormat::ChannelsLast));
    c.in.copy_(x0);
    torch::cuda::synchronize(device_.index());
    auto side = c10::cuda::getStreamFromPool(false, device_.index());
    {
      c10::cuda::CUDAStreamGuard on_side(side);
      for (int i = 0; i < 3; ++i) run_steps(c.in, nullptr);  // algorithms chosen, lazy inits done
      side.synchronize();
      c.graph = std::make_unique<at::cuda::CUDAGraph>();
      // thread-local mode: CUDA calls of other threads (another model, a synchronize) do not
      // invalidate this capture
      c.graph->capture_begin(pool_, cudaStreamCaptureModeThreadLocal);
      capturing_ = true;
      try {
        c.out = run_steps(c.in, nullptr);
      } catch (...) {
        capturing_ = false;
        try {
          c.graph->capture_end();  // ends the stream's capture whatever state it is in
        } catch (...) {
        }
        throw;
      }
      capturing_ = false;
      c.graph->capture_end();
    }
    side.synchronize();
    if (static_cast<int64_t>(graphs_.size()) >= options_.packed_shapes()) {
      torch::cuda::synchronize(device_.index());  // no replay of the evicted graph still in flight
      while (static_cast<int64_t>(graphs_.size()) >= options_.packed_shapes()) graphs_.pop_back();
    }
    graphs_.push_front(std::move(c));
    return graphs_.front();
  }

  DeployOptions options_;
  torch::Device device_;
  std::vector<Step> steps_;
  std::mutex mutex_;
  std::list<Captured> graphs_;
  c10::MempoolId_t pool_;
  c10::cuda::CUDAEvent done_;  // recorded after each forward's copy-out
  bool capturing_ = false;
};

}  // namespace

std::shared_ptr<Executor> make_cuda_graph_executor(const PlainNetImpl& net, const DeployOptions& options) {
  return std::make_shared<CudaGraphExecutor>(net, options);
}

#else

std::shared_ptr<Executor> make_cuda_graph_executor(const PlainNetImpl&, const DeployOptions& options) {
  std::string why;
  cuda_graph_available(options, &why);
  TORCH_CHECK(false, "deploy: ", why);
  return nullptr;
}

#endif

}  // namespace detail
}  // namespace rmnet
