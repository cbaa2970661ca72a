#include <atomic>
#include <csignal>
#include <filesystem>
#include <fstream>

#include <fmt/format.h>
#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include "commands.h"
#include "progress.h"
#include "rmnet/data/datasets.h"
#include "rmnet/infer/classifier.h"
#include "rmnet/io/model_file.h"
#include "rmnet/models/registry.h"
#include "rmnet/train/checkpoint.h"
#include "rmnet/train/trainer.h"

namespace rmnet::cli {
namespace {

std::atomic<bool> g_interrupted{false};
void on_sigint(int) { g_interrupted = true; }

struct TrainCliOptions {
  ArchFlags arch;
  std::string init, resume, dataset = "fashion-mnist", data, out = "runs/train";
  int64_t epochs = 10, batch_size = 128, workers = 2, image_size = 224, max_train_samples = 0;
  double sparsity = 0.0, lr = 0.1, momentum = 0.9, weight_decay = 5e-4, label_smoothing = 0.0, warmup_epochs = 0.0, gamma = 0.1;
  bool nesterov = false, no_decay_bn_bias = false, shortcut_scale = false;
  std::string schedule = "cosine";
  std::vector<int64_t> milestones;
  int64_t step_size = 30;
  uint64_t seed = 0;
};

nlohmann::json to_json(const TrainCliOptions& o) {
  return {{"arch", o.arch.arch},        {"init", o.init},
          {"dataset", o.dataset},       {"data", o.data},
          {"epochs", o.epochs},         {"batch_size", o.batch_size},
          {"lr", o.lr},                 {"momentum", o.momentum},
          {"nesterov", o.nesterov},     {"weight_decay", o.weight_decay},
          {"no_decay_bn_bias", o.no_decay_bn_bias}, {"label_smoothing", o.label_smoothing},
          {"schedule", o.schedule},     {"milestones", o.milestones},
          {"step_size", o.step_size},   {"gamma", o.gamma},
          {"warmup_epochs", o.warmup_epochs}, {"seed", o.seed},
          {"max_train_samples", o.max_train_samples}, {"sparsity", o.sparsity}, {"shortcut_scale", o.shortcut_scale}};
}

/// The first n samples of a data set (quick runs).
class Subset : public Dataset {
 public:
  Subset(DatasetPtr base, size_t n) : base_(std::move(base)), n_(std::min(n, base_->size())) {}
  size_t size() const override { return n_; }
  Sample get(size_t i) const override { return base_->get(i); }
  int64_t num_classes() const override { return base_->num_classes(); }
  int64_t channels() const override { return base_->channels(); }

 private:
  DatasetPtr base_;
  size_t n_;
};

void append_line(const std::string& path, const std::string& line) {
  std::ofstream f(path, std::ios::app);
  TORCH_CHECK(f, "cannot append to '", path, "'");
  f << line << "\n";
}

void run_train(const TrainCliOptions& o) {
  namespace fs = std::filesystem;
  fs::create_directories(o.out);
  torch::manual_seed(o.seed);
  DatasetPtr train_set = open_dataset(o.dataset, o.data, true);
  if (o.max_train_samples > 0) train_set = std::make_shared<Subset>(train_set, static_cast<size_t>(o.max_train_samples));
  DatasetPtr test_set = open_dataset(o.dataset, o.data, false);

  ModelPtr model;
  TrainState state;
  double best = 0.0;
  const std::string ckpt_path = (fs::path(o.out) / "checkpoint.ckpt").string();
  if (!o.resume.empty()) {
    auto c = load_checkpoint(o.resume);
    model = c.model;
    state = c.state;
    best = c.best_top1;
    say(fmt::format("resuming {} at epoch {} (step {})", o.resume, state.epoch + 1, state.global_step));
  } else if (!o.init.empty()) {
    model = load_model(o.init);
    say(fmt::format("fine-tuning {} ({}, {})", o.init, model->family(), model->options().arch()));
  } else {
    auto opts = o.arch.to_options();
    opts.num_classes(train_set->num_classes()).in_channels(train_set->channels()).track_block_stats(true);
    opts.shortcut_scale(o.shortcut_scale || o.sparsity > 0);
    model = create_model(opts);
  }
  TORCH_CHECK(model->options().in_channels() == train_set->channels(), "the model takes ",
              model->options().in_channels(), " input channels, data set '", o.dataset, "' has ", train_set->channels());
  TORCH_CHECK(model->options().num_classes() == train_set->num_classes(), "the model has ",
              model->options().num_classes(), " classes, data set '", o.dataset, "' has ", train_set->num_classes());

  if (!Preprocess::from_metadata(model->metadata())) {  // what the Classifier API applies to images
    const auto norm = normalization_for(o.dataset);
    Preprocess pre;
    const auto sample = test_set->get(0).image;
    pre.crop = o.dataset == "folder" ? o.image_size : sample.size(1);
    pre.resize = o.dataset == "folder" ? o.image_size * 8 / 7 : sample.size(1);
    pre.mean = norm.mean;
    pre.std = norm.std;
    pre.to_metadata(model->metadata());
  }
  DataLoader train_loader(train_set, train_transform(o.dataset, o.image_size),
                          LoaderOptions().batch_size(o.batch_size).shuffle(true).drop_last(true).workers(o.workers).seed(o.seed));
  DataLoader test_loader(test_set, eval_transform(o.dataset, o.image_size),
                         LoaderOptions().batch_size(256).shuffle(false).workers(o.workers));
  TrainOptions to;
  to.momentum(o.momentum).nesterov(o.nesterov).weight_decay(o.weight_decay).no_decay_bn_bias(o.no_decay_bn_bias)
      .label_smoothing(o.label_smoothing).sparsity(o.sparsity);
  to.schedule(ScheduleOptions()
                  .kind(o.schedule)
                  .lr(o.lr)
                  .epochs(o.epochs)
                  .steps_per_epoch(static_cast<int64_t>(std::max<size_t>(1, train_loader.batches_per_epoch())))
                  .milestones(o.milestones)
                  .step_size(o.step_size)
                  .gamma(o.gamma)
                  .warmup_epochs(o.warmup_epochs));
  learning_rate(to.schedule(), 0);  // validates the schedule name before any work
  auto optimizer = make_sgd(*model, to);
  if (!o.resume.empty()) load_optimizer_state(o.resume, *optimizer);
  const std::string config = to_json(o).dump();
  std::ofstream(fs::path(o.out) / "config.json") << to_json(o).dump(2) << "\n";
  const std::string metrics = (fs::path(o.out) / "metrics.jsonl").string();

  say(fmt::format("training {} on {} ({} train / {} test images), {} epochs, batch {}, {} params, {} threads",
                  model->options().arch(), o.dataset, train_loader.samples_per_epoch(), test_set->size(), o.epochs,
                  o.batch_size, count_parameters(*model), at::get_num_threads()));
  g_interrupted = false;
  auto previous = std::signal(SIGINT, on_sigint);
  double train_seconds = 0;
  while (state.epoch < o.epochs) {
    const int64_t epoch = state.epoch;
    Progress bar(fmt::format("epoch {}/{}", epoch + 1, o.epochs));
    EpochStats st;
    try {
      st = train_epoch(*model, train_loader, *optimizer, to, state,
                       [&](size_t b, size_t n, const EpochStats& s, double lr) {
                         bar.update(b, n, fmt::format("loss {:.4f} top1 {:.2f}% {:.0f} img/s lr {:.4g}", s.loss,
                                                      100 * s.top1, s.images_per_second(), lr),
                                    s.seconds);
                       },
                       [] { return g_interrupted.load(); });
    } catch (const NonFiniteLoss& e) {
      bar.finish();
      std::signal(SIGINT, previous);
      TORCH_CHECK(false, e.what());
    }
    bar.finish();
    train_seconds += st.seconds;
    if (g_interrupted) {
      save_checkpoint(ckpt_path, *model, *optimizer, state, best, config);
      std::signal(SIGINT, previous);
      say(fmt::format("interrupted at epoch {}, batch {}: wrote {} (resume with --resume {})", epoch + 1,
                      state.batch_in_epoch, ckpt_path, ckpt_path));
      throw ExitRequest{130};
    }
    auto ev = evaluate(*model, test_loader);
    const bool improved = ev.top1 > best;
    best = std::max(best, ev.top1);
    if (improved) save_model(*model, (fs::path(o.out) / "best.rmnet").string());
    save_checkpoint(ckpt_path, *model, *optimizer, state, best, config);
    nlohmann::json line = {{"epoch", epoch + 1},
                           {"train_loss", st.loss},
                           {"train_top1", st.top1},
                           {"test_loss", ev.loss},
                           {"test_top1", ev.top1},
                           {"test_top5", ev.top5},
                           {"lr", learning_rate(to.schedule(), std::max<int64_t>(0, state.global_step - 1))},
                           {"train_seconds", st.seconds},
                           {"train_images_per_second", st.images_per_second()}};
    append_line(metrics, line.dump());
    say(fmt::format("epoch {}/{}: train loss {:.4f} top1 {:.2f}% | test loss {:.4f} top1 {:.2f}% top5 {:.2f}% | "
                    "{:.0f} img/s, {}",
                    epoch + 1, o.epochs, st.loss, 100 * st.top1, ev.loss, 100 * ev.top1, 100 * ev.top5,
                    st.images_per_second(), format_duration(st.seconds)));
  }
  std::signal(SIGINT, previous);
  save_model(*model, (fs::path(o.out) / "final.rmnet").string());
  nlohmann::json summary = {{"train_seconds", train_seconds}, {"best_test_top1", best}, {"epochs", o.epochs}};
  std::ofstream(fs::path(o.out) / "train_summary.json") << summary.dump(2) << "\n";
  say(fmt::format("done: best test top1 {:.2f}%, training time {}; wrote {}/final.rmnet, best.rmnet, checkpoint.ckpt",
                  100 * best, format_duration(train_seconds), o.out));
}

}  // namespace

Command setup_train(CLI::App& app) {
  auto* cmd = app.add_subcommand("train", "Train a model (or fine-tune a converted plain network)");
  auto o = std::make_shared<TrainCliOptions>();
  auto* arch = add_arch_flags(*cmd, o->arch);
  auto* init = cmd->add_option("--init", o->init, "Start from this model file (e.g. a converted plain network)")
                   ->check(CLI::ExistingFile);
  auto* resume = cmd->add_option("--resume", o->resume, "Resume from this checkpoint")->check(CLI::ExistingFile);
  arch->excludes(init)->excludes(resume);
  init->excludes(resume);
  cmd->add_option("--dataset", o->dataset, "Data set")->check(CLI::IsMember(dataset_names()));
  cmd->add_option("--data", o->data, "Data folder (default for fashion-mnist: Debian's package)");
  cmd->add_option("--epochs", o->epochs, "Epochs")->check(CLI::Range(1, 100000));
  cmd->add_option("--batch-size", o->batch_size, "Batch size")->check(CLI::Range(1, 65536));
  cmd->add_option("--lr", o->lr, "Peak learning rate")->check(CLI::Range(0.0, 100.0));
  cmd->add_option("--momentum", o->momentum, "SGD momentum")->check(CLI::Range(0.0, 1.0));
  cmd->add_flag("--nesterov", o->nesterov, "Nesterov momentum");
  cmd->add_option("--weight-decay,--wd", o->weight_decay, "Weight decay")->check(CLI::Range(0.0, 1.0));
  cmd->add_flag("--no-decay-bn-bias", o->no_decay_bn_bias, "No weight decay on BN parameters and biases");
  cmd->add_option("--sparsity", o->sparsity,
                  "Network slimming: L1 penalty lambda on BN scales (and shortcut scales), e.g. 1e-4")
      ->check(CLI::Range(0.0, 1.0));
  cmd->add_flag("--shortcut-scale", o->shortcut_scale,
                "ResNet blocks get a learnable shortcut scale (on by default with --sparsity for a new model)");
  cmd->add_option("--label-smoothing", o->label_smoothing, "Label smoothing")->check(CLI::Range(0.0, 0.99));
  cmd->add_option("--schedule", o->schedule, "LR schedule")->check(CLI::IsMember({"constant", "step", "multistep", "cosine"}));
  cmd->add_option("--milestones", o->milestones, "multistep: epochs where lr *= gamma");
  cmd->add_option("--step-size", o->step_size, "step: epochs between lr *= gamma")->check(CLI::Range(1, 100000));
  cmd->add_option("--gamma", o->gamma, "step/multistep factor")->check(CLI::Range(0.0, 1.0));
  cmd->add_option("--warmup-epochs", o->warmup_epochs, "Linear warm-up epochs")->check(CLI::Range(0.0, 1000.0));
  cmd->add_option("--workers", o->workers, "Data loader threads")->check(CLI::Range(0, 64));
  cmd->add_option("--image-size", o->image_size, "Crop size for folder data sets")->check(CLI::Range(8, 4096));
  cmd->add_option("--max-train-samples", o->max_train_samples, "Use only the first N training images (0 = all)")
      ->check(CLI::Range(int64_t{0}, int64_t{1} << 40));
  cmd->add_option("--seed", o->seed, "Random seed");
  cmd->add_option("--out", o->out, "Output folder (checkpoint.ckpt, best.rmnet, final.rmnet, metrics.jsonl)");
  cmd->callback([arch, init, resume] {
    if (arch->count() + init->count() + resume->count() == 0) throw CLI::RequiredError("--arch, --init or --resume");
  });
  return {cmd, [o] { run_train(*o); }};
}

}  // namespace rmnet::cli
