"""The stack's MongoDB-compatible server answers filters as MongoDB does.

deploy/deps.sh builds FerretDB with deploy/ferretdb/sqlite-lookups.patch: `_id` lookups on
the `_id` index, and a filter's top-level string and boolean equalities tried in SQLite
before FerretDB decodes a document (deploy/ferretdb/README.md). A pre-filter that dropped one
matching document would lose data silently, so these are the shapes it must keep: arrays that
contain the value, strings that JSON escapes, booleans against numbers, ObjectId and string
`_id` beside another field, updates and deletes through the same filters.
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
