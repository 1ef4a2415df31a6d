"""This process's part in a multi-worker run, read from TF_CONFIG without TensorFlow, so
that a bad TF_CONFIG answers in one line before any slow work."""

import json
import os
import socket
from dataclasses import dataclass

from common.cli import UserError


@dataclass(frozen=True)
class ClusterRole:
    is_chief: bool
    worker: int  # this task's index among its type (0 on one machine)
    workers: int  # chief and workers together (1 on one machine)


SINGLE_PROCESS = ClusterRole(is_chief=True, worker=0, workers=1)


def cluster_role(distribute: str) -> ClusterRole:
    """The role TF_CONFIG gives this process under --distribute multi-worker (the chief is
    the "chief" task, or worker 0 when there is none); one process under anything else."""
    if distribute != "multi-worker":
        return SINGLE_PROCESS
    text = os.environ.get("TF_CONFIG", "")
    if not text:
        raise UserError("--distribute multi-worker needs the TF_CONFIG environment variable")
    try:
        tf_config = json.loads(text)
        cluster, task = tf_config["cluster"], tf_config["task"]
        task_type, index = task["type"], int(task["index"])
        members = len(cluster[task_type])
        workers = sum(len(cluster.get(kind, [])) for kind in ("chief", "worker"))
    except (ValueError, KeyError, TypeError, AttributeError) as error:
        raise UserError(f"TF_CONFIG: not a cluster and task description ({error!r})") from None
    if task_type not in ("chief", "worker"):
        raise UserError(f"TF_CONFIG: task type {task_type!r}; training runs chief and worker")
    if not 0 <= index < members:
        raise UserError(f"TF_CONFIG: task index {index} outside its {members} {task_type}(s)")
    is_chief = task_type == "chief" or (index == 0 and "chief" not in cluster)
    return ClusterRole(is_chief, index, workers)


def loopback_tf_configs(count: int) -> list[str]:
    """TF_CONFIG values for `count` workers on 127.0.0.1 (tests and benchmarks), each on a
    port the system just handed out; worker 0 is the chief."""
    ports = []
    for _ in range(count):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            ports.append(probe.getsockname()[1])
    cluster = {"worker": [f"127.0.0.1:{port}" for port in ports]}
    return [
        json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})
        for index in range(count)
    ]
