"""Helpers for the messaging tests: REST shortcuts through the gateway, and a sync client that
rebuilds a user's view of their conversations from GET /v1/sync alone, to compare with what the
REST API says the server holds."""

import json

from conftest import ROOT

import jsonschema


def ok(r, *codes):
    assert r.status_code in (codes or (200, 201)), f"{r.status_code}: {r.text}"
    return r.json() if r.content else None


def create(api, token, type_, members=(), **fields):
    return ok(api.call("POST", "/v1/conversations", token, {"type": type_, "members": list(members), **fields}), 200, 201)


def send(api, token, cid, text, **fields):
    return api.call("POST", f"/v1/conversations/{cid}/messages", token, {"text": text, **fields})


def all_pages(api, token, path, query=""):
    """Follows next_cursor from the first page to the last; returns every item in order."""
    items, cursor = [], None
    while True:
        q = query + (("&" if query else "?") + f"cursor={cursor}" if cursor else "")
        r = api.call("GET", path + q, token)
        assert r.status_code == 200, r.text
        items += r.json()["items"]
        cursor = r.json()["next_cursor"]
        if cursor is None:
            return items


def problem(r, status, detail_part=None):
    assert r.status_code == status, f"{r.status_code} (wanted {status}): {r.text}"
    assert r.headers["Content-Type"] == "application/problem+json"
    p = r.json()
    assert {"type", "title", "status", "detail", "instance", "request_id"} <= p.keys()
    if detail_part:
        assert detail_part in p["detail"], p["detail"]
    return p


def validate_event(event):
    """Validates a consumed CloudEvent against proto/events/<type>.schema.json."""
    schema = json.loads((ROOT / f"proto/events/{event['type']}.schema.json").read_text())
    jsonschema.Draft202012Validator(schema, format_checker=jsonschema.FormatChecker()).validate(
        {k: v for k, v in event.items() if k != "_key"})


# The conversation fields every member sees alike, and the caller's own.
MINE = ("role", "archived", "muted_until", "read_seq", "delivered_seq", "unread_count", "unread_mentions")


def shared(conv):
    return {k: v for k, v in conv.items() if k not in MINE and k not in ("changed", "by", "initial_members")}


class SyncClient:
    """A client that knows only what GET /v1/sync tells it (plus, after a reset, the message
    history read once through the messages list, as a real client would)."""

    def __init__(self, api, token, user):
        self.api, self.token, self.user = api, token, user
        self.cursor = None
        self.convs = {}   # cid -> {"conv", "mine", "members", "messages", "reads"}
        self.seen = {}    # cid -> last eseq applied, to check order and gap-freedom
        self.resets = []

    def sync(self, limit=100, method="GET"):
        """Pages through /v1/sync until has_more is false; returns the items applied."""
        applied = []
        while True:
            if method == "GET":
                q = f"?limit={limit}" + (f"&since={self.cursor}" if self.cursor is not None else "")
                r = self.api.call("GET", "/v1/sync" + q, self.token)
            else:
                body = {"limit": limit}
                if self.cursor is not None:
                    body["since"] = self.cursor
                r = self.api.call("POST", "/v1/sync", self.token, body)
            page = ok(r, 200)
            for item in page["items"]:
                self.apply(item)
                applied.append(item)
            self.cursor = page["next_cursor"]
            if not page["has_more"]:
                return applied

    def apply(self, item):
        cid, t, data = item["conversation_id"], item["type"], item.get("data", {})
        if t == "reset":
            self.resets.append((cid, item["reason"]))
            self.seen[cid] = item["eseq"]
            conv = data["conversation"]
            if not data["member"]:
                self.convs.pop(cid, None)
                return
            state = {"conv": shared(conv), "mine": {k: conv[k] for k in MINE},
                     "members": {m["user_id"]: m for m in data.get("members", [])},
                     "messages": {}}
            state["mine_reactions"] = set()
            for m in all_pages(self.api, self.token, f"/v1/conversations/{cid}/messages", "?limit=200"):
                for r in m.get("reactions", []):
                    if r.pop("me"):
                        state["mine_reactions"].add((m["seq"], r["emoji"]))
                state["messages"][m["seq"]] = m
            state["conv"]["member_count"] = len(state["members"])
            self.convs[cid] = state
            return
        # In log order, each entry once. Entries not for this user (another member's own
        # settings, messages they hid) are skipped by the server, so eseqs may jump; that
        # nothing was missed is what comparing the rebuilt state with the server's shows.
        assert item["eseq"] > self.seen.get(cid, 0), \
            f"out of order or repeated in {cid}: {self.seen.get(cid)} then {item['eseq']}"
        self.seen[cid] = item["eseq"]
        st = self.convs.get(cid)
        if st is None:
            return
        conv, members, msgs = st["conv"], st["members"], st["messages"]
        about = data.get("message_id") if t.startswith("reaction.") else data.get("id")
        if t.split(".")[0] in ("message", "reaction") and about in st.setdefault("hidden", set()):
            raise AssertionError(f"{t} about a message hidden for me reached me")
        if t in ("conversation.created", "conversation.updated", "conversation.deleted"):
            st["conv"] = shared(data)
        elif t == "member.added":
            # Messages sent before joining count as read (and received).
            members[data["user_id"]] = {"user_id": data["user_id"], "role": data["role"],
                                        "read_seq": conv["last_seq"], "delivered_seq": conv["last_seq"]}
        elif t == "member.removed":
            members.pop(data["user_id"], None)
            if data["user_id"] == self.user:
                del self.convs[cid]
                return
        elif t == "member.role_changed":
            members.setdefault(data["user_id"], {"user_id": data["user_id"]})["role"] = data["role"]
            if data["user_id"] == self.user:
                st["mine"]["role"] = data["role"]
        elif t == "member.updated":
            assert data["user_id"] == self.user, "another member's own settings reached me"
            st["mine"]["archived"] = data["archived"]
            st["mine"]["muted_until"] = data["muted_until"]
        elif t == "message.created":
            new = data["seq"] not in msgs  # after a reset the history read may hold it already
            msgs[data["seq"]] = data
            conv["last_seq"] = max(conv["last_seq"], data["seq"])
            conv["last_activity_at"] = data["created_at"]
            if data["sender_id"] == self.user:
                st["mine"]["read_seq"] = data["seq"]
            if data["sender_id"] in members:
                members[data["sender_id"]]["read_seq"] = data["seq"]
            if new and self.user in data.get("mentions", []) and data["sender_id"] != self.user:
                st.setdefault("mention_seqs", []).append(data["seq"])
        elif t in ("message.updated", "message.deleted", "message.pinned", "message.unpinned"):
            msgs[data["seq"]] = data
            if t == "message.deleted":
                st["mine_reactions"] = {k for k in st["mine_reactions"] if k[0] != data["seq"]}
        elif t == "message.hidden":
            msgs.pop(data["seq"], None)
            st["hidden"].add(data["message_id"])
        elif t in ("reaction.added", "reaction.removed"):
            m = msgs.get(data["seq"])
            if m is not None:
                if data["reactions"]:
                    m["reactions"] = data["reactions"]
                else:
                    m.pop("reactions", None)
            if data["user_id"] == self.user:
                key = (data["seq"], data["emoji"])
                if t == "reaction.added":
                    st["mine_reactions"].add(key)
                else:
                    st["mine_reactions"].discard(key)
        elif t == "conversation.read":
            if data["user_id"] == self.user:
                st["mine"]["read_seq"] = data["read_seq"]
                st["mine"]["delivered_seq"] = data["delivered_seq"]
            if data["user_id"] in members:
                members[data["user_id"]].update(read_seq=data["read_seq"], delivered_seq=data["delivered_seq"])
        elif t == "message.delivered":
            if data["user_id"] == self.user:
                st["mine"]["delivered_seq"] = data["delivered_seq"]
            if data["user_id"] in members:
                members[data["user_id"]]["delivered_seq"] = data["delivered_seq"]
        else:
            raise AssertionError(f"unknown sync item type {t}")
        st = self.convs.get(cid)
        if st is not None:
            # The member list is tracked whole (conversations of up to 100 members).
            st["conv"]["member_count"] = len(st["members"])
            if st["conv"].get("last_seq") and st["conv"]["last_seq"] in st["messages"]:
                st["conv"]["last_message"] = st["messages"][st["conv"]["last_seq"]]

    def view(self):
        """The client's state in the shape server_view() returns."""
        out = {}
        for cid, st in self.convs.items():
            out[cid] = {"conv": st["conv"], "role": st["mine"]["role"],
                        "archived": st["mine"]["archived"], "muted_until": st["mine"]["muted_until"],
                        "read_seq": st["mine"]["read_seq"],
                        "delivered_seq": st["mine"]["delivered_seq"],
                        "members": sorted((m["user_id"], m["role"], m["read_seq"], m["delivered_seq"])
                                          for m in st["members"].values()),
                        "messages": [self._with_me(st, st["messages"][s]) for s in sorted(st["messages"])]}
        return out

    @staticmethod
    def _with_me(st, m):
        """The message as the REST API renders it for this user: reactions with "me"."""
        if "reactions" not in m:
            return m
        m = dict(m)
        m["reactions"] = [dict(r, me=(m["seq"], r["emoji"]) in st["mine_reactions"]) for r in m["reactions"]]
        return m


def server_view(api, token, kinds=("direct", "group", "channel")):
    """What the REST API says the caller's conversations hold, in SyncClient.view()'s shape."""
    out = {}
    convs = all_pages(api, token, "/v1/conversations", "?limit=200")
    convs += all_pages(api, token, "/v1/conversations", "?archived=true&limit=200")
    for c in convs:
        if c["type"] not in kinds:
            continue
        cid = c["id"]
        members = all_pages(api, token, f"/v1/conversations/{cid}/members", "?limit=200")
        out[cid] = {"conv": shared(c), "role": c["role"], "archived": c["archived"],
                    "muted_until": c["muted_until"], "read_seq": c["read_seq"],
                    "delivered_seq": c["delivered_seq"],
                    "members": sorted((m["user_id"], m["role"], m["read_seq"], m["delivered_seq"]) for m in members),
                    "messages": all_pages(api, token, f"/v1/conversations/{cid}/messages", "?limit=200")}
    return out


class configured:
    """Restarts the platform's messaging service with extra environment for the duration of a
    `with` block (tenant settings are process settings until the user service provides them),
    then restarts it as it was."""

    def __init__(self, platform, **env):
        self.svc, self.env = platform["messaging"], {k: str(v) for k, v in env.items()}

    def __enter__(self):
        self.saved = dict(self.svc.env)
        assert self.svc.stop() == 0
        self.svc.env.update(self.env)
        self.svc.start()
        return self

    def __exit__(self, *exc):
        assert self.svc.stop() == 0
        self.svc.env = self.saved
        self.svc.start()


def role_token(tenant_id, user, *roles):
    """An access token with tenant roles (e.g. "moderator", "admin"), signed as the user service
    signs (its token endpoint issues the member role only so far)."""
    import time as _time
    import jwt as _jwt
    from conftest import KEYS
    now = int(_time.time())
    claims = {"sub": user, "tid": tenant_id, "sid": "s", "roles": ["member", *roles],
              "iss": "chat-platform", "aud": "chat-api", "iat": now, "nbf": now, "exp": now + 600}
    return _jwt.encode(claims, (KEYS / "jwt-private.pem").read_bytes(), algorithm="RS256", headers={"kid": "k1"})


def media_ids(api, token, n):
    """Uploads `n` small text files as the token's user and waits until they are processed:
    media a message may carry as attachments."""
    from media_util import upload, wait_status
    ids = []
    for i in range(n):
        r = upload(api, token, f"attachment {i}\n".encode(), "text/plain")
        assert r.status_code == 201, r.text
        ids.append(r.json()["id"])
    for m in ids:
        # A fresh media worker first replays the shared `users` and `media` topics from their
        # start (thousands of records from every run on this machine): be patient.
        assert wait_status(api, token, m, timeout=600)["status"] == "processed"
    return ids
