#pragma once
// Provenance of a plain network: where each layer's output channels came from in the source model.
// The conversion records it as it builds the chain (a conv gets its origin, the per-channel layers
// after it inherit it), model files store it, pruning slices it with the channels and reads it
// (the residual baseline: only channels inside a block's branch are candidates). A network without
// it (a file written before provenance existed, a hand-built chain) simply has none: every query
// answers "unknown".
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace rmnet {

/// What an output channel of a plain layer carries, relative to the residual source model.
enum class ChannelRole {
  Layer,     ///< a channel of a source layer outside any residual block (stem, head, plain families)
  Branch,    ///< a channel inside a residual block's branch: what slimming the residual network removes
  Reserved,  ///< the RM reserve: the block's input (or its type-1 shortcut projection) carried through
  Merged,    ///< a residual block's output: branch and shortcut added by the merge conv (the stream)
};
std::string to_string(ChannelRole role);
/// Inverse of to_string; throws naming the string for anything else.
ChannelRole channel_role_from_string(const std::string& name);

/// Consecutive output channels with one origin: channel `first + i` of `module` (a state_dict
/// prefix of the source model, e.g. "layer1.0.conv1" for a branch conv, "layer1.0" for a block's
/// input or output) for i in [0, count).
struct ChannelRun {
  ChannelRole role = ChannelRole::Layer;
  std::string module;
  int64_t first = 0;
  int64_t count = 0;
  bool operator==(const ChannelRun&) const = default;
};

/// The origin of one layer's output channels, as runs in channel order (empty: unknown).
struct LayerOrigin {
  std::vector<ChannelRun> runs;

  /// `channels` channels of `module` with one role, starting at source channel `first`.
  static LayerOrigin of(ChannelRole role, std::string module, int64_t channels, int64_t first = 0);
  bool known() const { return !runs.empty(); }
  /// Number of channels described (0 when unknown).
  int64_t channels() const;
  /// The run holding output channel c and c's channel in the source module; throws for c out of range.
  std::pair<const ChannelRun*, int64_t> at(int64_t c) const;
  ChannelRole role(int64_t c) const { return at(c).first->role; }
  /// The origin of the channels `keep` (ascending indices), adjacent runs joined. Unknown stays unknown.
  LayerOrigin select(const std::vector<int64_t>& keep) const;
  /// This layer's channels followed by `next`'s (unknown if either is).
  LayerOrigin operator+(const LayerOrigin& next) const;
  /// E.g. "branch layer1.0.conv1[0:16] + reserved layer1.0[0:16]", or "unknown".
  std::string describe() const;
  bool operator==(const LayerOrigin&) const = default;
};

}  // namespace rmnet
