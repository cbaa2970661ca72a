#pragma once
// Exports of a plain network for other runtimes. Every export is written atomically.
#include <cstdint>
#include <memory>
#include <string>

#include <torch/script.h>

#include "rmnet/models/plain.h"

namespace rmnet {

/// A TorchScript module of the chain with a real forward (built with Module::define), in eval
/// semantics (BatchNorm with running statistics). Python's torch.jit.load loads and calls it; it is
/// written so that torch.jit.freeze + optimize_for_inference can compile it (scalar clamp bounds
/// where uniform), which is what the deploy runtime (deploy/runtime.h) does.
torch::jit::Module to_torchscript(const PlainNetImpl& net);
void export_torchscript(const PlainNetImpl& net, const std::string& path);

/// ONNX (opset 13, float32) of the chain: Conv (with kernel_shape, strides, pads, dilations,
/// group), BatchNormalization, Relu, PRelu, Min/Max for the per-channel clamp, MaxPool,
/// GlobalAveragePool, Flatten, Gemm; an SE layer as Slice, GlobalAveragePool, 1x1 Conv, Relu,
/// Sigmoid, Mul, Concat. Input "input" [N, C, H, W] (N, H, W symbolic), output
/// "logits" [N, classes]. No Add: the residuals are gone. Written with a small protobuf encoder.
std::string to_onnx(const PlainNetImpl& net);
void export_onnx(const PlainNetImpl& net, const std::string& path);

/// The chain as JSON: {"format": "rmnet-chain", "in_channels", "num_classes", "layers": [...]}
/// with one object per layer (type and shape fields as in the model file).
std::string chain_json(const PlainNetImpl& net);

/// A PyTorch state_dict file that torch.load reads with its default weights_only=True (an
/// OrderedDict of tensors, keys "0.weight", "1.running_mean", ...: those of a torch.nn.Sequential
/// of the same layers), plus `path + ".json"` describing the chain (scripts/rmnet_sequential.py
/// builds the Sequential from it).
void export_pth(const PlainNetImpl& net, const std::string& path);

/// The plain network a chain description (chain_json) describes, with fresh weights. Throws
/// naming `source` for text that is not JSON, another format, an unknown layer, layers that do not
/// chain, or layers holding more than `max_numel` tensor elements (a bound for descriptions from
/// elsewhere: the network is allocated before any weights are read).
std::shared_ptr<PlainNetImpl> plain_from_chain_json(const std::string& text, const std::string& source,
                                                   int64_t max_numel = int64_t{1} << 32);

/// A .pth export read back: the chain description at `path + ".json"` with the tensors of `path`.
std::shared_ptr<PlainNetImpl> import_pth(const std::string& path);

}  // namespace rmnet
