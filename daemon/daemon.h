// The appliance daemon: one long-running process per host (per data
// directory) that owns the store as its single writer, the host's switch
// (VmHost) and every VM it runs, each VM its own recording with its own start
// and stop. Operators control it through a local API on a unix socket
// (daemon/api_server.h, routes in docs/daemon-api.md); `blackbox vm ...` is
// its client. Reading commands (ls, show, console, flows, alerts, verify,
// export, replay) open the store read-only beside it.
//
// Made to run under systemd (ansible/files/blackbox.service): it stays in the
// foreground, logs to stderr, reports READY=1 once its socket listens and the
// VMs marked to start with it are started, and on SIGTERM or SIGINT stops
// every VM cleanly (each recording finalised) before it exits.
//
// Data directory layout it adds (docs/daemon-api.md, "Files"):
//   <data>/run/             the control socket and the switch's port sockets;
//                           removed and recreated at every start
//   <data>/daemon/vms.json  the VMs marked to start with the daemon
// After a crash (kill -9: its QEMUs die with it) the next start marks the
// recordings and the capture it left "recording" as interrupted (each still
// verifies for its stored prefix) and starts the marked VMs again as new
// recordings.
#pragma once

#include <string>

#include "recorder/recorder.h"

namespace blackbox {

struct DaemonOptions {
  std::string data_dir;
  // The control socket; "": DefaultSocketPath(data_dir).
  std::string socket_path;
  // Group allowed to use the control socket (and to enter <data>/run);
  // "": only the daemon's own user (and root).
  std::string group;
  // Template for every VM's recorder (qemu, sandbox, chunker, snapshots);
  // data_dir is set from data_dir.
  RecorderOptions recorder;
  bool sync_writes = false;
};

std::string DefaultSocketPath(const std::string& data_dir);

// Runs the daemon until SIGTERM or SIGINT. Returns the process exit code
// (0 after a clean stop; 2 bad options; 3 the store or socket failed).
int RunDaemon(DaemonOptions options);

}  // namespace blackbox
