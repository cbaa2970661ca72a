#pragma once
// Internal: the executors behind DeployedNet (one file each).
#include <memory>

#include "rmnet/deploy/runtime.h"

namespace rmnet::detail {

/// Frozen + optimized TorchScript of the chain (src/deploy/torchscript.cpp).
std::shared_ptr<Executor> make_torchscript_executor(const PlainNetImpl& net, const DeployOptions& options);
/// The TorchScript module of an executor made by make_torchscript_executor (nullptr otherwise).
torch::jit::Module* torchscript_module(Executor& exec);

/// rmnet's chain executor over fused oneDNN operators (src/deploy/onednn.cpp; compiled by
/// src/deploy/onednn_plan.cpp, declared in src/deploy/onednn_steps.h).
std::shared_ptr<Executor> make_onednn_executor(const PlainNetImpl& net, const DeployOptions& options);

/// The chain on CUDA (cuDNN conv + bias + ReLU fused), captured in one CUDA graph per input shape
/// and replayed (src/deploy/cuda_graph.cpp). Throws where rmnet was built without CUDA graphs.
std::shared_ptr<Executor> make_cuda_graph_executor(const PlainNetImpl& net, const DeployOptions& options);

}  // namespace rmnet::detail
