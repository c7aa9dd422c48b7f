"""Celery peer of `bench compare`: enqueue and run N no-op tasks on the local
RabbitMQ and print one JSON object.

Same guarantees as far as Celery offers them: publisher confirms on every
enqueue (`confirm_publish`; `--no-confirm` gives Celery's default, no
confirms), persistent messages, a quorum queue, no result backend. The
queue and its exchange have a unique `stevedore-bench-celery-…` name on the
default vhost and are deleted afterwards, as is the delayed delivery topology
Celery declares for quorum queues (`celery_delayed_*`), unless it existed
before the run.

Completions are counted by a worker-side counter: each task appends one byte
to a file (O_APPEND, atomic across the worker's processes) and the driver
polls the file's size. A warm-up task runs first, so the clock starts with a
worker that is up and consuming. Tasks are enqueued by one producer while the
worker runs; completed/s is N over the time from the first enqueue to the
N-th completion.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid

import celery
from celery import Celery
from kombu import Exchange, Queue

BROKER = os.environ.get("BENCH_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672//")
QUEUE = os.environ.get("BENCH_CELERY_QUEUE") or f"stevedore-bench-celery-{uuid.uuid4().hex[:12]}"
COUNTER = os.environ.get("BENCH_CELERY_COUNTER", "")

exchange = Exchange(QUEUE, type="direct")
queue = Queue(QUEUE, exchange, routing_key=QUEUE, queue_arguments={"x-queue-type": "quorum"})

app = Celery("celery_noop", broker=BROKER)
app.conf.update(
    task_ignore_result=True,
    result_backend=None,
    task_default_queue=QUEUE,
    task_default_exchange=QUEUE,
    task_default_routing_key=QUEUE,
    task_queues=[queue],
    task_create_missing_queues=False,
    worker_enable_remote_control=False,
    worker_send_task_events=False,
    worker_hijack_root_logger=False,
    broker_connection_retry_on_startup=True,
)

_fd = None


@app.task(ignore_result=True)
def noop():
    """Does nothing but count itself."""
    global _fd
    if _fd is None:
        _fd = os.open(COUNTER, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    os.write(_fd, b".")


# Celery declares native delayed delivery topology (shared names, no prefix)
# when it finds a quorum queue: removed afterwards if this run created it.
DELAYED_LEVELS = 28
DELAYED_DELIVERY_EXCHANGE = "celery_delayed_delivery"


def exchange_exists(conn, name):
    ch = conn.channel()
    try:
        ch.exchange_declare(exchange=name, type="topic", passive=True)
        return True
    except Exception:
        return False
    finally:
        try:
            ch.close()
        except Exception:
            pass


def delete_delayed_delivery_topology(conn):
    ch = conn.channel()
    for level in range(DELAYED_LEVELS):
        ch.queue_delete(queue=f"celery_delayed_{level}")
        ch.exchange_delete(exchange=f"celery_delayed_{level}")
    ch.exchange_delete(exchange=DELAYED_DELIVERY_EXCHANGE)
    ch.close()


def completed(path):
    try:
        return os.path.getsize(path)
    except FileNotFoundError:
        return 0


def wait_for(path, n, timeout):
    deadline = time.monotonic() + timeout
    while completed(path) < n:
        if time.monotonic() > deadline:
            raise SystemExit(f"only {completed(path)} of {n} tasks completed in {timeout}s")
        time.sleep(0.002)
    return time.monotonic()


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tasks", type=int, default=10000)
    p.add_argument("--concurrency", type=int, default=2, help="worker processes (prefork pool)")
    p.add_argument("--timeout", type=float, default=600)
    p.add_argument("--confirm", action=argparse.BooleanOptionalAction, default=True,
                   help="wait for a publisher confirm on every enqueue (default: yes)")
    args = p.parse_args()
    app.conf.broker_transport_options = {"confirm_publish": args.confirm}

    with app.connection_for_write() as conn:
        owns_delayed = not exchange_exists(conn, DELAYED_DELIVERY_EXCHANGE)
    tmp = tempfile.mkdtemp(prefix="stevedore-bench-celery-")
    counter = os.path.join(tmp, "completed")
    env = dict(os.environ, BENCH_CELERY_QUEUE=QUEUE, BENCH_CELERY_COUNTER=counter)
    worker = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "celery_noop", "worker", "-Q", QUEUE,
         "-c", str(args.concurrency), "-P", "prefork", "--without-gossip", "--without-mingle",
         "--without-heartbeat", "-l", "WARNING"],
        env=env, cwd=os.path.dirname(os.path.abspath(__file__)), stdout=sys.stderr,
    )
    try:
        with app.connection_for_write() as conn:
            queue(conn.default_channel).declare()
        noop.delay()
        wait_for(counter, 1, 120)
        print(f"celery worker up; enqueueing {args.tasks} tasks on {QUEUE}", file=sys.stderr)
        start = time.monotonic()
        for _ in range(args.tasks):
            noop.delay()
        enqueued = time.monotonic()
        done = wait_for(counter, args.tasks + 1, args.timeout)
    finally:
        worker.terminate()
        try:
            worker.wait(30)
        except subprocess.TimeoutExpired:
            worker.kill()
        with app.connection_for_write() as conn:
            ch = conn.default_channel
            queue(ch).delete()
            exchange(ch).delete()
            if owns_delayed:
                delete_delayed_delivery_topology(conn)
        for f in os.listdir(tmp):
            os.remove(os.path.join(tmp, f))
        os.rmdir(tmp)

    print(json.dumps({
        "peer": "celery",
        "celery_version": celery.__version__,
        "tasks": args.tasks,
        "concurrency": args.concurrency,
        "publisher_confirms": args.confirm,
        "enqueue_seconds": enqueued - start,
        "enqueued_per_sec": args.tasks / (enqueued - start),
        "seconds": done - start,
        "completed_per_sec": args.tasks / (done - start),
        "completions_counted_by": "worker-side counter (one byte appended per task; driver polls the size)",
    }))


if __name__ == "__main__":
    main()
