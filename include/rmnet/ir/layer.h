#pragma once
// The chain IR's layer vocabulary: the kinds of layer a plain network is made of and the shape of
// one layer. What each kind means (its tensors, cost, JSON fields, ONNX and TorchScript forms, how
// quantization and equalization treat it) is in one table: rmnet/ir/traits.h.
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

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

/// Checks that consecutive layers' channel counts agree; throws naming the first bad layer.
void check_chain(const std::vector<LayerSpec>& layers, int64_t in_channels);

/// The side of the square map each layer outputs for a square input of side `size` (convs and
/// max-pools shrink it, the global average pool makes it 1).
std::vector<int64_t> output_sides(const std::vector<LayerSpec>& layers, int64_t size);

}  // namespace rmnet
