#pragma once
// The chain IR's one table of layer kinds. Everything rmnet knows about a kind of plain layer — its
// name, its tensors, how it checks and changes channels and shapes, its cost, its JSON fields, its
// module and functional forward, its ONNX and TorchScript forms, how INT8 quantization and
// activation-range equalization treat it — is one entry here (src/ir/traits.cpp). A new layer kind
// is one new entry; the rooms (convert, prune, quant, deploy, io) ask the table instead of keeping
// their own switch over kinds.
#include <cstdint>
#include <functional>
#include <memory>
#include <ostream>
#include <string>
#include <variant>
#include <vector>

#include <torch/nn/module.h>
#include <torch/types.h>

#include "rmnet/ir/layer.h"

namespace rmnet::ir {

/// One of a layer's named tensors (module parameter or buffer) and its shape for a spec.
struct TensorDecl {
  std::string name;
  std::vector<int64_t> shape;
  bool parameter = true;  ///< a parameter (else a buffer)
};

/// A layer's tensors by name (a module's parameters and buffers, or a quantized layer's tensors).
using TensorFn = std::function<torch::Tensor(const std::string& name)>;

/// One JSON field of a layer spec (model files, the .pth chain description): its key and the
/// LayerSpec member it holds.
struct JsonField {
  const char* key;
  std::variant<int64_t LayerSpec::*, bool LayerSpec::*, double LayerSpec::*> member;
};

/// ONNX attribute as plain data (the io room encodes it).
struct OnnxAttr {
  enum class Type { Int, Ints, Float } type = Type::Int;
  std::string name;
  std::vector<int64_t> ints;
  double f = 0;
  static OnnxAttr i(std::string name, int64_t v) { return {Type::Int, std::move(name), {v}, 0}; }
  static OnnxAttr is(std::string name, std::vector<int64_t> v) { return {Type::Ints, std::move(name), std::move(v), 0}; }
  static OnnxAttr fl(std::string name, double v) { return {Type::Float, std::move(name), {}, v}; }
};

/// Where a layer's ONNX form goes: initializers and nodes (the io room's protobuf encoder).
class OnnxSink {
 public:
  virtual ~OnnxSink() = default;
  /// Adds an initializer; returns its name.
  virtual std::string init(const std::string& name, const torch::Tensor& t) = 0;
  /// Adds a node; returns its output's name (`out` when not empty, else a fresh one).
  virtual std::string node(const std::string& op, const std::vector<std::string>& inputs,
                           const std::vector<OnnxAttr>& attrs, const std::string& out = "") = 0;
};

/// Registers a tensor on the TorchScript module being written (parameter or buffer) under `name`.
using TsRegister = std::function<void(const std::string& name, const torch::Tensor& t, bool parameter)>;

/// How the INT8 planner treats a kind before the float head.
enum class QuantClass {
  Int8,      ///< runs in INT8 (a conv) and starts a run of fused activations
  U8,        ///< runs on u8 values as they are (relu, clamp, max-pool)
  Fallback,  ///< runs in float between quantization points (prelu, SE)
  Head,      ///< the float head (pooling, flatten, linear): never before it
  Reject,    ///< must be folded away first (batch norm)
};

struct LayerTraits {
  LayerKind kind;
  const char* name;  ///< "conv", "batchnorm", ... (model files, messages)
  /// Conv/Linear: the layer outputs `out_channels` (the rest keep their input's channels).
  bool sets_channels = false;
  /// Per-channel layers whose `out_channels` must equal the arriving channels (BN, PReLU, clamp, SE).
  bool per_channel = false;
  /// Needs a spatial (NCHW) input: cannot follow a Flatten.
  bool spatial = false;
  /// f(a x) = a f(x) channel by channel for a > 0, with no parameter to rescale (relu, max-pool,
  /// average pool, flatten): activation-range equalization passes scales through it unchanged.
  bool positively_homogeneous = false;
  QuantClass quant = QuantClass::Reject;
  std::vector<JsonField> json = {};  ///< the spec's JSON fields besides "type"

  std::string (*describe)(const LayerSpec&) = nullptr;
  /// The layer's tensors for a spec (parameters first, as its module registers them).
  std::vector<TensorDecl> (*tensors)(const LayerSpec&) = nullptr;
  /// Checks the spec against the arriving channels; `where` names the layer in messages.
  void (*check)(const LayerSpec&, int64_t in_channels, const std::string& where) = nullptr;
  /// A fresh module for the spec (default-initialised weights).
  std::shared_ptr<torch::nn::Module> (*make)(const LayerSpec&) = nullptr;
  /// The module's forward (training mode honoured: batch norm updates its statistics).
  torch::Tensor (*forward)(torch::nn::Module&, const torch::Tensor&) = nullptr;
  /// The eval-mode forward on named tensors (a quantized layer's float fallback, reference checks).
  torch::Tensor (*apply)(const LayerSpec&, const TensorFn&, const torch::Tensor&) = nullptr;
  /// The output shape for an input shape ([N, C, H, W] or [N, F]).
  std::vector<int64_t> (*output_shape)(const LayerSpec&, const std::vector<int64_t>&) = nullptr;
  /// Multiply-adds per image for an input shape (conv and linear, the SE's two small linears).
  int64_t (*macs)(const LayerSpec&, const std::vector<int64_t>& in_shape) = nullptr;
  /// Emits the layer's ONNX nodes on input `x` (initializers named `prefix` + tensor); the last
  /// node's output is named `out` when it is not empty. Returns the output's name.
  std::string (*onnx)(const LayerSpec&, const TensorFn&, OnnxSink&, const std::string& prefix,
                      const std::string& x, const std::string& out) = nullptr;
  /// Writes the layer's TorchScript statements (on `x`) to `src`, registering tensors as `prefix` + name.
  void (*torchscript)(const LayerSpec&, const TensorFn&, const TsRegister&, std::ostream& src,
                      const std::string& prefix) = nullptr;
};

/// The table's entry for a kind.
const LayerTraits& traits(LayerKind kind);
/// Every entry, in LayerKind order.
const std::vector<LayerTraits>& all_traits();

/// A module's tensor by name (parameter or buffer; throws naming the layer when it has none).
TensorFn module_tensors(const torch::nn::Module& m);

}  // namespace rmnet::ir
