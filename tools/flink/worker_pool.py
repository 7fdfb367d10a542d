"""A Beam worker pool for `--environment_type=EXTERNAL` that several TaskManagers share
(tools/flink/cluster.py starts it), and the boot of each SDK worker it starts.

    python -m tools.flink.worker_pool serve --port N --root DIR
    python -m tools.flink.worker_pool boot --id ID --provision_endpoint ... (the pool runs it)

Why not Beam's own `worker_pool_main`: (1) it keeps its workers by worker id, and a
worker id is only unique within one runner process (every TaskManager numbers its
workers 1-1, 2-1, ...), so a StopWorker from one TaskManager killed another's worker
mid-job; here a worker is known by the caller's connection and its id. (2) It starts a
bare SDK harness without the job's pipeline options (no state cache size, no log
level); `boot` does what Beam's boot program does in the SDK container: it reads the
options from the runner's provision service and runs `sdk_worker_main` with them. It
installs no artifacts: the workers run in this interpreter's environment, where the
project is installed (as it would be in a custom SDK image).
"""

from __future__ import annotations

import argparse
import logging
import os
import subprocess
import sys
import tempfile
import threading
import time

_LOG = logging.getLogger(__name__)


def serve(port, root):
    from concurrent import futures

    import grpc

    from apache_beam.portability.api import beam_fn_api_pb2, beam_fn_api_pb2_grpc
    from apache_beam.runners.worker.worker_pool_main import kill_process_gracefully

    class Pool(beam_fn_api_pb2_grpc.BeamFnExternalWorkerPoolServicer):
        def __init__(self):
            self.workers = {}  # (caller, worker id) -> Popen
            self.lock = threading.Lock()

        def StartWorker(self, request, context):  # noqa: N802 - gRPC's name
            command = [sys.executable, "-m", "tools.flink.worker_pool", "boot",
                       f"--root={root}", f"--id={request.worker_id}",
                       f"--provision_endpoint={request.provision_endpoint.url}",
                       f"--control_endpoint={request.control_endpoint.url}",
                       f"--logging_endpoint={request.logging_endpoint.url}"]
            try:
                process = subprocess.Popen(command, stdin=subprocess.DEVNULL, close_fds=True)
            except OSError as err:
                return beam_fn_api_pb2.StartWorkerResponse(error=f"cannot start: {err}")
            with self.lock:
                self.workers[(context.peer(), request.worker_id)] = process
                # forget workers that ended by themselves (their runner went away)
                for key in [k for k, p in self.workers.items() if p.poll() is not None]:
                    del self.workers[key]
            _LOG.info("started worker %s for %s: pid %d", request.worker_id,
                      context.peer(), process.pid)
            return beam_fn_api_pb2.StartWorkerResponse()

        def StopWorker(self, request, context):  # noqa: N802 - gRPC's name
            with self.lock:
                process = self.workers.pop((context.peer(), request.worker_id), None)
            if process is not None:
                _LOG.info("stopping worker %s for %s", request.worker_id, context.peer())
                kill_process_gracefully(process)
            return beam_fn_api_pb2.StopWorkerResponse()

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=16))
    beam_fn_api_pb2_grpc.add_BeamFnExternalWorkerPoolServicer_to_server(Pool(), server)
    server.add_insecure_port(f"localhost:{port}")  # every address localhost has
    server.start()
    _LOG.info("worker pool listening on localhost:%d", port)
    while True:
        time.sleep(3600)


def boot(args):
    import grpc
    from google.protobuf import json_format, text_format

    from apache_beam.portability.api import (beam_provision_api_pb2,
                                             beam_provision_api_pb2_grpc, endpoints_pb2)
    with grpc.insecure_channel(args.provision_endpoint) as channel:
        info = beam_provision_api_pb2_grpc.ProvisionServiceStub(channel).GetProvisionInfo(
            beam_provision_api_pb2.GetProvisionInfoRequest(),
            metadata=[("worker_id", args.id)], timeout=60).info

    def descriptor(provided, fallback):
        return text_format.MessageToString(
            provided if provided.url else endpoints_pb2.ApiServiceDescriptor(url=fallback))

    env = dict(os.environ)
    env.update({
        "WORKER_ID": args.id,
        "PIPELINE_OPTIONS": json_format.MessageToJson(info.pipeline_options),
        "CONTROL_API_SERVICE_DESCRIPTOR": descriptor(info.control_endpoint,
                                                     args.control_endpoint),
        "RUNNER_CAPABILITIES": " ".join(info.runner_capabilities),
        "SEMI_PERSISTENT_DIRECTORY": tempfile.mkdtemp(prefix=f"worker-{args.id}-",
                                                      dir=args.root),
    })
    if info.logging_endpoint.url or args.logging_endpoint:
        env["LOGGING_API_SERVICE_DESCRIPTOR"] = descriptor(info.logging_endpoint,
                                                           args.logging_endpoint)
    if info.status_endpoint.url:
        env["STATUS_API_SERVICE_DESCRIPTOR"] = text_format.MessageToString(
            info.status_endpoint)
    # the worker's own output (its logs also go to the runner's log through the
    # logging endpoint)
    log = os.open(os.path.join(env["SEMI_PERSISTENT_DIRECTORY"], "worker.log"),
                  os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(log, 1)
    os.dup2(log, 2)
    os.execve(sys.executable, [sys.executable, "-m",
                               "apache_beam.runners.worker.sdk_worker_main"], env)


def main(argv):
    parser = argparse.ArgumentParser(prog="python -m tools.flink.worker_pool")
    commands = parser.add_subparsers(dest="command", required=True)
    server = commands.add_parser("serve")
    server.add_argument("--port", type=int, required=True)
    server.add_argument("--root", default=tempfile.gettempdir())
    worker = commands.add_parser("boot")
    worker.add_argument("--root", default=tempfile.gettempdir())
    for name in ("id", "provision_endpoint", "control_endpoint", "logging_endpoint"):
        worker.add_argument(f"--{name}", required=name != "logging_endpoint")
    args = parser.parse_args(argv)
    if args.command == "serve":
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
        serve(args.port, args.root)
    else:
        boot(args)


if __name__ == "__main__":
    main(sys.argv[1:])
