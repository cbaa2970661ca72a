#pragma once
// Latency of a plain network on the runtime it will run on, measured on this machine: the whole
// network (deploy + median of timed forwards), and a per-layer latency table (NetAdapt / HALP style)
// that predicts the latency of the network with fewer channels in some layers without building it.
// Pruning to a latency target (PruneOptions::target_latency_ms / target_speedup) selects with the
// table, then measures the result and corrects the table's scale until the target is met.
#include <cstdint>
#include <vector>

#include <torch/arg.h>

#include "rmnet/deploy/runtime.h"
#include "rmnet/models/plain.h"

namespace rmnet {

struct LatencyOptions {
  /// Images per forward.
  TORCH_ARG(int64_t, batch) = 32;
  /// Square input size (0: the network's own input size).
  TORCH_ARG(int64_t, input_size) = 0;
  /// The runtime the network will run on (Auto: onednn for a float32 plain network on the CPU).
  TORCH_ARG(Runtime, runtime) = Runtime::Auto;
  /// Untimed forwards first, then timed ones; the median is kept.
  TORCH_ARG(int64_t, warmup) = 3;
  TORCH_ARG(int64_t, iters) = 15;
  /// Fractions of a layer's channels at which the table measures it (1 is always included).
  TORCH_ARG(std::vector<double>, grid) = std::vector<double>({0.25, 0.5, 0.75, 1.0});
};

/// Median wall time in milliseconds of one forward of a batch (random images) of `net` prepared for
/// the runtime (a BN-kept network is timed as the runtime runs it: BNs folded into the convs).
double measure_latency_ms(const PlainNetImpl& net, const LatencyOptions& options = LatencyOptions());

/// Per-layer latencies of a network's Conv and Linear layers as functions of their input and output
/// channel counts, measured on a grid and interpolated bilinearly; the rest of the network (poolings,
/// unlisted layers) is one constant, the measured whole minus the table's sum when positive. The
/// prediction is the measured whole scaled by (table sum + rest) at the new shapes over the same at
/// the original's: exact at full size, never negative (single-layer timings carry a call's overhead
/// each, so their sum can exceed the whole).
class LatencyTable {
 public:
  /// Measures layer i when variable[i] is true (the layers pruning resizes); the others go into the
  /// constant. `shapes`: the layer shapes to time the layers at, when the runtime executes other
  /// ones than the network's (a network with Dirac shortcuts: its convs without the copies); empty:
  /// the network's.
  static LatencyTable measure(const PlainNetImpl& net, const std::vector<bool>& variable,
                              const LatencyOptions& options = LatencyOptions(),
                              const std::vector<LayerSpec>& shapes = {});
  /// Predicted latency (ms) of the network with these layer shapes (the original's, some channel
  /// counts changed).
  double estimate(const std::vector<LayerSpec>& specs) const;
  /// The measured latency of the whole original network (ms).
  double whole_ms() const { return whole_ms_; }
  /// Number of single-layer timings the table holds.
  int64_t points() const;

 private:
  struct Layer {
    size_t index = 0;
    std::vector<int64_t> ins, outs;  // grid of channel counts (ascending)
    std::vector<double> ms;          // [ins.size() x outs.size()]
    bool tied = false;               // depthwise: in == out, a 1-d grid over outs
  };
  std::vector<Layer> layers_;
  double rest_ms_ = 0.0, whole_ms_ = 0.0;
};

}  // namespace rmnet
