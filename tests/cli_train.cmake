# rmnet train / eval / convert end to end on the real Fashion-MNIST (a few hundred images).
include(${CMAKE_CURRENT_LIST_DIR}/cli_common.cmake)
file(REMOVE_RECURSE ${WORK})
file(MAKE_DIRECTORY ${WORK})

rmnet_run(0 out train --arch resnet8 --dataset fashion-mnist --epochs 2 --max-train-samples 256
          --batch-size 64 --lr 0.05 --workers 1 --out ${WORK}/run)
expect_contains("${out}" "epoch 2/2")
foreach(f final.rmnet best.rmnet checkpoint.ckpt metrics.jsonl config.json train_summary.json)
  if(NOT EXISTS ${WORK}/run/${f})
    message(FATAL_ERROR "train did not write ${f}")
  endif()
endforeach()
file(STRINGS ${WORK}/run/metrics.jsonl lines)
list(LENGTH lines n)
if(NOT n EQUAL 2)
  message(FATAL_ERROR "metrics.jsonl has ${n} lines, expected 2")
endif()

# resume a finished run with more epochs
rmnet_run(0 out train --resume ${WORK}/run/checkpoint.ckpt --epochs 3 --max-train-samples 256 --batch-size 64
          --lr 0.05 --workers 1 --out ${WORK}/run)
expect_contains("${out}" "resuming")
expect_contains("${out}" "epoch 3/3")

# convert with BN kept, fine-tune the plain network, compare
rmnet_run(0 out convert --model ${WORK}/run/final.rmnet --out ${WORK}/plain_bn.rmnet --keep-bn)
rmnet_run(0 out eval --model ${WORK}/run/final.rmnet --compare ${WORK}/plain_bn.rmnet --json ${WORK}/eval.json)
expect_contains("${out}" "prediction agreement: 1.0000")
# the precision policy: the choice, its measured agreement and the dtype that ran are reported;
# bf16 on a residual model (eager) is refused by name
rmnet_run(0 out eval --model ${WORK}/plain_bn.rmnet --dtype auto --check-images 64 --json ${WORK}/eval_auto.json)
expect_contains("${out}" "--dtype auto chose")
file(READ ${WORK}/eval_auto.json json)
string(JSON chosen GET "${json}" model dtype_choice dtype)
string(JSON ran GET "${json}" model dtype)
string(JSON checked GET "${json}" model dtype_choice checked)
string(JSON native GET "${json}" model dtype_choice native_bf16)
if(NOT chosen STREQUAL ran OR (native AND NOT checked EQUAL 64) OR (NOT native AND NOT ran STREQUAL "fp32"))
  message(FATAL_ERROR "unexpected --dtype auto result: ${json}")
endif()
rmnet_run(1 out eval --model ${WORK}/run/final.rmnet --dtype bf16)
expect_contains("${out}" "--dtype bf16")
expect_contains("${out}" "eager")
rmnet_run(0 out train --init ${WORK}/plain_bn.rmnet --epochs 1 --max-train-samples 128 --batch-size 64 --lr 0.01
          --workers 1 --out ${WORK}/finetune)
expect_contains("${out}" "fine-tuning")
rmnet_run(0 out info --model ${WORK}/finetune/final.rmnet)
expect_contains("${out}" "family plain")

# --image-size on Fashion-MNIST: the images resized to 40x40; the model remembers it (preprocess
# metadata) and eval uses it without the flag
rmnet_run(0 out train --arch resnet8 --dataset fashion-mnist --image-size 40 --epochs 1 --max-train-samples 128
          --batch-size 64 --workers 1 --out ${WORK}/run40)
rmnet_run(0 out info --model ${WORK}/run40/final.rmnet)
expect_contains("${out}" "preprocess.crop: 40")
foreach(pair "run40;40" "run;28")  # the run folder, the side its model was trained at
  list(GET pair 0 run)
  list(GET pair 1 trained)
  rmnet_run(0 out eval --model ${WORK}/${run}/final.rmnet --json ${WORK}/eval_${run}.json)
  file(READ ${WORK}/eval_${run}.json json)
  string(JSON side GET "${json}" image_size)
  if(NOT side EQUAL trained)
    message(FATAL_ERROR "eval of a model trained at ${trained}x${trained} evaluated at ${side}: ${json}")
  endif()
endforeach()

# bad input
rmnet_run(1 out train --arch resnet8 --dataset cifar10 --epochs 1 --out ${WORK}/bad)
expect_contains("${out}" "--data")
rmnet_run(1 out train --arch resnet8 --dataset mnist --data ${WORK}/nowhere --epochs 1 --out ${WORK}/bad)
expect_contains("${out}" "nowhere")
rmnet_run(1 out train --arch resnet8 --dataset fashion-mnist --schedule linear --out ${WORK}/bad)
expect_contains("${out}" "--schedule")
rmnet_run(1 out eval --model ${WORK}/run/final.rmnet --dataset cifar10 --data ${WORK}/nowhere)
expect_contains("${out}" "nowhere")

# every flag can come from a TOML file, and command-line flags override it
rmnet_run(0 out --config ${CMAKE_CURRENT_LIST_DIR}/../configs/quickstart.toml train --epochs 1
          --max-train-samples 128 --batch-size 64 --workers 1 --out ${WORK}/cfg)
expect_contains("${out}" "training resnet8 on fashion-mnist")
expect_contains("${out}" "1 epochs, batch 64")
