#pragma once
// rmnet: stand-in for Gloo's header (see README.md); devices and buffers are held by pointer.
namespace gloo::transport {
class Device;
class UnboundBuffer;
}  // namespace gloo::transport
