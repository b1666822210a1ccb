// train_state.cu — explicit instantiations of TrainState (train_state.cuh) for both compute types. Nothing here
// needs cuBLAS or NCCL headers, so a machine with nvcc alone (CI) compiles the training state as a check, and the
// model classes that include the header share these instantiations at link time.
#include "train_state.cuh"

namespace cudabk {
template class TrainState<bf16>;
template class TrainState<float>;
}  // namespace cudabk
