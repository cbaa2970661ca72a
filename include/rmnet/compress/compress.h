#pragma once
// Compress to a target: the user's path from a trained network to a smaller, faster one, as one call.
//
//   trained model --convert (BN kept, verified)--> plain network
//     --prune (to the round's target) --> fine-tune (distilled from the unpruned network) -->  x rounds
//     --> [quantize to INT8] --> evaluate every step on the test set, time it on its runtime
//
// With N rounds the target is approached geometrically: round r prunes to target^(r/N) of the way
// (MACs or latency), and each round is fine-tuned before the next one ranks channels again. Every
// step is recorded (MACs, parameters, measured images/s and latency on its runtime, top-1) in
// report.json, with a PNG of top-1 against images/s, in the output folder, which is written whole
// at the end: a failed run leaves nothing (and an existing folder is refused up front).
//
// Targets (exactly one):
//   target_macs F        the final MACs per image are at most F times the *trained* model's (for a
//                        residual model: the residual network's, not its 1.6-3.9x larger RM form),
//                        counted as the onednn runtime executes them with keep_shortcuts (its Dirac
//                        shortcuts are not convolutions: deploy/shortcuts.h), as count_flops without;
//   target_latency_ms L  a forward of a batch (prune.latency: batch, runtime) takes at most L ms,
//                        measured on this machine;
//   target_speedup X     the latency is at most the converted network's (on the runtime) / X.
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include <torch/arg.h>

#include "rmnet/data/dataset.h"
#include "rmnet/data/transforms.h"
#include "rmnet/models/model.h"
#include "rmnet/prune/slim.h"
#include "rmnet/quant/quantize.h"
#include "rmnet/train/fit.h"

namespace rmnet {

struct CompressOptions {
  /// The final target, exactly one (see the header comment; negative: unset).
  TORCH_ARG(double, target_macs) = -1.0;
  TORCH_ARG(double, target_latency_ms) = -1.0;
  TORCH_ARG(double, target_speedup) = -1.0;
  /// Prune -> fine-tune rounds.
  TORCH_ARG(int64_t, rounds) = 1;
  /// Fine-tuning epochs after each pruning round (0: none).
  TORCH_ARG(int64_t, finetune_epochs) = 1;
  /// Ranking, grouping, reconstruction, rounding, caps and the latency measurement (batch, runtime)
  /// of every round; its criterion and input size are set per round from the target and the data
  /// (keep_one on by default: a deep target may leave a layer one channel; reconstruction on by
  /// default: without it the RM form collapses at equal MACs; stream groups by default: with the
  /// shortcuts kept they remove what a residual-aware pruner removes, see docs/pruning.md).
  TORCH_ARG(PruneOptions, prune) = PruneOptions().keep_one(true).reconstruct(true).grouping(PruneGrouping::Stream);
  /// Keep the RM blocks' reserved channels as shortcuts the runtime does not compute: every round
  /// prunes to executed MACs (PruneOptions::executed_macs), its refit and its fine-tuning leave the
  /// Dirac copies as they are (PruneOptions::reconstruct_keep_dirac, TrainOptions::keep_dirac).
  /// false: the plain form's channels are all convolutions (counted, refitted and trained as such).
  TORCH_ARG(bool, keep_shortcuts) = true;
  /// The fine-tuning recipe (batch size, optimizer, schedule, transforms, workers, seed); epochs,
  /// output folder and teacher are set per round.
  TORCH_ARG(FitOptions, finetune) = FitOptions();
  /// Distil from the unpruned (converted) network while fine-tuning (FitOptions' distill_weight and
  /// distill_temperature apply).
  TORCH_ARG(bool, distill) = true;
  /// Quantize the last round's network to INT8 (calibration images from the training set).
  TORCH_ARG(bool, int8) = false;
  TORCH_ARG(QuantizeOptions, quantize) = QuantizeOptions();
  /// Calibration images (training set, test transform) for reconstruction and INT8.
  TORCH_ARG(int64_t, calibration_images) = 256;
  TORCH_ARG(uint64_t, calibration_seed) = 0;
  /// Images per forward and timed forwards of the images/s figures.
  TORCH_ARG(int64_t, bench_batch) = 32;
  TORCH_ARG(int64_t, bench_iters) = 20;
  /// Output folder (report.json, accuracy_vs_speed.png, one model file per step); empty: no files.
  TORCH_ARG(std::string, out) = "";
  /// Progress lines (null: silent).
  TORCH_ARG(std::function<void(const std::string&)>, log) = nullptr;
};

/// One step of the path.
struct CompressStep {
  std::string name;      ///< "original", "converted", "round 1", ..., "int8"
  std::string runtime;   ///< what it was timed on
  std::string file;      ///< its model file in the output folder ("" without one)
  int64_t macs = 0, params = 0;
  int64_t executed_macs = 0;  ///< MACs per image its runtime executes (plain: executed_macs; otherwise macs)
  int64_t shortcuts = 0;      ///< Dirac shortcuts the runtime runs (plain networks and their INT8 form)
  double images_per_second = 0.0, latency_ms = 0.0;  ///< at bench_batch
  double top1 = 0.0;     ///< on the test set, in [0, 1]
  double target = 0.0;   ///< the round's target (MACs fraction of the input to prune, or ms)
  double seconds = 0.0;  ///< wall time of the step (prune + fine-tune, or quantize)
};

struct CompressResult {
  ModelPtr net;                    ///< the last step's network (INT8 with `int8`)
  std::vector<CompressStep> steps;
  std::string report_json;         ///< what report.json holds
};

/// Runs the path on `trained` (a residual model of a convertible family, or a plain network with
/// BatchNorms kept), fine-tuning on `train` and evaluating on `test`. The input is not modified.
CompressResult compress(const ModelImpl& trained, const DatasetPtr& train, const DatasetPtr& test,
                        const CompressOptions& options);

/// Draws top-1 against images/s of the steps as a PNG (OpenCV); false when built without OpenCV.
bool plot_compress(const std::vector<CompressStep>& steps, const std::string& png_path, const std::string& title);

}  // namespace rmnet
