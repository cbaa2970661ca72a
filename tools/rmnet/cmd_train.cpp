// rmnet train: flags to rmnet::fit (train/fit.h), which does the work; Ctrl-C becomes its stop request.
#include <atomic>
#include <csignal>

#include <fmt/format.h>
#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include "commands.h"
#include "progress.h"
#include "rmnet/core.h"
#include "rmnet/deploy/runtime.h"
#include "rmnet/data/datasets.h"
#include "rmnet/io/model_file.h"
#include "rmnet/models/registry.h"
#include "rmnet/train/checkpoint.h"
#include "rmnet/train/fit.h"

namespace rmnet::cli {
namespace {

std::atomic<bool> g_interrupted{false};

/// While alive, SIGINT sets g_interrupted (fit's stop request); then the previous handler is back.
struct SigintFlag {
  void (*previous)(int) = (g_interrupted = false, std::signal(SIGINT, [](int) { g_interrupted = true; }));
  ~SigintFlag() { std::signal(SIGINT, previous); }
};

struct TrainCliOptions {
  ArchFlags arch;
  std::string init, resume, dataset = "fashion-mnist", data, device = "cpu", amp = "off", dist_backend = "auto";
  std::string teacher;
  int64_t image_size = 0, max_train_samples = 0;
  bool shortcut_scale = false, sync_bn = false, deterministic = false;
  double dist_timeout = 300;  // seconds
  FitOptions fit = FitOptions().workers(2).out("runs/train");
};

void run_train(TrainCliOptions o) {
  const auto denv = DistEnv::from_environment();  // data parallel under torchrun/SLURM
  TrainOptions& to = o.fit.train();
  to.device(parse_device(o.device, denv ? denv->local_rank : 0)).amp_dtype(parse_amp_dtype(o.amp));
  if (o.deterministic) set_deterministic(true);
  // CPU fp16 autocast works but runs ~100x slower than fp32 here (no fp16 arithmetic on the CPU).
  TORCH_CHECK(to.amp_dtype() != torch::kHalf || to.device().is_cuda(), "--amp fp16 needs --device cuda (on the CPU use --amp bf16)");
  if (denv) {
    TORCH_CHECK(o.fit.batch_size() % denv->world_size == 0, "--batch-size ", o.fit.batch_size(),
                " is the global batch; it must be divisible by WORLD_SIZE=", denv->world_size);
    const auto timeout = std::chrono::milliseconds(std::llround(o.dist_timeout * 1000));
    to.distributed(std::make_shared<Distributed>(*denv, DistOptions().backend(o.dist_backend).timeout(timeout), to.device()));
  }
  const auto dist = to.distributed();
  const bool main_rank = !dist || dist->is_main();
  auto say = [&](const std::string& line) { if (main_rank) cli::say(line); };  // only rank 0 prints
  torch::manual_seed(o.fit.seed());
  DatasetPtr train_set = open_dataset_flags(o.dataset, o.data, true), test_set = open_dataset_flags(o.dataset, o.data, false);
  if (o.max_train_samples > 0) train_set = std::make_shared<Subset>(train_set, static_cast<size_t>(o.max_train_samples));
  ModelPtr model;
  if (!o.resume.empty()) {
    const auto c = load_checkpoint(o.resume);
    model = c.model;
    say(fmt::format("resuming {} at epoch {} (step {})", o.resume, c.state.epoch + 1, c.state.global_step));
  } else if (!o.init.empty()) {
    model = load_model(o.init);
    say(fmt::format("fine-tuning {} ({}, {})", o.init, model->family(), model->options().arch()));
  } else {
    auto opts = o.arch.to_options().num_classes(train_set->num_classes()).in_channels(train_set->channels());
    model = create_model(opts.track_block_stats(true).shortcut_scale(o.shortcut_scale || to.sparsity() > 0));
  }
  if (!o.teacher.empty()) {
    ModelPtr teacher = load_model_flag("--teacher", o.teacher);
    TORCH_CHECK(teacher->options().num_classes() == model->options().num_classes(), "--teacher '", o.teacher,
                "' has ", teacher->options().num_classes(), " classes, the trained network ",
                model->options().num_classes());
    teacher->eval();
    // the teacher only runs inference: on its fastest runtime (a plain network on onednn)
    teacher = prepare_inference(teacher, Runtime::Auto, DeployOptions().device(to.device()));
    say(fmt::format("distilling from {} ({}, {} runtime): weight {}, temperature {}", o.teacher,
                    teacher->options().arch(), runtime_name(*teacher), to.distill_weight(), to.distill_temperature()));
    to.teacher(teacher);
  }
  // a fine-tuned or resumed model keeps the side it was trained at unless --image-size says otherwise
  const int64_t image_size = image_size_flag(o.image_size, model.get());
  if (!Preprocess::from_metadata(model->metadata()) || o.image_size > 0)  // what the Classifier API applies to images
    preprocess_for(o.dataset, *test_set, image_size).to_metadata(model->metadata());
  o.fit.train_transform(train_transform(o.dataset, image_size)).test_transform(eval_transform(o.dataset, image_size));
  o.fit.resume(o.resume).config(nlohmann::json{{"arch", o.arch.arch}, {"init", o.init}, {"dataset", o.dataset}, {"data", o.data},
      {"max_train_samples", o.max_train_samples}, {"device", o.device}, {"amp", o.amp}, {"shortcut_scale", o.shortcut_scale},
      {"sync_bn", o.sync_bn}, {"deterministic", o.deterministic}, {"teacher", o.teacher},
      {"distill_weight", o.teacher.empty() ? 0.0 : to.distill_weight()},
      {"distill_temperature", to.distill_temperature()}}.dump());
  const size_t synced_bn = o.sync_bn && dist ? sync_batchnorm(*model, dist) : 0;
  o.fit.on_begin([&](const FitPlan& p) {
    say(fmt::format("training {} on {} ({} train / {} test images), {} epochs, batch {}, {} params, {} threads",
                    model->options().arch(), o.dataset, p.samples_per_epoch, test_set->size(), o.fit.epochs(),
                    o.fit.batch_size(), count_parameters(*model), at::get_num_threads()));
    if (dist)
      say(fmt::format("data parallel: {} ranks ({}), {} images per rank and step, device {}{}", dist->world_size(),
                      dist->backend(), o.fit.batch_size() / dist->world_size(), to.device().str(),
                      o.sync_bn ? fmt::format(", {} BatchNorm layers synchronised", synced_bn) : ""));
    else if (o.sync_bn) say("--sync-bn: a single process, so BatchNorm already sees the whole batch");
    if (!dist && (to.device().is_cuda() || to.amp_dtype() != torch::kFloat || to.channels_last()))
      say(fmt::format("device {}, autocast {}, channels_last {}", to.device().str(), o.amp, to.channels_last()));
  });
  o.fit.stop([] { return g_interrupted.load(); });
  const auto res = [&] {  // the bar is finished and the SIGINT handler restored before the last lines
    SigintFlag sigint;
    FitProgress progress(o.fit, main_rank);
    return fit(*model, train_set, test_set, o.fit);
  }();
  if (res.stopped) {
    say(fmt::format("interrupted at epoch {}, batch {}: wrote {} (resume with --resume {})", res.state.epoch + 1,
                    res.state.batch_in_epoch, res.checkpoint, res.checkpoint));
    throw ExitRequest{130};
  }
  if (dist)
    say(fmt::format("gradient averaging (all-reduce after backward) took {:.2f} s of {:.2f} s training on rank 0",
                    dist->gradient_seconds(), res.train_seconds));
  say(fmt::format("done: best test top1 {:.2f}%, training time {}; wrote {}/final.rmnet, best.rmnet, checkpoint.ckpt",
                  100 * res.best_top1, format_duration(res.train_seconds), o.fit.out()));
}

}  // namespace

Command setup_train(CLI::App& app) {
  auto* cmd = app.add_subcommand("train", "Train a model (or fine-tune a converted plain network)");
  auto o = std::make_shared<TrainCliOptions>();
  auto& f = o->fit;
  auto& t = f.train();
  auto* arch = add_arch_flags(*cmd, o->arch);
  auto* init = cmd->add_option("--init", o->init, "Start from this model file (e.g. a converted plain network)")
                   ->check(CLI::ExistingFile);
  auto* resume = cmd->add_option("--resume", o->resume, "Resume from this checkpoint")->check(CLI::ExistingFile);
  arch->excludes(init)->excludes(resume);
  init->excludes(resume);
  cmd->add_flag("--keep-dirac", t.keep_dirac(),
                "A plain network's Dirac channels (an RM block's reserved copies, the merge's shortcut and "
                "projection columns) do not train, so the network keeps its shortcuts on the onednn runtime "
                "and trains as the residual network it still is");
  auto* teacher = cmd->add_option("--teacher", o->teacher,
                                  "Distil from this network (e.g. the unpruned one when fine-tuning a pruned --init): "
                                  "loss = (1 - A) cross-entropy + A T^2 KL(teacher || student) at temperature T")
                      ->check(CLI::ExistingFile);
  cmd->add_option("--distill-weight", t.distill_weight(), "A: weight of the distillation term, in [0, 1]")
      ->check(CLI::Range(0.0, 1.0))
      ->needs(teacher);
  cmd->add_option("--distill-temperature", t.distill_temperature(), "T: softmax temperature of the distillation")
      ->check(CLI::Range(1e-3, 1e3))
      ->needs(teacher);
  cmd->add_option("--dataset", o->dataset, "Data set")->check(CLI::IsMember(dataset_names()));
  cmd->add_option("--data", o->data, "Data folder (default for fashion-mnist: Debian's package)");
  cmd->add_option("--epochs", f.epochs(), "Epochs")->check(CLI::Range(1, 100000));
  cmd->add_option("--batch-size", f.batch_size(), "Batch size")->check(CLI::Range(1, 65536));
  add_optimizer_flags(*cmd, f.train());
  cmd->add_flag("--shortcut-scale", o->shortcut_scale,
                "ResNet blocks get a learnable shortcut scale (on by default with --sparsity for a new model)");
  cmd->add_option("--workers", f.workers(), "Data loader threads")->check(CLI::Range(0, 64));
  cmd->add_option("--image-size", o->image_size, kImageSizeHelp)->check(CLI::Range(8, 4096));
  cmd->add_option("--max-train-samples", o->max_train_samples, "Use only the first N training images (0 = all)")
      ->check(CLI::Range(int64_t{0}, int64_t{1} << 40));
  cmd->add_option("--seed", f.seed(), "Random seed");
  cmd->add_option("--device", o->device, "cpu, cuda or cuda:INDEX (with WORLD_SIZE > 1, cuda is cuda:LOCAL_RANK)");
  cmd->add_option("--amp", o->amp, "Autocast: off, bf16 (CPU or CUDA) or fp16 (CUDA, with dynamic loss scaling)")
      ->check(CLI::IsMember({"off", "bf16", "fp16"}));
  cmd->add_flag("--channels-last", t.channels_last(), "channels_last memory format for the model and images");
  cmd->add_option("--dist-backend", o->dist_backend, "Data-parallel backend when WORLD_SIZE > 1: auto (nccl on CUDA, "
                  "gloo on CPU), gloo or nccl")->check(CLI::IsMember({"auto", "gloo", "nccl"}));
  cmd->add_flag("--deterministic", o->deterministic,
                "Reproducible GPU runs: deterministic cuDNN/algorithms, no TF32 (set CUBLAS_WORKSPACE_CONFIG=:4096:8 too)");
  cmd->add_flag("--sync-bn", o->sync_bn,
                "Data parallel: BatchNorm statistics of the global batch (all ranks) instead of each rank's");
  cmd->add_option("--dist-timeout", o->dist_timeout, "Seconds before a missing or dead rank ends the job")
      ->check(CLI::Range(0.1, 86400.0));
  cmd->add_option("--out", f.out(), "Output folder (checkpoint.ckpt, best.rmnet, final.rmnet, metrics.jsonl)");
  cmd->callback([arch, init, resume] {
    if (arch->count() + init->count() + resume->count() == 0) throw CLI::RequiredError("--arch, --init or --resume");
  });
  return {cmd, [o] { run_train(*o); }};
}

}  // namespace rmnet::cli
