// Where a forward step's kernels find the position of its first row. They read it from device
// memory, not from a kernel argument, so that the decode step captured once as a CUDA graph
// (llama_cuda.cu) replays unchanged at every position: only that int and the token change.
#pragma once

namespace ll::cuda {

struct FirstPos {
    int host;            // its value when the call is made: launchers check it against the cache
                         // (and flash decode sizes its splits by it); a graph replays for others
    const int* device;   // one int in device memory holding it, which the kernels read
};

}  // namespace ll::cuda
