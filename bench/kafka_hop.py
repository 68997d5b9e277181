"""The Kafka hop alone, for choosing client settings (bench/README.md, socket section): RATE
(3500) records/s for SECS (5) seconds, after 2 unmeasured seconds, produced from core 1 with
librdkafka settings PCONF and consumed on core 0 with CCONF (JSON objects, added to an
idempotent acks=all producer and a plain consumer). Prints the hop's p50/p99/p99.9 (the
publish time each record carries to its receipt), the producer's produce -> broker ack, and
the records slower than 8 ms by publish second. A direction tool (one run is noise on a shared
machine: alternate the settings compared, several runs each); the shared Kafka on 9092, or
BENCH_KAFKA (host:port, e.g. bench/kafka_broker.sh's).

  RATE=6262 PCONF='{"linger.ms":5}' .local/venv/bin/python bench/kafka_hop.py
"""
import json, os, sys, time, secrets, multiprocessing as mp
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient, NewTopic
KAFKA = os.environ.get("BENCH_KAFKA", "127.0.0.1:9092")

def pct(xs, q):
    xs = sorted(xs); return xs[min(len(xs) - 1, int(q * len(xs)))] if xs else float("nan")

def cons(topic, cconf, out, ready):
    os.sched_setaffinity(0, {0})
    c = Consumer({"bootstrap.servers": KAFKA, "group.id": topic, "auto.offset.reset": "earliest",
                  "enable.auto.commit": False, **cconf})
    c.subscribe([topic]); lat = []; ts = []
    while True:
        m = c.poll(0.2)
        if m is None:
            if c.assignment(): ready.set()
            continue
        if m.error(): continue
        v = m.value()
        if v == b"end": break
        if v != b"warm":
            now = time.time() * 1000
            lat.append(now - float(v)); ts.append(float(v))
    c.close(); out.put((lat, ts))

def main():
    rate = float(os.environ.get("RATE", "3500")); secs = float(os.environ.get("SECS", "5"))
    pconf = json.loads(os.environ.get("PCONF", "{}")); cconf = json.loads(os.environ.get("CCONF", "{}"))
    os.sched_setaffinity(0, {1})
    topic = "bench-hop-" + secrets.token_hex(4)
    admin = AdminClient({"bootstrap.servers": KAFKA})
    for f in admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)]).values(): f.result()
    ctx = mp.get_context("spawn"); out, ready = ctx.Queue(), ctx.Event()
    p = ctx.Process(target=cons, args=(topic, cconf, out, ready)); p.start()
    prod = Producer({"bootstrap.servers": KAFKA, "enable.idempotence": True, "acks": "all", **pconf})
    acks = []
    try:
        while not ready.is_set():
            prod.produce(topic, b"warm"); prod.poll(0.1)
        # 2 s warm at rate
        for phase in ("warm", "run"):
            n, sent, t0 = int(rate * (2 if phase == "warm" else secs)), 0, time.time()
            while sent < n:
                due = min(n, int((time.time() - t0) * rate) + 1)
                while sent < due:
                    if phase == "warm":
                        prod.produce(topic, b"warm")
                    else:
                        prod.produce(topic, f"{time.time() * 1000:.3f}".encode(),
                                     on_delivery=lambda err, m: err is None and m.latency() is not None and acks.append(m.latency() * 1000))
                    sent += 1
                prod.poll(0)
                time.sleep(0.001)
        prod.produce(topic, b"end"); prod.flush(30)
        lat, ts = out.get(timeout=120)
    finally:
        p.join(30); admin.delete_topics([topic])
    slow = sorted({round(t / 1000, 1): round(l, 1) for l, t in zip(lat, ts) if l > 8}.items())[:40]
    print(f"rate {rate:.0f} P={pconf} C={cconf}: hop p50 {pct(lat,.5):.2f} p99 {pct(lat,.99):.2f} p999 {pct(lat,.999):.2f} max {max(lat):.1f}; ack p50 {pct(acks,.5):.2f} p99 {pct(acks,.99):.2f}; load {os.getloadavg()[0]:.1f}; slow (publish second: ms) {slow}", flush=True)

if __name__ == "__main__":
    main()
