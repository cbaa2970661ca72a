#include <fmt/format.h>
#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include "commands.h"
#include "rmnet/data/datasets.h"
#include "rmnet/io/model_file.h"
#include "rmnet/quant/quantize.h"

namespace rmnet::cli {

struct QuantizeCliOptions {
  std::string model, out, dataset, data, observer = "percentile", equalize_by = "activations", json;
  double alpha = 0.5;
  int64_t calib_images = 512, image_size = 0, seed = 0;
  double percentile = 99.99;
  bool no_equalize = false, no_exact_copies = false;
};

static void run_quantize(const QuantizeCliOptions& o) {
  auto model = load_model(o.model);
  TORCH_CHECK(dynamic_cast<PlainNetImpl*>(model.get()), "'", o.model, "' is a residual model (",
              model->options().arch(), "); convert it to a plain network first: rmnet convert --model ", o.model,
              " --out PLAIN");
  DatasetPtr train;
  try {
    train = open_dataset(o.dataset, o.data, true);
  } catch (const c10::Error& e) {
    TORCH_CHECK(false, "calibration set '", o.dataset, "'", o.data.empty() ? "" : " in '" + o.data + "'", ": ",
                e.what_without_backtrace());
  }
  TORCH_CHECK(train->size() > 0, "the calibration set '", o.dataset, "'",
              o.data.empty() ? "" : " in '" + o.data + "'", " is empty");
  TORCH_CHECK(train->channels() == model->options().in_channels(), "'", o.model, "' takes ",
              model->options().in_channels(), " input channels, data set '", o.dataset, "' has ", train->channels());
  const auto images = calibration_images(*train, eval_transform(o.dataset, image_size_flag(o.image_size, model.get())), o.calib_images,
                                         static_cast<uint64_t>(o.seed));
  QuantizeOptions qo;
  qo.equalize(!o.no_equalize).observer(observer_from_string(o.observer)).percentile(o.percentile);
  qo.equalize_by(equalize_by_from_string(o.equalize_by));
  qo.equalize_options().alpha(o.alpha);
  qo.exact_copies(!o.no_exact_copies);
  auto r = quantize(*model, images, qo);
  std::string timing;
  for (const auto& p : r.passes) timing += fmt::format("{}{} {:.3f} s", timing.empty() ? "" : ", ", p.name, p.seconds);
  say(fmt::format("{} -> INT8 ({} calibration images of {}, observer {}, equalization {}); passes: {}", o.model,
                  r.calibration_images, o.dataset, o.observer, o.no_equalize ? "off" : "by " + o.equalize_by, timing));
  r.net->metadata()["quant.calibration_set"] = o.dataset;
  if (!o.no_exact_copies && r.exact_copy_blocks > 0)
    say(fmt::format("{} RM block{} pass the block input's codes unchanged through the reserved channels (exact copies)",
                    r.exact_copy_blocks, r.exact_copy_blocks == 1 ? "" : "s"));
  const auto fb = r.net->fallbacks();
  say(fb.empty() ? "every layer before the head runs in INT8"
                 : fmt::format("float32 fallbacks: {}", r.net->metadata().at("quant.fallbacks")));
  save_model(*r.net, o.out);
  say("wrote " + o.out);
  if (!o.json.empty()) {
    nlohmann::json j;
    j["model"] = o.model;
    j["out"] = o.out;
    j["calibration_set"] = o.dataset;
    j["calibration_images"] = r.calibration_images;
    // which training images (indices into the data set's training split), so peers can use the same
    j["calibration_indices"] = calibration_indices(static_cast<int64_t>(train->size()), o.calib_images,
                                                   static_cast<uint64_t>(o.seed));
    j["observer"] = o.observer;
    j["equalize"] = o.no_equalize ? "no" : o.equalize_by;
    j["equalize_alpha"] = o.alpha;
    j["exact_copy_blocks"] = r.exact_copy_blocks;
    j["exact_copies"] = !o.no_exact_copies;
    j["fallbacks"] = fb;
    for (const auto& p : r.passes) j["pass_seconds"][p.name] = p.seconds;
    j["activation_spread"] = nlohmann::json::array();
    for (const auto& a : r.activation_spread)
      j["activation_spread"].push_back(
          {{"producer", a.producer}, {"channels", a.channels}, {"before", a.before}, {"after", a.after}});
    write_file_atomic(o.json, j.dump(2) + "\n");
  }
}

Command setup_quantize(CLI::App& app) {
  auto* cmd = app.add_subcommand("quantize", "Post-training INT8 quantization of a plain network (equalize, calibrate, quantize)");
  auto o = std::make_shared<QuantizeCliOptions>();
  cmd->add_option("--model", o->model, "Plain network (BN folded or kept; convert a residual model first)")
      ->required()
      ->check(CLI::ExistingFile);
  cmd->add_option("--calib-dataset", o->dataset, "Calibration data set (its training split, eval transform)")
      ->required()
      ->check(CLI::IsMember(dataset_names()));
  cmd->add_option("--data", o->data, "Data set folder (optional for fashion-mnist)");
  cmd->add_option("--calib-images", o->calib_images, "Calibration images (a seeded random choice)")
      ->check(CLI::Range(int64_t{1}, int64_t{10000000}));
  cmd->add_option("--out", o->out, "Output model file (quantized)")->required();
  cmd->add_flag("--no-equalize", o->no_equalize, "Switch cross-layer equalization off");
  cmd->add_flag("--no-exact-copies", o->no_exact_copies,
                "Requantize the RM blocks' reserved (Dirac) channels at every conv like any channel, instead of "
                "passing the block input's codes unchanged to the merge conv (the default: the INT8 runtime then adds "
                "them inside the merge conv)");
  cmd->add_option("--equalize-by", o->equalize_by,
                  "What equalization balances: activations (per-channel ranges on the calibration images, default) "
                  "or weights (DFQ)")
      ->check(CLI::IsMember({"activations", "weights"}));
  cmd->add_option("--equalize-alpha", o->alpha,
                  "Migration strength of activation equalization: 1 = equal activation ranges, 0 = weights only")
      ->check(CLI::Range(0.0, 1.0));
  cmd->add_option("--observer", o->observer, "Activation range observer: percentile (default), minmax, mse")
      ->check(CLI::IsMember({"mse", "percentile", "minmax"}));
  cmd->add_option("--percentile", o->percentile, "Percentile of the percentile observer")->check(CLI::Range(50.0, 100.0));
  cmd->add_option("--image-size", o->image_size, kImageSizeHelp)->check(CLI::Range(8, 4096));
  cmd->add_option("--json", o->json,
                  "Write a report as JSON: passes, fallbacks, per-pair activation range spread before/after equalization");
  cmd->add_option("--seed", o->seed, "Seed of the calibration image choice");
  return {cmd, [o] { run_quantize(*o); }};
}

}  // namespace rmnet::cli
