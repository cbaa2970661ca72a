#pragma once
// The quantized plain network: the float chain's layer list with per-channel symmetric int8 conv
// weights (scale per output channel, zero point 0), float32 biases, and a u8 activation scale and
// zero point at every quantization point. Saved as an ordinary rmnet model file (family
// "quantized"); its forward is the float reference of the INT8 computation (fake quantization:
// the same roundings in float32); deploy/int8.h runs it with oneDNN INT8 kernels.
//
// Where activations are quantized (quant_plan): the input; the output of every Conv together with
// the ReLU / per-channel Clamp / PReLU run that follows it (one u8 tensor: ReLU fuses into the
// conv, a clamp is a per-channel min/max on the u8 values, exact because quantization is monotone);
// the output of an SE layer and of a PReLU that follows no conv. MaxPool, ReLU and Clamp elsewhere
// work on u8 values in place. From the first AvgPool / Flatten / Linear on (the head) everything
// is float32. Layers computed in float32 inside the INT8 part (SE, PReLU) are the "fallbacks".
#include <map>
#include <string>
#include <vector>

#include <torch/nn/module.h>

#include "rmnet/models/model.h"
#include "rmnet/models/plain.h"

namespace rmnet {

/// How the INT8 executor computes one layer of a quantized chain.
enum class QuantRole {
  Int8,      ///< Conv: u8 x s8 -> u8 oneDNN kernel (or its activation, fused / on u8)
  U8,        ///< MaxPool, ReLU, Clamp on u8 values
  Fallback,  ///< float32 between a dequantize and a quantize (SE, PReLU)
  Head,      ///< float32 after the last dequantize (AvgPool, Flatten, Linear, ...)
};
std::string to_string(QuantRole r);

struct QuantPlan {
  std::vector<QuantRole> role;  ///< per layer
  std::vector<bool> point;      ///< per layer: its output is quantized (has out_scale/out_zero_point)
  size_t head = 0;              ///< first layer of the float head (== size when there is none)
  /// The quantization point that ends the activation run of the INT8 conv at layer i (i itself
  /// when no activation follows it).
  size_t point_of(size_t conv) const;
  /// Whether that run holds a float32 activation (a PReLU): the conv's output is then dequantized,
  /// the run computed in float32, and the result quantized at the point.
  bool run_has_fallback(size_t conv) const;
};
/// The plan for a BN-free chain (throws, naming the layer, on a BatchNorm).
QuantPlan quant_plan(const std::vector<LayerSpec>& layers);

/// u8 quantization: clamp(round(x / scale) + zero_point, 0, 255), as uint8.
torch::Tensor quantize_u8(const torch::Tensor& x, double scale, int64_t zero_point);
/// (q - zero_point) * scale in float32.
torch::Tensor dequantize_u8(const torch::Tensor& q, double scale, int64_t zero_point);
/// dequantize_u8(quantize_u8(x)) (float32), the reference of the INT8 path.
torch::Tensor fake_quantize_u8(const torch::Tensor& x, double scale, int64_t zero_point);

/// Runs layer `spec` in float32 on x with its tensors (a Conv: the dequantized int8 weight); no
/// activation quantization. Shared by QuantizedNetImpl::forward and the INT8 executor's fallbacks.
torch::Tensor quant_float_layer(const LayerSpec& spec, const std::map<std::string, torch::Tensor>& tensors,
                                torch::Tensor x);

/// Holds one layer's tensors of a quantized chain (submodule "i" of the network).
/// Conv: parameters weight (int8 [out, in/g, k, k]) and bias (float32 [out]), buffer weight_scale
/// (float32 [out]). Linear: weight, bias (float32). Clamp: buffers min, max. PReLU: parameter
/// weight. SE: w1, b1, w2, b2. Quantization points: buffers out_scale (float32 [1]) and
/// out_zero_point (int64 [1]).
class QuantLayerImpl : public torch::nn::Module {
 public:
  QuantLayerImpl() = default;
  const torch::Tensor& add_param(const std::string& name, torch::Tensor t);
  const torch::Tensor& add_buffer(const std::string& name, torch::Tensor t);
  /// The registered tensor `name` (a handle sharing the parameter's / buffer's storage; throws when absent).
  const torch::Tensor& get(const std::string& name) const;
  bool has(const std::string& name) const;
  /// All tensors by name (shallow handles).
  std::map<std::string, torch::Tensor> tensors() const;

 private:
  // Handles of the registered tensors (same TensorImpl, so set_data / copy_ / to() are seen):
  // Module's named_parameters() returns a copy, and references into it dangle.
  std::map<std::string, torch::Tensor> by_name_;
};
TORCH_MODULE(QuantLayer);

class QuantizedNetImpl : public ModelImpl {
 public:
  /// A network of the given layers with placeholder tensors (zeros, unit scales), to be filled by
  /// quantize() or a model file.
  QuantizedNetImpl(std::vector<LayerSpec> layers, ModelOptions options);

  /// The float32 reference of the INT8 computation (fake quantization at every point).
  torch::Tensor forward(torch::Tensor x) override;
  std::string family() const override { return "quantized"; }
  ModelKind kind() const override { return ModelKind::Quantized; }

  size_t size() const { return specs_.size(); }
  const std::vector<LayerSpec>& specs() const { return specs_; }
  const LayerSpec& spec(size_t i) const { return specs_.at(i); }
  const QuantPlan& plan() const { return plan_; }
  QuantLayerImpl& layer(size_t i) const { return *layers_.at(i); }
  /// Tensor `name` of layer i (see QuantLayerImpl).
  const torch::Tensor& tensor(size_t i, const std::string& name) const { return layers_.at(i)->get(name); }
  double input_scale() const;
  int64_t input_zero_point() const;
  double out_scale(size_t i) const;
  int64_t out_zero_point(size_t i) const;
  torch::Tensor input_scale_tensor, input_zero_point_tensor;  ///< buffers "input_scale", "input_zero_point"

  /// Layers that run in float32 inside the INT8 part, as "i: <description>" (empty: none).
  std::vector<std::string> fallbacks() const;
  /// One line per layer: index, description, role, activation scale/zero point at points.
  std::string summary() const;

  /// Only floating tensors follow a dtype change (int8 weights stay int8).
  void to(torch::Dtype dtype, bool non_blocking = false) override;
  void to(torch::Device device, torch::Dtype dtype, bool non_blocking = false) override;
  using torch::nn::Module::to;

 protected:
  std::shared_ptr<ModelImpl> make_like() const override;

 private:
  std::vector<LayerSpec> specs_;
  QuantPlan plan_;
  std::vector<std::shared_ptr<QuantLayerImpl>> layers_;
};
TORCH_MODULE(QuantizedNet);

}  // namespace rmnet
