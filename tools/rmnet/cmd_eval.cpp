#include <utility>

#include <fmt/format.h>
#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include "commands.h"
#include "rmnet/data/datasets.h"
#include "rmnet/deploy/int8.h"
#include "rmnet/deploy/precision.h"
#include "rmnet/deploy/runtime.h"
#include "rmnet/io/model_file.h"
#include "rmnet/train/trainer.h"

namespace rmnet::cli {
namespace {

struct EvalCliOptions {
  std::string model, compare, dataset = "fashion-mnist", data, json, runtime = "auto", predictions, dtype = "fp32";
  int64_t batch_size = 256, workers = 2, image_size = 0, check_images = 1000;
};

void run_eval(EvalCliOptions o) {
  auto test_set = open_dataset_flags(o.dataset, o.data, false);
  ModelPtr first = load_model_flag("--model", o.model);
  o.image_size = image_size_flag(o.image_size, first.get());  // the side the model was trained at, by default
  DataLoader loader(test_set, eval_transform(o.dataset, o.image_size),
                    LoaderOptions().batch_size(o.batch_size).shuffle(false).workers(o.workers));
  std::vector<std::string> files = {o.model};
  if (!o.compare.empty()) files.push_back(o.compare);
  nlohmann::json out = nlohmann::json::object();
  std::vector<torch::Tensor> predictions;
  std::vector<ModelPtr> models;
  const auto precision = precision_from_string(o.dtype);
  // --dtype auto's check set: the first --check-images test images (the agreement is with float32's
  // predictions, not with the labels), read once, and only if the policy measures
  torch::Tensor check;
  const auto check_images = [&] {
    if (!check.defined()) {
      TORCH_CHECK(test_set->size() > 0, "--dtype auto: the test set of '", o.dataset, "' is empty");
      const auto transform = eval_transform(o.dataset, o.image_size);
      Rng rng(0);  // the eval transform draws nothing
      std::vector<torch::Tensor> images;
      for (size_t k = 0; k < std::min<size_t>(test_set->size(), static_cast<size_t>(o.check_images)); ++k)
        images.push_back(transform(test_set->get(k).image, rng));
      check = torch::stack(images);
    }
    return check;
  };
  for (size_t i = 0; i < files.size(); ++i) {
    auto model = i == 0 ? std::exchange(first, nullptr) : load_model(files[i]);
    TORCH_CHECK(model->options().in_channels() == test_set->channels(), "'", files[i], "' takes ",
                model->options().in_channels(), " input channels, data set '", o.dataset, "' has ",
                test_set->channels());
    const int64_t params = count_parameters(*model);
    const auto rt = runtime_from_string(o.runtime);
    PrecisionChoice choice;
    if (precision == Precision::Auto) {
      choice = choose_precision(model, check_images, DeployOptions().runtime(rt));
      say(fmt::format("{}: --dtype auto chose {}", files[i], choice.reason));
    } else if (precision == Precision::BF16) {
      choice.dtype = torch::kBFloat16;
    }
    auto runner = prepare_inference(model, rt, DeployOptions().dtype(choice.dtype));
    const std::string runtime = runtime_name(*runner);
    check_runs_in(*runner, choice.dtype, "--dtype " + o.dtype + ": '" + files[i] + "'");
    auto st = evaluate(*runner, loader);
    predictions.push_back(predict(*runner, loader));
    say(fmt::format("{}: {} ({}), top1 {:.2f}%, top5 {:.2f}%, loss {:.4f}, {} images, {:.0f} images/s ({} runtime, {}), {} params",
                    files[i], model->family(), model->options().arch(), 100 * st.top1, 100 * st.top5, st.loss,
                    st.samples, st.samples / std::max(st.seconds, 1e-9), runtime, choice.dtype_name(), params));
    out[i == 0 ? "model" : "compare"] = {{"file", files[i]},
                                         {"family", model->family()},
                                         {"arch", model->options().arch()},
                                         {"top1", st.top1},
                                         {"top5", st.top5},
                                         {"loss", st.loss},
                                         {"images_per_second", st.samples / std::max(st.seconds, 1e-9)},
                                         {"runtime", runtime},
                                         {"dtype", choice.dtype_name()},
                                         {"parameters", params}};
    if (precision == Precision::Auto)
      out[i == 0 ? "model" : "compare"]["dtype_choice"] = nlohmann::json::parse(choice.to_json());
  }
  if (predictions.size() == 2) {
    const double agreement = predictions[0].eq(predictions[1]).to(torch::kDouble).mean().item<double>();
    out["agreement"] = agreement;
    say(fmt::format("prediction agreement: {:.4f} ({} of {} test images)", agreement,
                    predictions[0].eq(predictions[1]).sum().item<int64_t>(), predictions[0].numel()));
  }
  out["dataset"] = o.dataset;
  out["image_size"] = image_size_for(o.dataset, o.image_size);  // the side the images were evaluated at
  if (!o.predictions.empty()) {  // the first model's predicted class per test image, one per line
    std::string text;
    const auto p = predictions[0].to(torch::kLong).contiguous();
    for (int64_t i = 0; i < p.numel(); ++i) text += std::to_string(p.data_ptr<int64_t>()[i]) + "\n";
    write_file_atomic(o.predictions, text);
  }
  if (!o.json.empty()) write_file_atomic(o.json, out.dump(2) + "\n");
}

}  // namespace

Command setup_eval(CLI::App& app) {
  auto* cmd = app.add_subcommand("eval", "Top-1/top-5 of a model file (residual or plain) on a test set");
  auto o = std::make_shared<EvalCliOptions>();
  cmd->add_option("--model", o->model, "Model file")->required()->check(CLI::ExistingFile);
  cmd->add_option("--compare", o->compare, "A second model file: also report prediction agreement")
      ->check(CLI::ExistingFile);
  cmd->add_option("--dataset", o->dataset, "Data set")->check(CLI::IsMember(dataset_names()));
  cmd->add_option("--data", o->data, "Data folder (default for fashion-mnist: Debian's package)");
  cmd->add_option("--batch-size", o->batch_size, "Batch size")->check(CLI::Range(1, 65536));
  cmd->add_option("--workers", o->workers, "Data loader threads")->check(CLI::Range(0, 64));
  cmd->add_option("--image-size", o->image_size, kImageSizeHelp)->check(CLI::Range(8, 4096));
  cmd->add_option("--json", o->json, "Write the results as JSON");
  cmd->add_option("--predictions", o->predictions, "Write the model's predicted class per test image (one per line)");
  cmd->add_option("--runtime", o->runtime,
                  "auto (each model on its fastest runtime: onednn for plain networks on the CPU, int8 for quantized "
                  "networks, eager for residual ones), onednn, torchscript (old name: deploy), int8 or eager")
      ->check(CLI::IsMember(runtime_names()));
  cmd->add_option("--dtype", o->dtype,
                  "fp32 (default), bf16 (deployed runtimes: plain networks) or auto (bf16 where the CPU runs it natively "
                  "and top-1 agrees with fp32 on the first --check-images test images >= 99.9%, else fp32)")
      ->check(CLI::IsMember({"fp32", "bf16", "auto"}));
  cmd->add_option("--check-images", o->check_images, "--dtype auto: test images to check bf16 against fp32 on")
      ->check(CLI::Range(1, 1000000));
  return {cmd, [o] { run_eval(*o); }};
}

}  // namespace rmnet::cli
