// A CUDA device for a CPU-only torch build, for FakeTensorMode tracing (planner/trace/cuda.py).
// Fake tensors on "cuda" need two things a CPU build lacks once autograd runs:
//  - a DeviceGuardImpl for CUDA (autograd's InputMetadata and InputBuffer ask it for the current stream;
//    c10/core/impl/DeviceGuardImplInterface.h), here one device whose streams and events are no-ops;
//  - CUDA hooks that say CUDA is built (at::accelerator::getAccelerator reads CUDAHooks::isBuilt,
//    aten/src/ATen/accelerator/Accelerator.cpp; the engine asks hasPrimaryContext before syncing streams).
//    at::detail::getCUDAHooks() makes its object once, a stub on a CPU build (an empty
//    CUDAHooksInterface: a vtable pointer and nothing else); loading this library rebuilds it in place as ours.
// No memory is ever touched: every tensor on this device is a FakeTensor.
#include <ATen/detail/CUDAHooksInterface.h>
#include <c10/core/impl/DeviceGuardImplInterface.h>

#include <new>

namespace {
using namespace c10;

thread_local StreamId current_stream = 0;

Device cuda0() { return Device(DeviceType::CUDA, 0); }

struct FakeCudaGuard final : public c10::impl::DeviceGuardImplInterface {
  DeviceType type() const override { return DeviceType::CUDA; }
  Device exchangeDevice(Device) const override { return cuda0(); }
  Device getDevice() const override { return cuda0(); }
  void setDevice(Device) const override {}
  void uncheckedSetDevice(Device) const noexcept override {}
  Stream getStream(Device) const noexcept override { return Stream(Stream::UNSAFE, cuda0(), current_stream); }
  Stream getDefaultStream(Device) const override { return Stream(Stream::UNSAFE, cuda0(), 0); }
  Stream exchangeStream(Stream s) const noexcept override {
    auto old = current_stream;
    current_stream = s.id();
    return Stream(Stream::UNSAFE, cuda0(), old);
  }
  DeviceIndex deviceCount() const noexcept override { return 1; }
  void record(void**, const Stream&, const DeviceIndex, const EventFlag) const override {}
  void block(void*, const Stream&) const override {}
  bool queryEvent(void*) const override { return true; }
  void destroyEvent(void*, const DeviceIndex) const noexcept override {}
  bool queryStream(const Stream&) const override { return true; }
  void synchronizeStream(const Stream&) const override {}
  void synchronizeEvent(void*) const override {}
  void synchronizeDevice(const DeviceIndex) const override {}
  void recordDataPtrOnStream(const c10::DataPtr&, const Stream&) const override {}
};

struct FakeCudaHooks final : public at::CUDAHooksInterface {
  explicit FakeCudaHooks(at::CUDAHooksArgs) {}
  bool isBuilt() const override { return true; }
  bool isAvailable() const override { return true; }
  bool hasCUDA() const override { return true; }
  bool hasPrimaryContext(DeviceIndex) const override { return true; }
  bool isPinnedPtr(const void*) const override { return false; }
  DeviceIndex deviceCount() const override { return 1; }
  DeviceIndex getCurrentDevice() const override { return 0; }
};
static_assert(sizeof(FakeCudaHooks) == sizeof(at::CUDAHooksInterface), "hooks are rebuilt in place");

const bool hooks_installed = [] {
  auto* hooks = const_cast<at::CUDAHooksInterface*>(&at::detail::getCUDAHooks());
  if (!hooks->isBuilt()) {
    new (hooks) FakeCudaHooks(at::CUDAHooksArgs{});
  }
  return true;
}();
}  // namespace

C10_REGISTER_GUARD_IMPL(CUDA, FakeCudaGuard);