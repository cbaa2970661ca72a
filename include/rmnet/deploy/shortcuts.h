#pragma once
// Where the onednn runtime runs a plain network's reserved channels as the shortcut they are
// (DeployOptions::dirac_shortcuts), and the multiply-accumulates it then executes.
//
// An RM block is, in the plain chain, conv A = [W1 ; D], optionally middle convs M that pass the
// copies on through Dirac rows, and the merge conv B = [W3 | D] (identity) or [W3 | P] (a
// downsample block's projection, weights at the centre tap only). The runtime computes only the
// branch rows of A and M and the branch columns of B, keeps A's input, and adds it (identity) or
// a 1x1 conv of it (projection) into B's output. So the network costs what the residual network
// costs, not what the plain form's convolutions count: `executed_macs` is that cost, the figure to
// compare with a residual network's MACs (and with a residual-aware pruner's) and the one pruning
// can target (PruneOptions::executed_macs).
#include <cstddef>
#include <cstdint>
#include <vector>

namespace rmnet {

class PlainNetImpl;

/// One Dirac shortcut, in the plain network's layer indices.
struct DiracShortcut {
  /// The conv layers of the run: A, the middle convs, B (last).
  std::vector<size_t> convs;
  /// Per conv but B (A, then each middle conv): for each output channel, the channel of A's input it
  /// copies, or -1 (a branch channel, computed).
  std::vector<std::vector<int64_t>> copies;
  /// Per input channel of B: the channel of A's input it adds, or -1 (a branch column, computed).
  std::vector<int64_t> merged;
  /// B adds a 1x1 convolution of A's input (all of its channels, at the copies' stride) rather than
  /// the input itself.
  bool projection = false;
  /// An identity merge whose copies carry factors (a copy row of weight f > 0 is f * x, and f * relu(x)
  /// after a ReLU: a ResNet's shortcut scale, ModelOptions::shortcut_scale): per output of B, the factor
  /// of the input channel of the same index it adds (0: none). Empty where every output adds its
  /// channel unscaled.
  std::vector<double> scale;
};

/// The Dirac shortcuts the onednn runtime finds in `net` (float32 weights, or float64 for a float64
/// network; BatchNorms kept are folded first, as the runtime does). Empty for a network without
/// reserved channels.
std::vector<DiracShortcut> dirac_shortcuts(const PlainNetImpl& net);

/// Multiply-accumulates per image the onednn runtime executes for `net` at a square input of
/// `input_size` (0: the model's default): count_flops's conv and linear MACs, without the rows and
/// columns its Dirac shortcuts do not compute and with their projections as 1x1 convs. For a
/// converted ResNet or MobileNetV2 this is the residual network's MACs.
int64_t executed_macs(const PlainNetImpl& net, int64_t input_size = 0);
/// The same for shortcuts found earlier (`dirac_shortcuts(net)`).
int64_t executed_macs(const PlainNetImpl& net, const std::vector<DiracShortcut>& shortcuts, int64_t input_size);

}  // namespace rmnet
