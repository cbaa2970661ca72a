#pragma once
// The chain IR: a plain network as layer specs (ir/layer.h) plus CPU tensors and provenance. The
// RM operation builds one from a residual model; the passes (ir/passes.h), pruning and equalization
// rewrite it; build() turns it into a PlainNet once at the end. Per-channel arithmetic (BN
// scales and shifts, biases, activation parameters) is float64 always; conv/linear weights are
// held in the "work dtype", the model's own (float64 for a float64 model, float32 otherwise),
// so a float32 ResNet-152 is not inflated to 2 GB of float64 weights.
#include <map>
#include <string>
#include <vector>

#include <torch/torch.h>

#include "rmnet/models/plain.h"

namespace rmnet::ir {

struct ChainLayer {
  LayerSpec spec;
  std::map<std::string, torch::Tensor> tensors;  // CPU; "weight" of Conv/Linear in the work dtype
  LayerOrigin origin;                            // where its output channels came from (provenance.h)
  const torch::Tensor& at(const std::string& name) const {
    auto it = tensors.find(name);
    TORCH_CHECK(it != tensors.end(), "plain layer ", spec.describe(), " has no tensor '", name, "'");
    return it->second;
  }
};

/// BatchNorm parameters in float64.
struct BNParams {
  torch::Tensor weight, bias, mean, var;
  double eps = 1e-5;
  /// The dtype the BN's parameters were stored in (the precision of their rounding; fold_bias).
  torch::ScalarType stored = torch::kDouble;
  torch::Tensor scale() const { return weight / torch::sqrt(var + eps); }  // a
  torch::Tensor shift() const { return bias - mean * scale(); }            // beta - mean * a
  /// The bias of a conv (bias b, undefined: none) with this BN folded in: a (b - mean) + beta.
  /// The one formula of every fold (fold_batchnorm, the onednn runtime's conv steps). Where the two
  /// terms cancel to within the rounding of the stored parameters (4 units in the last place of
  /// `stored`, relative to the terms) the bias is 0 exactly: an identity BN (a reserved channel,
  /// BNParams::identity) stored in float32 folds to bias 0 as it does in float64, not to a residue
  /// of its rounding (which would make its channel a computed one rather than a copy).
  torch::Tensor fold_bias(const torch::Tensor& b) const;
  static BNParams from(const torch::nn::BatchNorm2dImpl& bn);
  /// A BN that is the identity in eval mode yet carries real statistics: w = sqrt(var+eps), b = mean.
  static BNParams identity(const torch::Tensor& mean, const torch::Tensor& var, double eps = 1e-5);
  static BNParams cat(const std::vector<BNParams>& parts);
};

/// CPU float64 copy of a floating tensor (other dtypes: a CPU clone).
torch::Tensor to_f64(const torch::Tensor& t);
/// CPU copy of a weight in the work dtype.
torch::Tensor to_work(const torch::Tensor& t);
torch::TensorOptions work_options();
/// Sets the work dtype for this thread while alive (float64 stays, anything else -> float32).
class WorkDtypeGuard {
 public:
  explicit WorkDtypeGuard(torch::ScalarType model_dtype);
  ~WorkDtypeGuard();
  WorkDtypeGuard(const WorkDtypeGuard&) = delete;
  WorkDtypeGuard& operator=(const WorkDtypeGuard&) = delete;

 private:
  torch::ScalarType previous_;
};

struct Chain {
  std::vector<ChainLayer> layers;
  /// Qualified names of the source model's modules ("layer1.0.conv1"), for provenance.
  std::map<const torch::nn::Module*, std::string> names;
  /// The dtype the source network's floating tensors were stored in (Chain::from: the net's; a chain
  /// built by conversion holds float64 values): the precision of their rounding, which fold_batchnorm
  /// hands to BNParams::fold_bias. Passes keep it.
  torch::ScalarType stored = torch::kDouble;

  void conv(const torch::Tensor& weight, const torch::Tensor& bias, int64_t stride, int64_t padding,
            int64_t groups = 1);
  void batchnorm(const BNParams& bn, double momentum = 0.1);
  void relu();
  void prelu(const torch::Tensor& slopes);
  void clamp(const torch::Tensor& lo, const torch::Tensor& hi);
  void maxpool(int64_t kernel, int64_t stride, int64_t padding);
  void avgpool();
  void flatten();
  void linear(const torch::Tensor& weight, const torch::Tensor& bias);
  /// Appends a layer; a per-channel layer (not Conv/Linear) without an origin inherits the previous one's.
  void push(ChainLayer layer);

  /// Provenance: sets the origin of the last layer (a conv or linear just added); the per-channel
  /// layers added after it inherit it.
  void mark(LayerOrigin origin);
  /// The qualified name of a source module (from `names`; "?" when it is not there).
  std::string name(const torch::nn::Module& m) const;
  /// Fills `names` from a source model.
  void name_modules(const torch::nn::Module& model);

  /// Reads every layer of a plain network (tensors converted to float64 CPU).
  static Chain from(const PlainNetImpl& net);
  /// Instantiates the chain as a PlainNet of the given dtype/device.
  PlainNet build(const ModelOptions& options, torch::ScalarType dtype, torch::Device device) const;
};

/// dtype and device of a module's first floating parameter (float32/CPU when it has none).
std::pair<torch::ScalarType, torch::Device> dtype_device(const torch::nn::Module& m);

/// Where a conv weight [O, I/groups, k, k] has the Dirac structure the RM operation gives reserved
/// channels, by which entries are non-zero (values aside): `rows` [O], a row whose only non-zero
/// weight is at the centre tap (a copy of one input channel); in a dense conv, `lone_cols` [I] (odd
/// kernel), a column whose only non-zero weight is at the centre tap (a merge's shortcut input), and
/// `centre_cols` [I] (kernel > 1), a column with non-zero weights at the centre tap only (a
/// downsample block's projection; lone columns included). Bool tensors on the weight's device,
/// false where the conv cannot have them. Pruning's reconstruct_keep_dirac and training's
/// keep_dirac leave these as they are (the onednn runtime runs them as shortcuts).
struct DiracPattern {
  torch::Tensor rows, lone_cols, centre_cols;
};
DiracPattern dirac_pattern(const torch::Tensor& weight, int64_t groups);

}  // namespace rmnet::ir
