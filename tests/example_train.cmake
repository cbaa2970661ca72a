# Builds examples/train against the install tree and runs it briefly (a few hundred images, one
# epoch): it trains through rmnet::fit, converts, and evaluates both networks.
file(REMOVE_RECURSE ${WORK})
file(MAKE_DIRECTORY ${WORK})
execute_process(COMMAND ${CMAKE_COMMAND} -S ${SOURCE} -B ${WORK}/build -G ${GENERATOR}
                        -DCMAKE_PREFIX_PATH=${PREFIX} -DTorch_DIR=${TORCH_DIR} -DCMAKE_BUILD_TYPE=Release
                RESULT_VARIABLE rc OUTPUT_QUIET)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "configuring the example failed")
endif()
execute_process(COMMAND ${CMAKE_COMMAND} --build ${WORK}/build RESULT_VARIABLE rc)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "building the example failed")
endif()
execute_process(COMMAND ${WORK}/build/train_fashion --train-samples 256 --test-samples 200 --epochs 1
                        --out ${WORK}/run
                RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "train_fashion failed (${rc}): ${out}${err}")
endif()
foreach(pattern "epoch 1: train loss" "converted: .*equivalent" "test top-1: residual .*% on 200 images")
  if(NOT out MATCHES "${pattern}")
    message(FATAL_ERROR "expected '${pattern}' in the output: ${out}")
  endif()
endforeach()
foreach(f final.rmnet plain.rmnet checkpoint.ckpt metrics.jsonl)
  if(NOT EXISTS ${WORK}/run/${f})
    message(FATAL_ERROR "train_fashion did not write ${f}")
  endif()
endforeach()
# bad input gets a clear error naming the folder
execute_process(COMMAND ${WORK}/build/train_fashion --data ${WORK}/nowhere --out ${WORK}/bad
                RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
if(rc EQUAL 0 OR NOT err MATCHES "nowhere")
  message(FATAL_ERROR "expected an error naming the missing data folder, got (${rc}): ${out}${err}")
endif()
message(STATUS "train example ok")
