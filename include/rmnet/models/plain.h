#pragma once
// The plain network: the hub of rmnet. An ordered chain of standard layers with no branch.
// Its submodules are named "0", "1", ... so its state_dict keys are those of a Python
// torch.nn.Sequential of the same layers.
#include <map>
#include <optional>
#include <string>
#include <vector>

#include <torch/nn/modules/activation.h>
#include <torch/nn/modules/batchnorm.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/modules/pooling.h>

#include "rmnet/ir/layer.h"
#include "rmnet/models/model.h"
#include "rmnet/models/provenance.h"

namespace rmnet {

/// Per-channel clamp: y[:, c] = min(max(x[:, c], min[c]), max[c]). Buffers "min", "max".
/// With min = 0 and max = 6 it is ReLU6; with -inf/+inf it is the identity (reserved channels).
class ChannelClampImpl : public torch::nn::Module {
 public:
  explicit ChannelClampImpl(int64_t channels);
  torch::Tensor forward(const torch::Tensor& x);
  torch::Tensor min, max;
};
TORCH_MODULE(ChannelClamp);

/// Squeeze-and-excitation on the first `scaled` of `channels` channels (the others, e.g. an RM
/// block's reserved input, pass unchanged): s = sigmoid(w2 relu(w1 mean_hw(x[:, :scaled]) + b1) + b2),
/// y = [x[:, :scaled] * s ; x[:, scaled:]]. Parameters w1 [hidden, scaled], b1, w2 [scaled, hidden], b2.
class ChannelSEImpl : public torch::nn::Module {
 public:
  ChannelSEImpl(int64_t channels, int64_t scaled, int64_t hidden);
  torch::Tensor forward(const torch::Tensor& x);
  int64_t channels, scaled;
  torch::Tensor w1, b1, w2, b2;
};
TORCH_MODULE(ChannelSE);

/// The plain network. Construct it from layer specs (weights default-initialised), then fill
/// weights through layer<...>(i) or load a state_dict.
class PlainNetImpl : public ModelImpl {
 public:
  PlainNetImpl(std::vector<LayerSpec> layers, ModelOptions options);

  torch::Tensor forward(torch::Tensor x) override;
  std::string family() const override { return "plain"; }
  ModelKind kind() const override { return ModelKind::Plain; }
  /// The source's input size (conversion records it as metadata), else 224 for a chain with a
  /// max-pool (an ImageNet stem), 32 without.
  int64_t input_size() const override;

  size_t size() const { return specs_.size(); }
  const std::vector<LayerSpec>& specs() const { return specs_; }
  const LayerSpec& spec(size_t i) const { return specs_.at(i); }
  /// The module of layer i (a Conv2dImpl, BatchNorm2dImpl, ... as its kind says).
  std::shared_ptr<torch::nn::Module> layer(size_t i) const { return layers_.at(i); }
  template <typename M>
  std::shared_ptr<M> layer_as(size_t i) const {
    auto p = std::dynamic_pointer_cast<M>(layers_.at(i));
    TORCH_CHECK(p, "plain layer ", i, " is a ", to_string(specs_.at(i).kind),
                ", not the requested module type");
    return p;
  }
  /// The chain's structure, one layer per line with its output shape for `input_shape`
  /// (NCHW; empty: shapes and MACs omitted), parameter count and MACs per image (conv and linear
  /// multiply-adds, as profile_model counts them), with totals.
  std::string summary(const std::vector<int64_t>& input_shape = {}) const;
  /// Runs layers [begin, end) on x (the whole chain when called with defaults).
  torch::Tensor forward_range(torch::Tensor x, size_t begin, size_t end);

  /// Channels of BatchNorm layer i that compute with their running statistics in training mode too
  /// (the rest of the layer normalises with the batch's): a Dirac copy's identity BN stays an identity
  /// while the network trains (TrainOptions::keep_dirac). Undefined: none. Not saved.
  void set_frozen_bn_channels(size_t i, torch::Tensor channels);

  /// Where each layer's output channels came from (models/provenance.h): empty when unknown, else
  /// one origin per layer. Recorded by the conversion, kept by pruning, stored in model files.
  const std::vector<LayerOrigin>& provenance() const { return provenance_; }
  /// Layer i's origin (unknown when none is recorded).
  const LayerOrigin& origin(size_t i) const;
  /// Sets the provenance: empty, or one origin per layer, each unknown or describing exactly the
  /// channels the layer outputs (throws naming the first layer that does not match).
  void set_provenance(std::vector<LayerOrigin> origins);

 protected:
  std::shared_ptr<ModelImpl> make_like() const override;

 private:
  std::vector<LayerSpec> specs_;
  std::vector<std::shared_ptr<torch::nn::Module>> layers_;
  std::vector<LayerOrigin> provenance_;
  std::map<size_t, torch::Tensor> frozen_bn_;  // set_frozen_bn_channels
};
TORCH_MODULE(PlainNet);

}  // namespace rmnet
