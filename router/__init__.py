"""hybrid-router: a cloud-edge hybrid LLM router."""
import os

# gRPC's fork support (on by default in grpcio's core) restarts its poller in a forked child, and since
# grpcio 1.80 that child can abort before it execs (epoll_wait: Bad file descriptor; grpc/grpc#43055). This
# project forks only to exec (the stand-in, a daemon in a child process), so the support is never needed.
# It must be set before grpc is first imported, which any import of this package precedes; an explicit
# setting in the environment is kept.
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")
