#include <atomic>
#include <csignal>
#include <filesystem>
#include <fstream>

#include <fmt/format.h>
#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include "commands.h"
#include "progress.h"
#include "rmnet/core.h"
#include "rmnet/data/datasets.h"
#include "rmnet/infer/classifier.h"
#include "rmnet/io/model_file.h"
#include "rmnet/models/registry.h"
#include "rmnet/train/amp.h"
#include "rmnet/train/checkpoint.h"
#include "rmnet/train/distributed.h"
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
  std::string device = "cpu", amp = "off", dist_backend = "auto";
  bool channels_last = false, sync_bn = false, deterministic = false;
  double dist_timeout = 300;
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
          {"max_train_samples", o.max_train_samples}, {"device", o.device},
          {"amp", o.amp},               {"channels_last", o.channels_last},
          {"sparsity", o.sparsity},     {"shortcut_scale", o.shortcut_scale},
          {"sync_bn", o.sync_bn},       {"deterministic", o.deterministic}};
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

/// --device cpu|cuda|cuda:i; under data parallelism "cuda" means cuda:LOCAL_RANK.
torch::Device parse_device(const std::string& name, const std::optional<DistEnv>& denv) {
  torch::Device d(torch::kCPU);
  try {
    d = torch::Device(name);
  } catch (const std::exception&) {
    TORCH_CHECK(false, "--device '", name, "' is not cpu, cuda or cuda:INDEX");
  }
  TORCH_CHECK(d.is_cpu() || d.is_cuda(), "--device '", name, "' is not cpu, cuda or cuda:INDEX");
  if (d.is_cuda()) {
    TORCH_CHECK(torch::cuda::is_available(), "--device ", name,
                ": no CUDA device is available on this machine (use --device cpu)");
    if (!d.has_index()) d = torch::Device(torch::kCUDA, static_cast<c10::DeviceIndex>(denv ? denv->local_rank : 0));
    TORCH_CHECK(d.index() < static_cast<int>(torch::cuda::device_count()), "--device ", name, ": cuda:", d.index(),
                " does not exist (", torch::cuda::device_count(), " CUDA devices)");
  }
  return d;
}

/// Moves the optimizer's momentum buffers next to their parameters (after loading on the CPU).
void move_optimizer_state(torch::optim::SGD& opt) {
  for (auto& g : opt.param_groups())
    for (auto& p : g.params()) {
      auto it = opt.state().find(p.unsafeGetTensorImpl());
      if (it == opt.state().end()) continue;
      auto& st = static_cast<torch::optim::SGDParamState&>(*it->second);
      if (st.momentum_buffer().defined()) st.momentum_buffer(st.momentum_buffer().to(p.device()).contiguous(p.suggest_memory_format()));
    }
}

void run_train(const TrainCliOptions& o) {
  namespace fs = std::filesystem;
  // Data parallelism from the torchrun/SLURM environment; none when WORLD_SIZE is unset or 1.
  const auto denv = DistEnv::from_environment();
  const torch::Device device = parse_device(o.device, denv);
  if (o.deterministic) set_deterministic(true);
  const auto amp_dtype = parse_amp_dtype(o.amp);
  // CPU fp16 autocast works but runs ~100x slower than fp32 here (no fp16 arithmetic on the CPU).
  TORCH_CHECK(amp_dtype != torch::kHalf || device.is_cuda(), "--amp fp16 needs --device cuda (on the CPU use --amp bf16)");
  std::shared_ptr<Distributed> dist;
  if (denv) {
    TORCH_CHECK(o.batch_size % denv->world_size == 0, "--batch-size ", o.batch_size,
                " is the global batch; it must be divisible by WORLD_SIZE=", denv->world_size);
    dist = std::make_shared<Distributed>(
        *denv,
        DistOptions().backend(o.dist_backend).timeout(std::chrono::milliseconds(std::llround(o.dist_timeout * 1000))),
        device);
  }
  const bool main_rank = !dist || dist->is_main();  // only rank 0 writes files and prints
  const int world = dist ? dist->world_size() : 1;
  auto say = [&](const std::string& line) {
    if (main_rank) cli::say(line);
  };
  if (main_rank) fs::create_directories(o.out);
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
  // Each rank reads its strided shard of the epoch's permutation with batch / world samples per
  // step: together the ranks' batches are exactly the single-process batch.
  const int rank = dist ? dist->rank() : 0;
  DataLoader train_loader(train_set, train_transform(o.dataset, o.image_size),
                          LoaderOptions().batch_size(o.batch_size / world).shuffle(true).drop_last(true)
                              .workers(o.workers).seed(o.seed).shard(rank).num_shards(world));
  DataLoader test_loader(test_set, eval_transform(o.dataset, o.image_size),
                         LoaderOptions().batch_size(256).shuffle(false).workers(o.workers).shard(rank).num_shards(world));
  model->to(device);
  if (o.channels_last) to_channels_last(*model);
  if (dist) dist->broadcast_module(*model);  // every rank starts from rank 0's weights
  size_t synced_bn = 0;
  if (o.sync_bn && dist) synced_bn = sync_batchnorm(*model, dist);
  TrainOptions to;
  to.momentum(o.momentum).nesterov(o.nesterov).weight_decay(o.weight_decay).no_decay_bn_bias(o.no_decay_bn_bias)
      .label_smoothing(o.label_smoothing).sparsity(o.sparsity);
  to.device(device).distributed(dist).amp_dtype(amp_dtype).channels_last(o.channels_last);
  if (amp_dtype == torch::kHalf) to.loss_scaler(std::make_shared<LossScaler>());
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
  if (!o.resume.empty()) {
    load_optimizer_state(o.resume, *optimizer);  // every rank reads the same checkpoint
    move_optimizer_state(*optimizer);
  }
  auto cfg = to_json(o);
  cfg["world_size"] = world;
  const std::string config = cfg.dump();
  if (main_rank) std::ofstream(fs::path(o.out) / "config.json") << cfg.dump(2) << "\n";
  const std::string metrics = (fs::path(o.out) / "metrics.jsonl").string();

  say(fmt::format("training {} on {} ({} train / {} test images), {} epochs, batch {}, {} params, {} threads",
                  model->options().arch(), o.dataset, train_loader.samples_per_epoch() * world, test_set->size(),
                  o.epochs, o.batch_size, count_parameters(*model), at::get_num_threads()));
  if (dist)
    say(fmt::format("data parallel: {} ranks ({}), {} images per rank and step, device {}{}", world, dist->backend(),
                    o.batch_size / world, device.str(),
                    o.sync_bn ? fmt::format(", {} BatchNorm layers synchronised", synced_bn) : ""));
  else if (o.sync_bn)
    say("--sync-bn: a single process, so BatchNorm already sees the whole batch");
  if (!dist && (device.is_cuda() || amp_dtype != torch::kFloat || o.channels_last))
    say(fmt::format("device {}, autocast {}, channels_last {}", device.str(), o.amp, o.channels_last));
  g_interrupted = false;
  auto previous = std::signal(SIGINT, on_sigint);
  double train_seconds = 0;
  while (state.epoch < o.epochs) {
    const int64_t epoch = state.epoch;
    std::optional<Progress> bar;
    if (main_rank) bar.emplace(fmt::format("epoch {}/{}", epoch + 1, o.epochs));
    EpochStats st;
    try {
      st = train_epoch(*model, train_loader, *optimizer, to, state,
                       [&](size_t b, size_t n, const EpochStats& s, double lr) {
                         if (bar) bar->update(b, n, fmt::format("loss {:.4f} top1 {:.2f}% {:.0f} img/s lr {:.4g}", s.loss,
                                                      100 * s.top1, s.images_per_second(), lr),
                                    s.seconds);
                       },
                       [] { return g_interrupted.load(); });
    } catch (const NonFiniteLoss& e) {
      if (bar) bar->finish();
      std::signal(SIGINT, previous);
      TORCH_CHECK(false, e.what());
    }
    if (bar) bar->finish();
    train_seconds += st.seconds;
    // Ranks agree on stopping (train_epoch shares the flag), so all of them are here together.
    if (g_interrupted || (dist && state.batch_in_epoch != 0)) {
      if (dist) dist->average_buffers(*model);
      if (main_rank) save_checkpoint(ckpt_path, *model, *optimizer, state, best, config);
      std::signal(SIGINT, previous);
      say(fmt::format("interrupted at epoch {}, batch {}: wrote {} (resume with --resume {})", epoch + 1,
                      state.batch_in_epoch, ckpt_path, ckpt_path));
      throw ExitRequest{130};
    }
    if (dist) dist->average_buffers(*model);  // BN statistics: the mean over ranks, identical everywhere
    auto ev = evaluate(*model, test_loader, device);
    if (dist) ev = all_reduce_stats(ev, *dist);  // each rank evaluated its shard of the test set
    const bool improved = ev.top1 > best;
    best = std::max(best, ev.top1);
    if (improved && main_rank) save_model(*model, (fs::path(o.out) / "best.rmnet").string());
    if (main_rank) save_checkpoint(ckpt_path, *model, *optimizer, state, best, config);
    nlohmann::json line = {{"epoch", epoch + 1},
                           {"train_loss", st.loss},
                           {"train_top1", st.top1},
                           {"test_loss", ev.loss},
                           {"test_top1", ev.top1},
                           {"test_top5", ev.top5},
                           {"lr", learning_rate(to.schedule(), std::max<int64_t>(0, state.global_step - 1))},
                           {"train_seconds", st.seconds},
                           {"train_images_per_second", st.images_per_second()}};
    if (main_rank) append_line(metrics, line.dump());
    say(fmt::format("epoch {}/{}: train loss {:.4f} top1 {:.2f}% | test loss {:.4f} top1 {:.2f}% top5 {:.2f}% | "
                    "{:.0f} img/s, {}",
                    epoch + 1, o.epochs, st.loss, 100 * st.top1, ev.loss, 100 * ev.top1, 100 * ev.top5,
                    st.images_per_second(), format_duration(st.seconds)));
  }
  std::signal(SIGINT, previous);
  if (dist)
    say(fmt::format("gradient averaging (all-reduce after backward) took {:.2f} s of {:.2f} s training on rank 0",
                    dist->gradient_seconds(), train_seconds));
  if (!main_rank) return;
  save_model(*model, (fs::path(o.out) / "final.rmnet").string());
  nlohmann::json summary = {{"train_seconds", train_seconds}, {"best_test_top1", best}, {"epochs", o.epochs},
                            {"world_size", world}};
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
  cmd->add_option("--device", o->device, "cpu, cuda or cuda:INDEX (with WORLD_SIZE > 1, cuda is cuda:LOCAL_RANK)");
  cmd->add_option("--amp", o->amp, "Autocast: off, bf16 (CPU or CUDA) or fp16 (CUDA, with dynamic loss scaling)")
      ->check(CLI::IsMember({"off", "bf16", "fp16"}));
  cmd->add_flag("--channels-last", o->channels_last, "channels_last memory format for the model and images");
  cmd->add_option("--dist-backend", o->dist_backend, "Data-parallel backend when WORLD_SIZE > 1: auto (nccl on CUDA, "
                  "gloo on CPU), gloo or nccl")->check(CLI::IsMember({"auto", "gloo", "nccl"}));
  cmd->add_flag("--deterministic", o->deterministic,
                "Reproducible GPU runs: deterministic cuDNN/algorithms, no TF32 (set CUBLAS_WORKSPACE_CONFIG=:4096:8 too)");
  cmd->add_flag("--sync-bn", o->sync_bn,
                "Data parallel: BatchNorm statistics of the global batch (all ranks) instead of each rank's");
  cmd->add_option("--dist-timeout", o->dist_timeout, "Seconds before a missing or dead rank ends the job")
      ->check(CLI::Range(0.1, 86400.0));
  cmd->add_option("--out", o->out, "Output folder (checkpoint.ckpt, best.rmnet, final.rmnet, metrics.jsonl)");
  cmd->callback([arch, init, resume] {
    if (arch->count() + init->count() + resume->count() == 0) throw CLI::RequiredError("--arch, --init or --resume");
  });
  return {cmd, [o] { run_train(*o); }};
}

}  // namespace rmnet::cli
