// Small socket helpers.
#pragma once

namespace blackbox {

// A UDP port on 127.0.0.1 that nobody uses right now (the kernel picks it),
// for a QEMU `-netdev socket,udp=` pair; -1 if none could be had. Another
// process may take it before the caller binds it.
int FreeLoopbackUdpPort();

}  // namespace blackbox
