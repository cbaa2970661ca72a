#pragma once
// Chain -> Chain passes (ir/chain.h) and the log that runs and times them. Conversion runs its
// passes through one PassLog; quantization records its steps on one; both results carry the
// records (`passes`). The PlainNet -> PlainNet forms users call are in convert/fuse.h.
#include <chrono>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "rmnet/ir/chain.h"

namespace rmnet {

/// When the pointwise fusion of Eq. 4 merges two adjacent 1x1 convs.
enum class PointwiseFusion {
  Never,
  Always,  ///< the paper's MobileNetV2 -> MobileNetV1 fusion, whatever it costs
  Auto,    ///< only where the fused conv has no more multiply-adds than the pair
};
PointwiseFusion pointwise_fusion_from_string(const std::string& s);
std::string to_string(PointwiseFusion f);

namespace ir {

/// Folds every BatchNorm that directly follows a Conv into it (float64 per-channel arithmetic, the
/// weight rounded once to its dtype).
Chain fold_batchnorm(const Chain& in);
/// Merges adjacent 1x1 convs (paper Eq. 4) under `policy`.
Chain fuse_pointwise(const Chain& in, PointwiseFusion policy);
/// Replaces Clamp/PReLU layers that are ReLUs in disguise by ReLU and drops identities.
Chain simplify_activations(const Chain& in);

/// A named Chain -> Chain pass.
struct Pass {
  std::string name;
  std::function<Chain(const Chain&)> run;
};
/// The named passes for the PlainNet forms: "fold_batchnorm", "simplify_activations",
/// "fuse_pointwise(<policy>)".
Pass fold_batchnorm_pass();
Pass simplify_activations_pass();
Pass fuse_pointwise_pass(PointwiseFusion policy);

/// What a pipeline did, in order.
struct PassRecord {
  enum class Kind {
    Transform,  ///< changed the network (a Chain -> Chain pass, the RM operation, quantization)
    Step,       ///< anything else timed on the way (reading, building, verifying, calibrating)
  };
  std::string name;
  double seconds = 0.0;  ///< wall clock
  Kind kind = Kind::Transform;
};

/// Runs passes and times every step of a pipeline into typed records.
class PassLog {
 public:
  PassLog() : clock_(std::chrono::steady_clock::now()) {}
  /// Records the time since the previous record (or since the log was made) under `name`.
  void lap(std::string name, PassRecord::Kind kind = PassRecord::Kind::Step);
  /// Runs `pass` on `in`, records it as a Transform and returns its result.
  Chain run(const Pass& pass, const Chain& in);
  /// Runs the passes in order.
  Chain run(const std::vector<Pass>& passes, Chain chain);
  const std::vector<PassRecord>& records() const { return records_; }
  /// Comma-separated names of the Transform records so far ("reserve_merge,fold_batchnorm").
  std::string transforms() const;

 private:
  std::chrono::steady_clock::time_point clock_;
  std::vector<PassRecord> records_;
};

/// (name, seconds) pairs of records, the shape of the older `pass_seconds` fields.
std::vector<std::pair<std::string, double>> pass_seconds(const std::vector<PassRecord>& records);

}  // namespace ir
}  // namespace rmnet
