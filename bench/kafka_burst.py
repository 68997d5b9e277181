"""The fan-out's feed alone, for choosing Kafka settings (bench/README.md, socket section): N
(20000) records of SIZE (900) bytes, built beforehand, produced at once from core 1 (librdkafka
settings PCONF over the socket bench's generator's: idempotent, acks=all, linger.ms 0, Nagle
off) and consumed on core 0 (CCONF), as the socket bench's rooms-of-5 run feeds our socket
service; prints records/s from the first produce() to the last record consumed, and how long
the produce() calls took. RUNS (3) bursts, each on a fresh topic. A direction tool:
BENCH_KAFKA picks the broker (the shared 9092 by default).

  PCONF='{"linger.ms":5}' BENCH_KAFKA=127.0.0.1:23290 .local/venv/bin/python bench/kafka_burst.py
"""
import json, os, time, secrets, multiprocessing as mp
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient, NewTopic
KAFKA = os.environ.get("BENCH_KAFKA", "127.0.0.1:9092")


def cons(topic, cconf, n, out, ready):
    os.sched_setaffinity(0, {0})
    c = Consumer({"bootstrap.servers": KAFKA, "group.id": topic, "auto.offset.reset": "earliest",
                  "enable.auto.commit": False, **cconf})
    c.subscribe([topic])
    got = 0
    while not c.assignment():
        c.poll(0.1)
    ready.set()
    while got < n:
        for m in c.consume(1000, 0.2):
            if not m.error() and m.value() != b"warm":
                got += 1
    out.put(time.time())
    c.close()


def cpu_s(pid):
    """CPU seconds (user + system, every thread) process `pid` has used so far."""
    f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")


def main():
    broker = int(os.environ.get("BROKER_PID", "0"))  # its CPU per burst is printed when given
    n = int(os.environ.get("N", "20000")); size = int(os.environ.get("SIZE", "900"))
    pconf = json.loads(os.environ.get("PCONF", "{}")); cconf = json.loads(os.environ.get("CCONF", "{}"))
    os.sched_setaffinity(0, {1})
    admin = AdminClient({"bootstrap.servers": KAFKA})
    rates = []
    for _ in range(int(os.environ.get("RUNS", "3"))):
        topic = "bench-burst-" + secrets.token_hex(4)
        for f in admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)]).values():
            f.result()
        ctx = mp.get_context("spawn"); out, ready = ctx.Queue(), ctx.Event()
        p = ctx.Process(target=cons, args=(topic, cconf, n, out, ready)); p.start()
        prod = Producer({"bootstrap.servers": KAFKA, "enable.idempotence": True, "acks": "all",
                         "linger.ms": 0, "socket.nagle.disable": True, **pconf})
        recs = [(b"x" * size, f"conv-{i % 200:04d}".encode()) for i in range(n)]
        try:
            ready.wait(60)
            prod.produce(topic, b"warm"); prod.flush(10); time.sleep(0.5)
            t0 = time.time()
            c0, b0 = cpu_s(os.getpid()), cpu_s(broker) if broker else 0.0
            if os.environ.get("BATCH"):
                msgs = [{"value": v, "key": k} for v, k in recs]
                for i in range(0, n, 100):
                    prod.produce_batch(topic, msgs[i:i + 100])
                    prod.poll(0)
            else:
                for i in range(0, n, 100):
                    for v, k in recs[i:i + 100]:
                        prod.produce(topic, v, key=k)
                    prod.poll(0)
            t1 = time.time()
            prod.flush(60)
            t3 = time.time()
            c1, b1 = cpu_s(os.getpid()), cpu_s(broker) if broker else 0.0
            t2 = out.get(timeout=120)
        finally:
            p.join(30); admin.delete_topics([topic])
        rates.append(n / (t2 - t0))
        print(f"burst of {n} x {size} B P={pconf} C={cconf}: {n / (t2 - t0):,.0f} records/s "
              f"({(t2 - t0) * 1000:.0f} ms; produce() calls {(t1 - t0) * 1000:.0f} ms, all acked {(t3 - t0) * 1000:.0f} ms; CPU us/record: producer {(c1 - c0) * 1e6 / n:.1f}, broker {(b1 - b0) * 1e6 / n:.1f}); load {os.getloadavg()[0]:.1f}",
              flush=True)
    print(f"median {sorted(rates)[len(rates) // 2]:,.0f} records/s")


if __name__ == "__main__":
    main()
