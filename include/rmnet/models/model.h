#pragma once
// The common base of every rmnet model (residual families and the plain network) and the
// options that describe one. A model plus its ModelOptions is self-describing: that is what a
// model file stores, so loading one needs no flag about its architecture.
#include <map>
#include <memory>
#include <optional>
#include <string>

#include <torch/arg.h>
#include <torch/nn/module.h>

#include "rmnet/models/batchnorm.h"

namespace rmnet {

/// Options every architecture understands; a family ignores the fields it has no use for.
struct ModelOptions {
  ModelOptions() = default;
  explicit ModelOptions(std::string arch) : arch_(std::move(arch)) {}
  /// Registry name of the architecture ("resnet18", "mobilenet_v2", ...; "plain" for a chain).
  TORCH_ARG(std::string, arch);
  /// Number of output classes of the classifier.
  TORCH_ARG(int64_t, num_classes) = 1000;
  /// Number of input image channels (1 for grayscale data sets).
  TORCH_ARG(int64_t, in_channels) = 3;
  /// Width multiplier (MobileNetV2).
  TORCH_ARG(double, width_mult) = 1.0;
  /// MobileNetV2 activation: ReLU6 as torchvision (true) or plain ReLU (false).
  TORCH_ARG(bool, relu6) = true;
  /// Zero-initialise the last BN of each residual branch (torchvision's zero_init_residual).
  TORCH_ARG(bool, zero_init_residual) = false;
  /// Residual blocks keep running mean/var of their input and output (buffers rm_in_mean,
  /// rm_in_var, rm_out_mean, rm_out_var), so the identity BNs of a converted network carry
  /// real statistics (paper, Appendix A.3). Off by default to keep torchvision's state_dict keys.
  TORCH_ARG(bool, track_block_stats) = false;
  /// ResNet blocks get a learnable per-channel scale s on the shortcut input (the shortcut sees
  /// relu(s * x), s initialised to 1), so that network slimming can rank the residual channels too
  /// (paper Section 3.4); the RM operation folds s into the reserved channels' identity BN gamma.
  /// Other families ignore it. Adds parameters "<block>.shortcut_scale".
  TORCH_ARG(bool, shortcut_scale) = false;
};

/// What kind of network a model is (a typed answer; family() names the architecture).
enum class ModelKind {
  Residual,   ///< a residual family (resnet, mobilenet_v2, ...; the registry's)
  Plain,      ///< a PlainNet: the chain of convolutions and activations
  Quantized,  ///< a QuantizedNet: the chain with INT8 weights and activation scales
  Deployed,   ///< a DeployedNet: a plain or quantized chain prepared for inference by a runtime
};
std::string to_string(ModelKind kind);

/// Base class of all rmnet models: a torch::nn::Module with a forward and a self-description.
class ModelImpl : public torch::nn::Module {
 public:
  explicit ModelImpl(ModelOptions options) : options_(std::move(options)) {}
  ~ModelImpl() override = default;

  virtual torch::Tensor forward(torch::Tensor x) = 0;
  /// Family name: "resnet", "mobilenet_v2", "mobilenet_v1", "rmnet", "repvgg", "preact_resnet"
  /// or "plain" (the key of the conversion's translator table).
  virtual std::string family() const = 0;
  /// The kind of network (Residual unless a subclass says otherwise).
  virtual ModelKind kind() const { return ModelKind::Residual; }
  /// Side of the square images the model is made for: 32 for the CIFAR-style stems (stride 1),
  /// 224 for the ImageNet ones. Verification, profiling and benchmarks default to it. Each family
  /// answers from its configuration; this base reads the "input_size" metadata that conversion
  /// writes (else "verify_input_size": up to 32 means 32), else 224.
  virtual int64_t input_size() const;

  const ModelOptions& options() const { return options_; }
  /// A deep copy: same architecture, options, metadata, parameters and buffers (values and
  /// requires_grad) and training mode, on `device` when given (torch::nn::Module's clone; typed:
  /// clone_model). A deployed network is not copied (it is refused by name: deploy its source again).
  std::shared_ptr<torch::nn::Module> clone(const std::optional<torch::Device>& device = std::nullopt) const override;
  /// As clone(), typed, with floating tensors converted to `dtype` when given.
  std::shared_ptr<ModelImpl> clone_model(std::optional<torch::ScalarType> dtype = std::nullopt,
                                         std::optional<torch::Device> device = std::nullopt) const;
  /// Free-form string metadata stored in the model file (conversion record, source arch, ...).
  std::map<std::string, std::string>& metadata() { return metadata_; }
  const std::map<std::string, std::string>& metadata() const { return metadata_; }

 protected:
  /// A fresh model of the same architecture and layout, tensors not copied (clone's first step). The
  /// base makes one from the registry (create_model(options())); networks whose layout is not in
  /// their options (plain, quantized) override it, and a model that cannot be copied throws.
  virtual std::shared_ptr<ModelImpl> make_like() const;
  ModelOptions options_;
  std::map<std::string, std::string> metadata_;
};

using ModelPtr = std::shared_ptr<ModelImpl>;

/// The ResNet-style initialisation of every Conv2d (Kaiming normal, fan-out, ReLU gain) and
/// BatchNorm2d (weight 1, bias 0) below `module`.
void init_conv_bn(torch::nn::Module& module);

/// Number of parameters (all, trainable or not).
int64_t count_parameters(const torch::nn::Module& module);

/// Fills every BatchNorm's running mean/var, weight and bias with random values (and the
/// blocks' tracked statistics when present), so that an identity-BN mistake cannot hide in a
/// test. Used by the tests and by `rmnet init --random-bn`.
void randomize_batchnorm(torch::nn::Module& module, uint64_t seed);

}  // namespace rmnet
