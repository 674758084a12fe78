// infergate's CUDA-graph shim: a C ABI over libtorch's at::cuda::CUDAGraph, which tch (the Rust
// libtorch binding, 0.24) does not expose. The Rust libtorch backend dlopens this library after
// libtorch_cuda.so, so the graph uses the same CUDA caching allocator and streams as tch's tensors.
//
// Protocol (one graph per handle, one thread at a time):
//   h = ig_graph_new(device)
//   ig_graph_enter_stream(h)      make h's side stream current (it waits for the previous stream)
//   ... eager warm-up of the step (lazy cuBLAS init etc. must happen outside capture) ...
//   ig_graph_capture_begin(h)     capture the ops tch issues on the current stream from here on
//   ... the step, through tch ...
//   ig_graph_capture_end(h, &kernels, &nodes)   node counts of the captured graph, then instantiate
//     (or ig_graph_capture_abort(h) when the step failed during capture)
//   ig_graph_replay(h) ...        relaunch the captured kernels on the current stream
//   ig_graph_exit_stream(h)       restore the previous stream (which waits for the side stream)
//   ig_graph_free(h)
// Every function returns 0 on success and -1 on a C++ exception, whose message is then returned by
// ig_last_error() (thread-local, valid until the next call on that thread).
//
// Build: scripts/gpu/build-cuda-graph-shim.sh (against the torch 2.11 headers; links libtorch_cuda,
// libc10_cuda and libcudart where present, else leaves them to the already-loaded libtorch_cuda).
#include <ATen/cuda/CUDAGraph.h>
#include <c10/cuda/CUDAStream.h>
#include <cuda_runtime_api.h>

#include <cstdint>
#include <exception>
#include <optional>
#include <string>
#include <vector>

namespace {

thread_local std::string last_error;

template <typename F>
int guarded(F&& f) {
  try {
    f();
    return 0;
  } catch (const std::exception& e) {
    last_error = e.what();
  } catch (...) {
    last_error = "unknown C++ exception";
  }
  return -1;
}

struct Graph {
  explicit Graph(c10::DeviceIndex device)
      : graph(/*keep_graph=*/true), side(c10::cuda::getStreamFromPool(false, device)), device(device) {}
  at::cuda::CUDAGraph graph;
  c10::cuda::CUDAStream side;
  std::optional<c10::cuda::CUDAStream> previous;
  c10::DeviceIndex device;
  bool captured = false;
  int64_t replays = 0;
};

void check(cudaError_t e, const char* what) {
  if (e != cudaSuccess) {
    throw std::runtime_error(std::string(what) + ": " + cudaGetErrorString(e));
  }
}

// `a` waits for all work queued so far on `b`.
void wait_for(const c10::cuda::CUDAStream& a, const c10::cuda::CUDAStream& b) {
  cudaEvent_t ev;
  check(cudaEventCreateWithFlags(&ev, cudaEventDisableTiming), "cudaEventCreate");
  check(cudaEventRecord(ev, b.stream()), "cudaEventRecord");
  check(cudaStreamWaitEvent(a.stream(), ev, 0), "cudaStreamWaitEvent");
  check(cudaEventDestroy(ev), "cudaEventDestroy");
}

}  // namespace

extern "C" {

// Bumped when a signature below changes; the Rust side refuses a shim of another version.
int32_t ig_graph_abi_version() { return 1; }

const char* ig_last_error() { return last_error.c_str(); }

int ig_graph_new(int32_t device, void** out) {
  return guarded([&] { *out = new Graph(static_cast<c10::DeviceIndex>(device)); });
}

int ig_graph_enter_stream(void* h) {
  return guarded([&] {
    auto* g = static_cast<Graph*>(h);
    if (g->previous) throw std::runtime_error("ig_graph_enter_stream: already entered");
    auto prev = c10::cuda::getCurrentCUDAStream(g->device);
    wait_for(g->side, prev);
    c10::cuda::setCurrentCUDAStream(g->side);
    g->previous = prev;
  });
}

int ig_graph_exit_stream(void* h) {
  return guarded([&] {
    auto* g = static_cast<Graph*>(h);
    if (!g->previous) throw std::runtime_error("ig_graph_exit_stream: not entered");
    wait_for(*g->previous, g->side);
    c10::cuda::setCurrentCUDAStream(*g->previous);
    g->previous.reset();
  });
}

int ig_graph_capture_begin(void* h) {
  return guarded([&] {
    auto* g = static_cast<Graph*>(h);
    if (!g->previous) throw std::runtime_error("capture must run on the side stream: call ig_graph_enter_stream first");
    if (g->captured) throw std::runtime_error("this handle already holds a captured graph");
    // Thread-local mode: CUDA calls of other threads (e.g. a power poller) do not invalidate the capture.
    g->graph.capture_begin({0, 0}, cudaStreamCaptureModeThreadLocal);
  });
}

int ig_graph_capture_end(void* h, int64_t* kernel_nodes, int64_t* total_nodes) {
  return guarded([&] {
    auto* g = static_cast<Graph*>(h);
    g->graph.capture_end();
    cudaGraph_t raw = g->graph.raw_cuda_graph();
    size_t n = 0;
    check(cudaGraphGetNodes(raw, nullptr, &n), "cudaGraphGetNodes");
    std::vector<cudaGraphNode_t> nodes(n);
    check(cudaGraphGetNodes(raw, nodes.data(), &n), "cudaGraphGetNodes");
    int64_t kernels = 0;
    for (auto node : nodes) {
      cudaGraphNodeType type;
      check(cudaGraphNodeGetType(node, &type), "cudaGraphNodeGetType");
      if (type == cudaGraphNodeTypeKernel) ++kernels;
    }
    *kernel_nodes = kernels;
    *total_nodes = static_cast<int64_t>(n);
    g->graph.instantiate();
    g->captured = true;
  });
}

// After a failed capture: end it (ignoring the error that ending an invalidated capture raises), so
// the stream and the allocator leave capture mode. The handle cannot capture again.
int ig_graph_capture_abort(void* h) {
  auto* g = static_cast<Graph*>(h);
  try {
    g->graph.capture_end();
  } catch (const std::exception& e) {
    last_error = e.what();
  } catch (...) {
  }
  cudaGetLastError();  // clear a non-sticky capture error
  return 0;
}

int ig_graph_replay(void* h) {
  return guarded([&] {
    auto* g = static_cast<Graph*>(h);
    if (!g->captured) throw std::runtime_error("replay before a successful capture");
    g->graph.replay();
    ++g->replays;
  });
}

int64_t ig_graph_replays(void* h) { return static_cast<Graph*>(h)->replays; }

void ig_graph_free(void* h) {
  auto* g = static_cast<Graph*>(h);
  if (g == nullptr) return;
  if (g->previous) c10::cuda::setCurrentCUDAStream(*g->previous);
  try {
    delete g;
  } catch (...) {
  }
}

}  // extern "C"
