#pragma once
// The plain network: the hub of rmnet. An ordered chain of standard layers with no branch.
// Its submodules are named "0", "1", ... so its state_dict keys are those of a Python
// torch.nn.Sequential of the same layers.
#include <optional>
#include <string>
#include <vector>

#include <torch/nn/modules/activation.h>
#include <torch/nn/modules/batchnorm.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/modules/pooling.h>

#include "rmnet/models/model.h"
#include "rmnet/models/provenance.h"

namespace rmnet {

/// The kinds of layer a plain network is made of.
enum class LayerKind {
  Conv,       ///< Conv2d (bias optional)
  BatchNorm,  ///< BatchNorm2d
  ReLU,
  PReLU,      ///< per-channel slopes
  Clamp,      ///< per-channel clamp(x, min_c, max_c): ReLU6 exactness (reserved channels unclipped)
  MaxPool,    ///< MaxPool2d
  AvgPool,    ///< AdaptiveAvgPool2d to 1x1
  Flatten,
  Linear,
  SE,         ///< squeeze-and-excitation on the first `scaled` channels; the rest pass unchanged
};

std::string to_string(LayerKind kind);
LayerKind layer_kind_from_string(const std::string& name);

/// Shape of one layer of the chain. Fields that do not apply to a kind stay at their defaults.
struct LayerSpec {
  LayerKind kind = LayerKind::ReLU;
  int64_t in_channels = 0;   ///< Conv/Linear input features
  int64_t out_channels = 0;  ///< Conv/Linear outputs; channels of BatchNorm/PReLU/Clamp
  int64_t kernel = 1;        ///< Conv/MaxPool kernel size (square)
  int64_t stride = 1;        ///< Conv/MaxPool stride
  int64_t padding = 0;       ///< Conv/MaxPool padding
  int64_t groups = 1;        ///< Conv groups
  bool bias = true;          ///< Conv/Linear bias
  double eps = 1e-5;         ///< BatchNorm epsilon
  double momentum = 0.1;     ///< BatchNorm momentum
  int64_t scaled = 0;        ///< SE: the first `scaled` channels are rescaled (of out_channels)
  int64_t hidden = 0;        ///< SE: hidden width of the excitation

  static LayerSpec conv(int64_t in, int64_t out, int64_t kernel, int64_t stride, int64_t padding,
                        int64_t groups = 1, bool bias = true);
  static LayerSpec batchnorm(int64_t channels, double eps = 1e-5, double momentum = 0.1);
  static LayerSpec relu();
  static LayerSpec prelu(int64_t channels);
  static LayerSpec clamp(int64_t channels);
  static LayerSpec maxpool(int64_t kernel, int64_t stride, int64_t padding);
  static LayerSpec avgpool();
  static LayerSpec flatten();
  static LayerSpec linear(int64_t in, int64_t out, bool bias = true);
  static LayerSpec se(int64_t channels, int64_t scaled, int64_t hidden);

  /// Number of channels this layer outputs, or nullopt when it keeps its input's.
  std::optional<int64_t> output_channels() const;
  /// One-line human-readable description, e.g. "Conv2d(64, 128, k=3, s=2, p=1, g=1, bias)".
  std::string describe() const;
  bool operator==(const LayerSpec&) const = default;
};

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

  /// Where each layer's output channels came from (models/provenance.h): empty when unknown, else
  /// one origin per layer. Recorded by the conversion, kept by pruning, stored in model files.
  const std::vector<LayerOrigin>& provenance() const { return provenance_; }
  /// Layer i's origin (unknown when none is recorded).
  const LayerOrigin& origin(size_t i) const;
  /// Sets the provenance: empty, or one origin per layer, each unknown or describing exactly the
  /// channels the layer outputs (throws naming the first layer that does not match).
  void set_provenance(std::vector<LayerOrigin> origins);

 private:
  std::vector<LayerSpec> specs_;
  std::vector<std::shared_ptr<torch::nn::Module>> layers_;
  std::vector<LayerOrigin> provenance_;
};
TORCH_MODULE(PlainNet);

/// Checks that consecutive layers' channel counts agree; throws naming the first bad layer.
void check_chain(const std::vector<LayerSpec>& layers, int64_t in_channels);

}  // namespace rmnet
