"""The local stack's MongoDB-compatible server keeps MongoDB's per-document atomicity.

The services rely on it across processes: the media service's reference counts ($inc), job
claims and single-use tokens (findAndModify with a condition), the outbox marking an event
published while housekeeping rewrites it. FerretDB 1.x reads, modifies and writes a document
back without a transaction (its issue #3040), so two writers lost updates (55 of 300 racing
$inc pairs, measured); deploy/ferretdb/atomic-updates.patch, applied by deploy/deps.sh, makes
update and findAndModify atomic per document again."""
import threading

import pymongo
from conftest import DB_SUFFIX, MONGO_URI

N = 100


def race(op):
    """Two clients (two connections, as two processes would be) apply `op` to each of N
    documents at the same time; returns the documents afterwards."""
    coll = pymongo.MongoClient(MONGO_URI)[f"test_stack_{DB_SUFFIX}"]["race"]
    coll.drop()
    coll.insert_many([{"_id": k, "n": 0, "a": 0, "b": 0, "owner": None} for k in range(N)])

    def writer(name):
        mine = pymongo.MongoClient(MONGO_URI)[f"test_stack_{DB_SUFFIX}"]["race"]
        for k in range(N):
            op(mine, k, name)
    threads = [threading.Thread(target=writer, args=(name,)) for name in ("a", "b")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    docs = list(coll.find())
    coll.database.client.drop_database(coll.database.name)
    return docs


def test_concurrent_increments_all_count():
    docs = race(lambda c, k, _: c.update_one({"_id": k}, {"$inc": {"n": 1}}))
    assert [d["_id"] for d in docs if d["n"] != 2] == []


def test_concurrent_sets_of_different_fields_both_stay():
    docs = race(lambda c, k, name: c.update_many({"_id": {"$in": [k]}}, {"$set": {name: 1}}))
    assert [d["_id"] for d in docs if (d["a"], d["b"]) != (1, 1)] == []


def test_a_conditional_claim_has_one_winner():
    wins = {"a": 0, "b": 0}

    def claim(c, k, name):
        if c.find_one_and_update({"_id": k, "owner": None}, {"$set": {"owner": name}}) is not None:
            wins[name] += 1
    docs = race(claim)
    assert wins["a"] + wins["b"] == N, wins
    assert sum(1 for d in docs if d["owner"] in ("a", "b")) == N
