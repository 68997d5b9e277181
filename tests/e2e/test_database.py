"""The stack's MongoDB-compatible server answers filters as MongoDB does.

deploy/deps.sh builds FerretDB with deploy/ferretdb/sqlite-lookups.patch: `_id` lookups
(one id or an `$in` of ids) on the `_id` index, the equalities that lead an index looked up
in it, and the filter's other top-level string and boolean equalities tried in SQLite before
FerretDB decodes a document (deploy/ferretdb/README.md). A pre-filter that dropped one
matching document would lose data silently, so these are the shapes it must keep: arrays that
contain the value (at any position of an index), strings that JSON escapes, booleans against
numbers, ObjectId and string `_id` beside another field, updates and deletes through the same
filters. The index lookups are checked in the server's own query plan (explain).
"""

import uuid

import pymongo
from bson import ObjectId

from conftest import MONGO_URI

SPECIAL = '<&>"\u00e9\\u0041\u2028\U0001F600'  # HTML-escaped by Go's JSON, quotes, U+2028, astral


def test_equality_filters_match_what_mongodb_matches():
    client = pymongo.MongoClient(MONGO_URI)
    db = client[f"e2e_database_{uuid.uuid4().hex[:8]}"]
    coll = db["docs"]
    oid = ObjectId()
    try:
        coll.insert_many([
            {"_id": "a", "tenant": "t1", "k": "v", "flag": True},
            {"_id": "b", "tenant": "t1", "k": ["x", "v"], "flag": False},
            {"_id": "c", "tenant": "t2", "k": SPECIAL, "flag": 1},
            {"_id": "d", "tenant": "t1", "k": {"v": 1}, "flag": 0},
            {"_id": "e", "tenant": "t1"},
            {"_id": "f", "tenant": "t1", "k": 5, "flag": [True]},
            {"_id": oid, "tenant": "t1", "k": "v"},
            {"_id": "g", "tenant": "t1", "k": "V"},
        ])

        def ids(f):
            return sorted(str(d["_id"]) for d in coll.find(f))

        assert ids({"k": "v"}) == sorted(["a", "b", str(oid)])  # the array that contains it too
        assert ids({"tenant": "t1", "k": "v"}) == sorted(["a", "b", str(oid)])
        assert ids({"k": SPECIAL}) == ["c"]
        assert ids({"flag": True}) == ["a", "f"]  # not the number 1; the array [true] yes
        assert ids({"flag": False}) == ["b"]  # not the number 0
        assert ids({"k": 5}) == ["f"]
        assert ids({"nothing": "v"}) == []
        assert ids({"_id": "a", "tenant": "t1"}) == ["a"]
        assert ids({"_id": "c", "tenant": "t1"}) == []  # another tenant's id reads as missing
        assert ids({"_id": oid, "tenant": "t1"}) == [str(oid)]
        assert ids({"_id": "a", "k": "v", "flag": True}) == ["a"]
        # Updates and deletes select through the same query.
        assert coll.update_many({"tenant": "t1", "k": "v"}, {"$set": {"seen": True}}).matched_count == 3
        assert ids({"seen": True}) == sorted(["a", "b", str(oid)])
        assert coll.update_one({"_id": "c", "tenant": "t1"}, {"$set": {"seen": True}}).matched_count == 0
        assert coll.delete_many({"tenant": "t1", "flag": False}).deleted_count == 1
        assert coll.count_documents({"tenant": "t1"}) == 6
    finally:
        client.drop_database(db.name)


def plan(coll, f):
    """The SQLite query plan FerretDB reports for a find, one string (FerretDB only)."""
    return " ".join(coll.database.command("explain", {"find": coll.name, "filter": f})
                    ["queryPlanner"]["Plan"])


def test_index_lookups_keep_every_match():
    client = pymongo.MongoClient(MONGO_URI)
    db = client[f"e2e_database_{uuid.uuid4().hex[:8]}"]
    coll = db["members"]
    oid, ref = ObjectId(), ObjectId()
    try:
        coll.create_index([("tenant", 1), ("user_id", 1), ("state", 1)], name="by_user")
        coll.create_index([("published", 1), ("created_at", -1)], name="outbox")
        coll.insert_many([
            {"_id": "a", "tenant": "t1", "user_id": "u1", "state": "active", "published": False},
            {"_id": "b", "tenant": ["t0", "t1"], "user_id": "u1", "state": "active"},
            {"_id": "c", "tenant": "t1", "user_id": ["u1", "u2"], "state": "active"},
            {"_id": "d", "tenant": "t1", "user_id": "u1", "state": ["left", "active"]},
            {"_id": "e", "tenant": "t1", "user_id": "u1", "state": "left", "published": True},
            {"_id": "f", "tenant": "t2", "user_id": "u1", "state": "active", "published": [False]},
            {"_id": "g", "tenant": "t1", "user_id": "U1", "state": "active", "published": 0},
            {"_id": "h", "tenant": "t1", "user_id": SPECIAL, "state": "active"},
            {"_id": "i", "tenant": "t1", "user_id": {"u1": 1}, "state": "active"},
            {"_id": oid, "tenant": "t1", "user_id": "u1", "state": "active", "ref": ref},
            {"_id": "j", "tenant": "t1", "user_id": "u1", "state": "active", "ref": str(ref)},
            {"_id": "k", "tenant": "t1", "user_id": 7, "state": "active"},
        ])

        def ids(f):
            return sorted(str(d["_id"]) for d in coll.find(f))

        member = {"tenant": "t1", "user_id": "u1", "state": "active"}
        assert ids(member) == sorted(["a", "b", "c", "d", "j", str(oid)])
        assert ids({"tenant": "t1", "user_id": "u1"}) == sorted(["a", "b", "c", "d", "e", "j", str(oid)])
        assert ids({"tenant": "t1", "user_id": SPECIAL}) == ["h"]  # escaped: the other form
        assert ids({"tenant": "t1", "user_id": 7}) == ["k"]  # a number: not an index lookup
        assert ids({"published": False}) == ["a", "f"]  # the array yes, the number 0 no
        assert ids({"published": True}) == ["e"]
        assert ids(dict(member, ref=str(ref))) == ["j"]  # not the ObjectId of the same hex
        assert ids(dict(member, ref=ref)) == [str(oid)]
        assert ids({"_id": {"$in": ["a", "e", "zz", oid]}}) == sorted(["a", "e", str(oid)])
        assert ids({"_id": {"$in": ["a", "f", oid]}, "tenant": "t1"}) == sorted(["a", str(oid)])
        assert ids({"_id": {"$in": ["a", 7]}}) == ["a"]  # a number among them: no lookup
        assert ids({"_id": {"$in": []}}) == []
        assert ids({"_id": {"$nin": ["a"]}, "tenant": "t2"}) == ["f"]

        if "ferretdbVersion" in client.admin.command("buildInfo"):
            assert "USING INDEX" in plan(coll, member) and "SCAN" not in plan(coll, member)
            assert "USING INDEX" in plan(coll, {"published": False})
            assert "USING INDEX" in plan(coll, {"_id": {"$in": ["a", "e"]}, "tenant": "t1"})
            assert "SCAN" in plan(coll, {"user_id": "u1"})  # leads no index

        assert coll.update_many(member, {"$set": {"seen": True}}).matched_count == 6
        assert ids({"seen": True}) == sorted(["a", "b", "c", "d", "j", str(oid)])
        assert coll.delete_many({"published": False}).deleted_count == 2
        assert coll.delete_many({"_id": {"$in": ["b", "c", "nope"]}}).deleted_count == 2
        assert ids({"tenant": "t1"}) == sorted(["d", "e", "g", "h", "i", "j", "k", str(oid)])
    finally:
        client.drop_database(db.name)
