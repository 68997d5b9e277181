/* search_query_test.c - unit tests of the query language (what reaches FTS5 for what the user
 * typed), the time parser, and the snippet offsets; the index itself is tested on a real
 * SQLite database in a temporary directory. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <sqlite3.h>

#include "search.h"

static search_query q;
static char why[256];

static void parses(const char *in, const char *words, const char *tri)
{
    cm_err rc = search_query_parse(in, &q, why, sizeof(why));
    if (rc != CM_OK)
        fail_msg("%s: refused: %s", in, why);
    if (strcmp(q.words, words) != 0 || strcmp(q.tri, tri) != 0)
        fail_msg("%s: words [%s] tri [%s], want [%s] [%s]", in, q.words, q.tri, words, tri);
}

static void refuses(const char *in, cm_err want, const char *part)
{
    cm_err rc = search_query_parse(in, &q, why, sizeof(why));
    if (rc != want || strstr(why, part) == NULL)
        fail_msg("%s: got %s (%s), want %s with '%s'", in, cm_err_name(rc), why,
                 cm_err_name(want), part);
}

static void test_terms_are_quoted(void **state)
{
    (void)state;
    parses("hello world", "\"hello\" \"world\"", "");
    parses("\"hello world\"", "\"hello world\"", "");
    parses("rep*", "\"rep\"*", "");
    parses("a OR b", "\"a\" \"OR\" \"b\"", "");          /* operators are only words */
    parses("NEAR(a", "\"NEAR(a\"", "");
    parses("col:value", "\"col:value\"", "");             /* not an operator of ours */
    parses("x\"y z\"", "\"x\" \"y z\"", "");
    parses("東京タワー", "", "\"東京タワー\"");
    parses("东京 cafe", "\"cafe\"", "");
    assert_int_equal(q.nlikes, 1);
    assert_string_equal(q.likes[0], "东京");
    parses("!!! word", "\"word\"", "");                   /* punctuation-only: skipped */
}

static void test_operators(void **state)
{
    int64_t ms;
    (void)state;
    parses("from:alice in:c-1 has:attachment after:2024-05-01 before:2024-06-01 x", "\"x\"",
           "");
    assert_string_equal(q.sender, "alice");
    assert_string_equal(q.conversation, "c-1");
    assert_int_equal(q.has_attachment, 1);
    assert_int_equal(search_parse_time("2024-05-02", &ms), CM_OK);
    assert_int_equal(q.from_ms, ms);
    assert_int_equal(search_parse_time("2024-06-01", &ms), CM_OK);
    assert_int_equal(q.to_ms, ms);
    parses("from:bob", "", ""); /* filters only */
}

/* in:/from: reach msg_ids as the id's tokens, each quoted (ids hold no FTS5 syntax): a valid
 * id is one token (letters, digits and - _ . @ are token characters of msg_ids). */
static void test_id_match(void **state)
{
    char m[160];
    (void)state;
    assert_int_equal(search_id_match("conversation_id", "c1", m, sizeof(m)), 1);
    assert_string_equal(m, "conversation_id : (\"c1\")");
    assert_int_equal(search_id_match("sender_id", "Al.ice@x-1_", m, sizeof(m)), 1);
    assert_string_equal(m, "sender_id : (\"Al.ice@x-1_\")");
    assert_int_equal(search_id_match("sender_id", "_.@-", m, sizeof(m)), 1);
    assert_string_equal(m, "sender_id : (\"_.@-\")");
    /* other characters separate tokens (no valid id has them) */
    assert_int_equal(search_id_match("sender_id", "a\"b c", m, sizeof(m)), 1);
    assert_string_equal(m, "sender_id : (\"a\" \"b\" \"c\")");
    assert_int_equal(search_id_match("sender_id", "\" +", m, sizeof(m)), 0); /* no token */
    assert_string_equal(m, "");
    assert_int_equal(search_id_match("sender_id", "abcdefgh", m, 16), 0); /* does not fit */
}

static void test_refusals(void **state)
{
    char big[SEARCH_Q_MAX_BYTES + 2];
    (void)state;
    refuses("\"open", CM_EINVAL, "unterminated");
    refuses("from:", CM_EINVAL, "needs a value");
    refuses("from:a/b", CM_EINVAL, "id of");
    refuses("from:a from:b", CM_EINVAL, "two different");
    refuses("before:soon", CM_EINVAL, "date");
    refuses("has:dogs", CM_EINVAL, "has:attachment");
    refuses("*", CM_EINVAL, "before the *");
    refuses("", CM_EINVAL, "nothing to search");
    refuses("?? !!", CM_EINVAL, "nothing to search");
    refuses("a\x01", CM_EINVAL, "control");
    refuses("\xff\xfe", CM_EINVAL, "UTF-8");
    memset(big, 'a', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    refuses(big, CM_ETOOBIG, "longer than");
    refuses("a b c d e f g h i j k l m n o p q", CM_ETOOBIG, "more than 16");
}

static void test_time(void **state)
{
    int64_t ms;
    (void)state;
    assert_int_equal(search_parse_time("1970-01-02", &ms), CM_OK);
    assert_int_equal(ms, 86400000);
    assert_int_equal(search_parse_time("1970-01-01T00:00:01.5Z", &ms), CM_OK);
    assert_int_equal(ms, 1500);
    assert_int_equal(search_parse_time("2023-02-30", &ms), CM_EINVAL);
    assert_int_equal(search_parse_time("2023-02-29", &ms), CM_EINVAL);
    assert_int_equal(search_parse_time("2100-02-29", &ms), CM_EINVAL);
    assert_int_equal(search_parse_time("2023-04-31", &ms), CM_EINVAL);
    assert_int_equal(search_parse_time("2000-02-29T23:59:59.999Z", &ms), CM_OK);
    assert_int_equal(ms, 951868799999LL);
    assert_int_equal(search_parse_time("2024-02-29", &ms), CM_OK);
    assert_int_equal(ms, 1709164800000LL);
    assert_int_equal(search_parse_time("1969-12-31T23:59:59Z", &ms), CM_OK);
    assert_int_equal(ms, -1000);
    assert_int_equal(search_parse_time("2026-11-22T02:23:00.5Z", &ms), CM_OK);
    assert_int_equal(ms, 1795314180500LL);
    assert_int_equal(search_parse_time("2023-02-01T10:00:00+02:00", &ms), CM_EINVAL);
}

static void test_snippet_offsets_are_code_points(void **state)
{
    cJSON *o = search_snippet_json("日本\x01" "東京\x02" " and \x01" "café\x02");
    char *s;
    (void)state;
    assert_non_null(o);
    s = cJSON_PrintUnformatted(o);
    assert_string_equal(s, "{\"text\":\"日本東京 and café\",\"highlights\":[{\"start\":2,\"end\":4},"
                           "{\"start\":9,\"end\":13}]}");
    free(s);
    cJSON_Delete(o);
}

/* Removes the test index directory `dir` and tenant t1's files in it. */
static void remove_index(const char *dir)
{
    static const char *const SUFFIX[] = {".db", ".db-wal", ".db-shm"};
    char path[64];
    for (int i = 0; i < 3; i++) {
        snprintf(path, sizeof(path), "%s/t1%s", dir, SUFFIX[i]);
        unlink(path);
    }
    rmdir(dir);
}

/* A real index in a temporary directory: events applied, replayed, edited, deleted, left. */
static void apply(search_index *ix, const char *json)
{
    cJSON *ev = cJSON_Parse(json);
    assert_non_null(ev);
    if (search_index_apply(ix, ev, why, sizeof(why)) != CM_OK)
        fail_msg("apply %s: %s", json, why);
    cJSON_Delete(ev);
}

static int count(search_index *ix, const char *user, const char *text)
{
    cJSON *items = cJSON_CreateArray();
    int more = 0, n;
    assert_int_equal(search_query_parse(text, &q, why, sizeof(why)), CM_OK);
    assert_int_equal(search_index_messages(ix, "t1", user, &q, 0, 0, 50, items, &more), CM_OK);
    n = cJSON_GetArraySize(items);
    cJSON_Delete(items);
    return n;
}

#define MSG(type, eseq, text)                                                                  \
    "{\"type\":\"" type "\",\"tenant\":\"t1\",\"eseq\":" #eseq ",\"data\":{\"id\":\"m1\","     \
    "\"conversation_id\":\"c1\",\"seq\":1,\"sender_id\":\"u1\",\"type\":\"text\",\"text\":\""  \
    text "\",\"created_at\":\"2024-01-01T00:00:00.000Z\"}}"

static void test_index_lifecycle(void **state)
{
    char dir[] = "/tmp/search-test-XXXXXX";
    search_index *ix;
    (void)state;
    assert_non_null(mkdtemp(dir));
    assert_int_equal(search_index_create(dir, &ix), CM_OK);
    apply(ix, "{\"type\":\"conversation.created\",\"tenant\":\"t1\",\"eseq\":1,\"data\":{\"id\":"
              "\"c1\",\"type\":\"group\",\"created_by\":\"u1\",\"created_at\":"
              "\"2024-01-01T00:00:00.000Z\",\"initial_members\":[{\"user_id\":\"u1\"},"
              "{\"user_id\":\"u2\"}]}}");
    apply(ix, MSG("message.created", 2, "hello pelican"));
    apply(ix, MSG("message.created", 2, "hello pelican")); /* redelivered: no change */
    assert_int_equal(count(ix, "u2", "pelican"), 1);
    assert_int_equal(count(ix, "u3", "pelican"), 0); /* not a member */
    apply(ix, MSG("message.updated", 4, "hello flamingo"));
    apply(ix, MSG("message.updated", 3, "stale pelican")); /* older than what is held */
    assert_int_equal(count(ix, "u2", "pelican"), 0);
    assert_int_equal(count(ix, "u2", "flamingo"), 1);
    apply(ix, "{\"type\":\"member.removed\",\"tenant\":\"t1\",\"eseq\":5,\"data\":{"
              "\"conversation_id\":\"c1\",\"user_id\":\"u2\"}}");
    assert_int_equal(count(ix, "u2", "flamingo"), 1); /* sent before u2 left */
    apply(ix, MSG("message.deleted", 6, ""));
    apply(ix, MSG("message.updated", 7, "hello again")); /* a tombstone stays one */
    assert_int_equal(count(ix, "u1", "flamingo"), 0);
    assert_int_equal(count(ix, "u1", "again"), 0);
    /* A batch: one transaction; a refused event inside it leaves nothing (each event is
     * checked whole before its first write). */
    search_index_batch_begin(ix);
    {
        cJSON *bad = cJSON_Parse("{\"type\":\"conversation.created\",\"tenant\":\"t1\","
                                 "\"eseq\":1,\"data\":{\"id\":\"c1\",\"type\":\"group\","
                                 "\"created_by\":\"u1\",\"created_at\":"
                                 "\"2024-01-01T00:00:00.000Z\",\"initial_members\":"
                                 "[{\"user_id\":\"u9\"},{\"role\":\"member\"}]}}");
        assert_int_equal(search_index_apply(ix, bad, why, sizeof(why)), CM_EINVAL);
        cJSON_Delete(bad);
    }
    apply(ix, "{\"type\":\"member.added\",\"tenant\":\"t1\",\"eseq\":8,\"data\":{"
              "\"conversation_id\":\"c1\",\"user_id\":\"u2\"}}");
    assert_int_equal(search_index_batch_end(ix, 1), CM_OK);
    apply(ix, "{\"type\":\"message.created\",\"tenant\":\"t1\",\"eseq\":9,\"data\":{"
              "\"id\":\"m2\",\"conversation_id\":\"c1\",\"seq\":2,\"sender_id\":\"u1\","
              "\"type\":\"text\",\"text\":\"heron\",\"created_at\":"
              "\"2024-01-01T00:00:01.000Z\"}}");
    assert_int_equal(count(ix, "u2", "heron"), 1); /* u2 is back */
    assert_int_equal(count(ix, "u9", "heron"), 0); /* the refused event added no one */
    /* user.deleted: u1's words leave the index; a replay of u1's message stays erased. */
    apply(ix, "{\"type\":\"user.deleted\",\"tenant\":\"t1\",\"time\":"
              "\"2024-01-02T00:00:00.000Z\",\"data\":{\"user_id\":\"u1\","
              "\"erase_policy\":\"anonymize\"}}");
    assert_int_equal(count(ix, "u2", "heron"), 0);
    apply(ix, "{\"type\":\"message.created\",\"tenant\":\"t1\",\"eseq\":10,\"data\":{"
              "\"id\":\"m3\",\"conversation_id\":\"c1\",\"seq\":3,\"sender_id\":\"u1\","
              "\"type\":\"text\",\"text\":\"egret\",\"created_at\":"
              "\"2024-01-01T00:00:02.000Z\"}}");
    assert_int_equal(count(ix, "u2", "egret"), 0);
    search_index_destroy(ix);
    remove_index(dir);
}

/* search_index_apply_text, the indexer's path for message events: what it reads, it applies
 * exactly as the tree path does; anything else (other types, escapes, whitespace, malformed or
 * too deep JSON, non-integer numbers) is declined with CM_EAGAIN and changes nothing. */
static cm_err apply_text(search_index *ix, const char *json, int64_t *ms)
{
    return search_index_apply_text(ix, json, strlen(json), 32, ms, why, sizeof(why));
}

#define TMSG(type, eseq, extra, text)                                                          \
    "{\"type\":\"" type "\",\"tenant\":\"t1\",\"eseq\":" #eseq ",\"time\":"                    \
    "\"2024-01-01T00:00:05.000Z\",\"data\":{\"id\":\"m1\",\"conversation_id\":\"c1\","         \
    "\"seq\":1,\"sender_id\":\"u1\",\"type\":\"text\"" extra ",\"text\":\"" text "\","         \
    "\"created_at\":\"2024-01-01T00:00:00.000Z\"}}"

static void test_text_path(void **state)
{
    char dir[] = "/tmp/search-test-XXXXXX", deep[600];
    search_index *ix;
    int64_t ms = 0;
    static const char *const DECLINED[] = {
        /* not a message event */
        "{\"type\":\"member.added\",\"tenant\":\"t1\",\"eseq\":3,\"data\":{"
        "\"conversation_id\":\"c1\",\"user_id\":\"u3\"}}",
        /* an escape anywhere (the tree unescapes) */
        TMSG("message.created", 2, "", "say \\\"ibis\\\""),
        TMSG("message.created", 2, "", "ibis \\ud800"),
        /* whitespace that is not a space, a control byte in a string */
        "{\"type\":\"message.created\",\n\"tenant\":\"t1\",\"eseq\":2,\"data\":{}}",
        TMSG("message.created", 2, "", "ibis\tstork"),
        /* malformed: a bad literal, an unfinished object, trailing bytes, bad UTF-8 */
        TMSG("message.created", 2, ",\"deleted\":tru", "ibis"),
        TMSG("message.created", 2, ",\"deleted\":01", "ibis"),
        "{\"type\":\"message.created\",\"tenant\":\"t1\",\"eseq\":2,\"data\":{}",
        TMSG("message.created", 2, "", "ibis") "x",
        TMSG("message.created", 2, "", "ibis \xff"),
        /* numbers the tree reads as doubles: a fractional seq or eseq, an eseq below 1 */
        "{\"type\":\"message.created\",\"tenant\":\"t1\",\"eseq\":2.5,\"data\":{}}",
        "{\"type\":\"message.created\",\"tenant\":\"t1\",\"eseq\":0,\"data\":{}}",
        "{\"type\":\"message.created\",\"tenant\":\"t1\",\"eseq\":2,\"data\":{\"id\":\"m1\","
        "\"conversation_id\":\"c1\",\"seq\":1e0,\"sender_id\":\"u1\",\"type\":\"text\","
        "\"text\":\"ibis\",\"created_at\":\"2024-01-01T00:00:00.000Z\"}}",
        /* an invalid tenant, data not an object, no type */
        "{\"type\":\"message.created\",\"tenant\":\"t/1\",\"eseq\":2,\"data\":{}}",
        "{\"type\":\"message.created\",\"tenant\":\"t1\",\"eseq\":2,\"data\":[]}",
        "{\"tenant\":\"t1\",\"eseq\":2,\"data\":{},\"x\":\"message.created\"}",
    };
    (void)state;
    assert_non_null(mkdtemp(dir));
    assert_int_equal(search_index_create(dir, &ix), CM_OK);
    apply(ix, "{\"type\":\"conversation.created\",\"tenant\":\"t1\",\"eseq\":1,\"data\":{\"id\":"
              "\"c1\",\"type\":\"group\",\"created_by\":\"u1\",\"created_at\":"
              "\"2024-01-01T00:00:00.000Z\",\"initial_members\":[{\"user_id\":\"u1\"},"
              "{\"user_id\":\"u2\"}]}}");
    for (size_t i = 0; i < sizeof(DECLINED) / sizeof(DECLINED[0]); i++) {
        if (apply_text(ix, DECLINED[i], &ms) != CM_EAGAIN)
            fail_msg("not declined: %s", DECLINED[i]);
    }
    /* nested deeper than max_depth: declined; the same nesting within it is read */
    snprintf(deep, sizeof(deep), "%s", TMSG("message.created", 2, ",\"x\":[[[[1]]]]", "ibis"));
    assert_int_equal(search_index_apply_text(ix, deep, strlen(deep), 5, &ms, why, sizeof(why)),
                     CM_EAGAIN);
    assert_int_equal(count(ix, "u2", "ibis"), 0); /* nothing declined was applied */
    assert_int_equal(search_index_apply_text(ix, deep, strlen(deep), 6, &ms, why, sizeof(why)),
                     CM_OK);
    assert_int_equal(ms, 1704067205000LL); /* the envelope's time */
    assert_int_equal(count(ix, "u2", "ibis"), 1);
    assert_int_equal(count(ix, "u3", "ibis"), 0); /* not a member */
    /* redelivered, then edited (an older edit changes nothing), as with the tree */
    assert_int_equal(apply_text(ix, TMSG("message.created", 2, "", "ibis"), &ms), CM_OK);
    assert_int_equal(apply_text(ix, TMSG("message.updated", 4, ",\"attachments\":[{}]",
                                         "crane"), &ms), CM_OK);
    assert_int_equal(apply_text(ix, TMSG("message.updated", 3, "", "stale ibis"), &ms), CM_OK);
    assert_int_equal(count(ix, "u2", "ibis"), 0);
    assert_int_equal(count(ix, "u2", "crane"), 1);
    assert_int_equal(count(ix, "u2", "has:attachment crane"), 1);
    /* a data.deleted of true is a tombstone; a message without text is refused with the
     * tree path's reason (the caller dead-letters it) */
    assert_int_equal(apply_text(ix, TMSG("message.updated", 5, ",\"deleted\":true", "crane"),
                                &ms), CM_OK);
    assert_int_equal(count(ix, "u2", "crane"), 0);
    assert_int_equal(apply_text(ix, "{\"type\":\"message.created\",\"tenant\":\"t1\",\"eseq\":6,"
                                    "\"data\":{\"id\":\"m2\"}}", &ms),
                     CM_EINVAL);
    assert_non_null(strstr(why, "data lacks"));
    search_index_destroy(ix);
    remove_index(dir);
}

/* The first hit's snippet as JSON text (NULL when none); caller frees. */
/* Time filters read rid windows (SEARCH_RID_WINDOW, no index on created_ms): messages of the
 * same millisecond whose rids clash are moved up, past the millisecond's slots when the seq
 * is at their end, and are still found by exactly the times they were created at. */
static void test_time_filters_and_rid_clashes(void **state)
{
    char dir[] = "/tmp/search-test-XXXXXX", ev[512];
    search_index *ix;
    (void)state;
    assert_non_null(mkdtemp(dir));
    assert_int_equal(search_index_create(dir, &ix), CM_OK);
    for (int c = 1; c <= 3; c++) {
        snprintf(ev, sizeof(ev),
                 "{\"type\":\"conversation.created\",\"tenant\":\"t1\",\"eseq\":1,\"data\":"
                 "{\"id\":\"c%d\",\"type\":\"group\",\"created_by\":\"u1\",\"created_at\":"
                 "\"2024-01-01T00:00:00.000Z\",\"initial_members\":[{\"user_id\":\"u1\"}]}}",
                 c);
        apply(ix, ev);
    }
    /* seq 15 (the last of its millisecond's SEARCH_RID_PER_MS slots) in three conversations
     * at the same millisecond: rids ms*16+15, then +16 and +17 (the next millisecond's) */
    for (int c = 1; c <= 3; c++) {
        snprintf(ev, sizeof(ev),
                 "{\"type\":\"message.created\",\"tenant\":\"t1\",\"eseq\":4096,\"data\":"
                 "{\"id\":\"m%d\",\"conversation_id\":\"c%d\",\"sender_id\":\"u1\","
                 "\"seq\":15,\"type\":\"text\",\"text\":\"heron\",\"created_at\":"
                 "\"2024-01-02T00:00:00.000Z\"}}",
                 c, c);
        apply(ix, ev);
    }
    /* and one at the next millisecond, whose own slot 0 is taken by a moved rid */
    apply(ix, "{\"type\":\"message.created\",\"tenant\":\"t1\",\"eseq\":2,\"data\":"
              "{\"id\":\"m9\",\"conversation_id\":\"c1\",\"sender_id\":\"u1\",\"seq\":0,"
              "\"type\":\"text\",\"text\":\"heron\",\"created_at\":"
              "\"2024-01-02T00:00:00.001Z\"}}");
    assert_int_equal(count(ix, "u1", "heron"), 4);
    assert_int_equal(count(ix, "u1", "heron before:2024-01-02T00:00:00.001Z"), 3);
    /* after:<time> is exclusive; after:<date> is from the next day on */
    assert_int_equal(count(ix, "u1", "heron after:2024-01-02T00:00:00.000Z"), 1);
    assert_int_equal(count(ix, "u1", "before:2024-01-02T00:00:00.001Z"), 3);
    assert_int_equal(count(ix, "u1", "after:2024-01-02T00:00:00.000Z"), 1);
    assert_int_equal(count(ix, "u1", "after:2024-01-01 before:2024-01-02T00:00:00.001Z"), 3);
    assert_int_equal(count(ix, "u1", "after:2024-01-02T00:00:00.001Z"), 0);
    /* a moved message is found again past the slots of others: its redelivery adds no row,
     * its edit replaces its own text only */
    apply(ix, "{\"type\":\"message.created\",\"tenant\":\"t1\",\"eseq\":4096,\"data\":"
              "{\"id\":\"m3\",\"conversation_id\":\"c3\",\"sender_id\":\"u1\","
              "\"seq\":15,\"type\":\"text\",\"text\":\"heron\",\"created_at\":"
              "\"2024-01-02T00:00:00.000Z\"}}");
    assert_int_equal(count(ix, "u1", "heron"), 4);
    apply(ix, "{\"type\":\"message.updated\",\"tenant\":\"t1\",\"eseq\":4097,\"data\":"
              "{\"id\":\"m3\",\"conversation_id\":\"c3\",\"sender_id\":\"u1\","
              "\"seq\":15,\"type\":\"text\",\"text\":\"egret\",\"created_at\":"
              "\"2024-01-02T00:00:00.000Z\"}}");
    assert_int_equal(count(ix, "u1", "heron"), 3);
    assert_int_equal(count(ix, "u1", "egret in:c3"), 1);
    assert_int_equal(count(ix, "u1", "in:c3"), 1);
    /* a burst of 40 messages in one millisecond (more than its 16 slots), then one at the
     * next, whose slots the burst took: each at the first free slot, all found, by exactly
     * their times; the furthest moved is found again by its redelivery and edit */
    for (int i = 0; i < 40; i++) {
        snprintf(ev, sizeof(ev),
                 "{\"type\":\"message.created\",\"tenant\":\"t1\",\"eseq\":%d,\"data\":"
                 "{\"id\":\"b%d\",\"conversation_id\":\"c%d\",\"sender_id\":\"u1\","
                 "\"seq\":%d,\"type\":\"text\",\"text\":\"ibis\",\"created_at\":"
                 "\"2024-01-03T00:00:00.000Z\"}}",
                 10 + i, i, 1 + i % 3, 100 + i / 3);
        apply(ix, ev);
    }
    apply(ix, "{\"type\":\"message.created\",\"tenant\":\"t1\",\"eseq\":60,\"data\":"
              "{\"id\":\"b99\",\"conversation_id\":\"c1\",\"sender_id\":\"u1\",\"seq\":200,"
              "\"type\":\"text\",\"text\":\"ibis\",\"created_at\":"
              "\"2024-01-03T00:00:00.001Z\"}}");
    assert_int_equal(count(ix, "u1", "ibis"), 41);
    assert_int_equal(count(ix, "u1", "ibis before:2024-01-03T00:00:00.001Z"), 40);
    assert_int_equal(count(ix, "u1", "ibis after:2024-01-03T00:00:00.000Z"), 1);
    assert_int_equal(count(ix, "u1", "after:2024-01-02 before:2024-01-03T00:00:00.001Z"), 40);
    assert_int_equal(count(ix, "u1", "ibis after:2024-01-03T00:00:00.001Z"), 0);
    apply(ix, "{\"type\":\"message.created\",\"tenant\":\"t1\",\"eseq\":49,\"data\":"
              "{\"id\":\"b39\",\"conversation_id\":\"c1\",\"sender_id\":\"u1\","
              "\"seq\":113,\"type\":\"text\",\"text\":\"ibis\",\"created_at\":"
              "\"2024-01-03T00:00:00.000Z\"}}");
    assert_int_equal(count(ix, "u1", "ibis"), 41);
    apply(ix, "{\"type\":\"message.updated\",\"tenant\":\"t1\",\"eseq\":61,\"data\":"
              "{\"id\":\"b39\",\"conversation_id\":\"c1\",\"sender_id\":\"u1\","
              "\"seq\":113,\"type\":\"text\",\"text\":\"stork\",\"created_at\":"
              "\"2024-01-03T00:00:00.000Z\"}}");
    assert_int_equal(count(ix, "u1", "ibis"), 40);
    assert_int_equal(count(ix, "u1", "stork before:2024-01-03T00:00:00.001Z"), 1);
    search_index_destroy(ix);
    remove_index(dir);
}

static char *first_snippet(search_index *ix, const char *text)
{
    cJSON *items = cJSON_CreateArray();
    char *s = NULL;
    int more = 0;
    assert_int_equal(search_query_parse(text, &q, why, sizeof(why)), CM_OK);
    assert_int_equal(search_index_messages(ix, "t1", "u1", &q, 1, 0, 50, items, &more), CM_OK);
    if (cJSON_GetArraySize(items) > 0)
        s = cJSON_PrintUnformatted(cJSON_GetObjectItem(cJSON_GetArrayItem(items, 0), "snippet"));
    cJSON_Delete(items);
    return s;
}

/* CJK terms of one and two characters are found through the unigrams and bigrams of the
 * trigram_cjk tokenizer (search_tokenizer.c) exactly as a substring test would find them,
 * at the start, in the middle and among the last two characters (which start no trigram). */
static void test_cjk_short_terms(void **state)
{
    char dir[] = "/tmp/search-test-XXXXXX", *s;
    search_index *ix;
    (void)state;
    assert_non_null(mkdtemp(dir));
    assert_int_equal(search_index_create(dir, &ix), CM_OK);
    apply(ix, "{\"type\":\"conversation.created\",\"tenant\":\"t1\",\"eseq\":1,\"data\":{\"id\":"
              "\"c1\",\"type\":\"group\",\"created_by\":\"u1\",\"created_at\":"
              "\"2024-01-01T00:00:00.000Z\",\"initial_members\":[{\"user_id\":\"u1\"}]}}");
    apply(ix, MSG("message.created", 2, "我们明天在北京开会"));
    apply(ix, "{\"type\":\"message.created\",\"tenant\":\"t1\",\"eseq\":3,\"data\":{"
              "\"id\":\"m2\",\"conversation_id\":\"c1\",\"seq\":2,\"sender_id\":\"u1\","
              "\"type\":\"text\",\"text\":\"猫\",\"created_at\":\"2024-01-01T00:00:01.000Z\"}}");
    apply(ix, "{\"type\":\"message.created\",\"tenant\":\"t1\",\"eseq\":4,\"data\":{"
              "\"id\":\"m3\",\"conversation_id\":\"c1\",\"seq\":3,\"sender_id\":\"u1\","
              "\"type\":\"text\",\"text\":\"version 2の説明 ABC中\",\"created_at\":"
              "\"2024-01-01T00:00:02.000Z\"}}");
    assert_int_equal(count(ix, "u1", "我"), 1);        /* first character */
    assert_int_equal(count(ix, "u1", "会"), 1);        /* last character */
    assert_int_equal(count(ix, "u1", "开会"), 1);      /* last two */
    assert_int_equal(count(ix, "u1", "北京"), 1);
    assert_int_equal(count(ix, "u1", "京北"), 0);      /* order matters */
    assert_int_equal(count(ix, "u1", "京开"), 1);      /* last trigram's start, then tail */
    assert_int_equal(count(ix, "u1", "我明"), 0);      /* not adjacent */
    assert_int_equal(count(ix, "u1", "东"), 0);
    assert_int_equal(count(ix, "u1", "猫"), 1);        /* a text of one character */
    assert_int_equal(count(ix, "u1", "明天在"), 1);    /* trigrams as before */
    assert_int_equal(count(ix, "u1", "明天 北京"), 1); /* two terms, both */
    assert_int_equal(count(ix, "u1", "明天 猫"), 0);
    assert_int_equal(count(ix, "u1", "在北京开 会"), 1);
    assert_int_equal(count(ix, "u1", "2の"), 1);       /* mixed bigram */
    assert_int_equal(count(ix, "u1", "c中"), 1);       /* ASCII folded next to CJK */
    assert_int_equal(count(ix, "u1", "version 説明"), 1); /* a word and a short CJK term */
    assert_int_equal(count(ix, "u1", "version 北京"), 0);
    /* the highlight covers the term, not the trigram at its position */
    s = first_snippet(ix, "北京");
    assert_non_null(s);
    assert_string_equal(s, "{\"text\":\"我们明天在北京开会\",\"highlights\":[{\"start\":5,"
                           "\"end\":7}]}");
    free(s);
    /* an edit takes the old unigrams and bigrams out of the index */
    apply(ix, MSG("message.updated", 5, "上海"));
    assert_int_equal(count(ix, "u1", "北京"), 0);
    assert_int_equal(count(ix, "u1", "我"), 0);
    assert_int_equal(count(ix, "u1", "上海"), 1);
    search_index_destroy(ix);
    {
        /* two unspaced characters in a row are their unigrams only (no bigram token); the
         * edit left no token of the old text behind */
        sqlite3 *db;
        sqlite3_stmt *st;
        char path[64];
        snprintf(path, sizeof(path), "%s/t1.db", dir);
        assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
        assert_int_equal(
            sqlite3_exec(db, "CREATE VIRTUAL TABLE temp.tri_terms USING fts5vocab(main, msg_tri,"
                             " row); INSERT INTO msg_tri(msg_tri) VALUES ('integrity-check')",
                         NULL, NULL, NULL),
            SQLITE_OK);
        assert_int_equal(sqlite3_prepare_v2(db, "SELECT count(*) FROM temp.tri_terms WHERE"
                                                " term IN (?1, ?2, ?3, ?4)", -1, &st, NULL),
                         SQLITE_OK);
        sqlite3_bind_text(st, 1, "上海", -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 2, "北京", -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 3, "上", -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 4, "海", -1, SQLITE_STATIC);
        assert_int_equal(sqlite3_step(st), SQLITE_ROW);
        assert_int_equal(sqlite3_column_int(st, 0), 2); /* 上 and 海 */
        sqlite3_finalize(st);
        sqlite3_close(db);
    }
    remove_index(dir);
}

static int scalar_int(sqlite3 *db, const char *sql)
{
    sqlite3_stmt *st = NULL;
    int v = -1;
    assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &st, NULL), SQLITE_OK);
    if (sqlite3_step(st) == SQLITE_ROW)
        v = sqlite3_column_int(st, 0);
    sqlite3_finalize(st);
    return v;
}

/* Writes an older schema version's file: runs `sql` on the tenant file at `path`. */
static void write_old_file(const char *path, const char *sql)
{
    sqlite3 *db;
    assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
    if (sqlite3_exec(db, sql, NULL, NULL, NULL) != SQLITE_OK)
        fail_msg("%s: %s", path, sqlite3_errmsg(db));
    sqlite3_close(db);
}

/* The messages table as versions 3 to 6 had it (a unique index on id). */
#define OLD_MESSAGES_TABLE                                                                     \
    "CREATE TABLE messages(rid INTEGER PRIMARY KEY, id TEXT NOT NULL UNIQUE,"                  \
    " conversation_id TEXT NOT NULL, sender_id TEXT NOT NULL, seq INTEGER NOT"                 \
    " NULL, created_ms INTEGER NOT NULL, created_eseq INTEGER NOT NULL, eseq"                  \
    " INTEGER NOT NULL, has_attachment INTEGER NOT NULL, deleted INTEGER NOT"                  \
    " NULL, text TEXT NOT NULL, attachments INTEGER NOT NULL DEFAULT 0);"

/* A file of schema version 3 (msg_tri on the plain trigram tokenizer) is migrated when the
 * indexer opens it: msg_tri is rebuilt with trigram_cjk, so its old messages are found by
 * short CJK terms too. */
static void test_migrates_version_3(void **state)
{
    char dir[] = "/tmp/search-test-XXXXXX", path[64];
    search_index *ix;
    sqlite3 *db;
    (void)state;
    assert_non_null(mkdtemp(dir));
    snprintf(path, sizeof(path), "%s/t1.db", dir);
    write_old_file(path,
                   OLD_MESSAGES_TABLE
                   "CREATE INDEX messages_time ON messages(created_ms);"
                   "CREATE INDEX messages_conv ON messages(conversation_id, created_ms);"
                   "CREATE INDEX messages_sender ON messages(sender_id, created_ms);"
                   "CREATE VIRTUAL TABLE msg_tri USING fts5(text, content='messages',"
                   " content_rowid='rid', tokenize='trigram');"
                   "INSERT INTO messages VALUES (4096, 'm9', 'c1', 'u2', 1, 1, 1, 1, 0, 0,"
                   " '在北京开会', 0);"
                   "INSERT INTO msg_tri(msg_tri) VALUES ('rebuild');"
                   "PRAGMA user_version = 3;");
    assert_int_equal(search_index_create(dir, &ix), CM_OK);
    apply(ix, "{\"type\":\"conversation.created\",\"tenant\":\"t1\",\"eseq\":1,\"data\":{\"id\":"
              "\"c1\",\"type\":\"group\",\"created_by\":\"u1\",\"created_at\":"
              "\"2024-01-01T00:00:00.000Z\",\"initial_members\":[{\"user_id\":\"u1\"}]}}");
    assert_int_equal(count(ix, "u1", "北京"), 1);
    assert_int_equal(count(ix, "u1", "北京开"), 1);
    search_index_destroy(ix);
    /* the current version, with the FTS5 settings of FTS_CONFIG */
    assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
    assert_int_equal(scalar_int(db, "PRAGMA user_version"), 9);
    /* version 6: no index on created_ms (time ranges are rid ranges); version 7: no
     * conversation or sender index either (msg_ids holds the ids), nor the unique id */
    assert_int_equal(scalar_int(db, "SELECT count(*) FROM pragma_index_list('messages')"), 0);
    assert_int_equal(scalar_int(db, "SELECT count(*) FROM pragma_table_info('msg_ids')"), 2);
    assert_int_equal(scalar_int(db, "SELECT v FROM msg_words_config WHERE k = 'automerge'"), 16);
    assert_int_equal(scalar_int(db, "SELECT v FROM msg_tri_config WHERE k = 'automerge'"), 16);
    sqlite3_close(db);
    remove_index(dir);
}

/* A file of schema version 6 (conversation and sender as b-tree indexes of messages,
 * no msg_ids) is migrated when the indexer opens it: the indexes are dropped and msg_ids is
 * built from the messages, so in: and from: find the old messages. */
static void test_migrates_version_6(void **state)
{
    char dir[] = "/tmp/search-test-XXXXXX", path[64];
    search_index *ix;
    sqlite3 *db;
    (void)state;
    assert_non_null(mkdtemp(dir));
    snprintf(path, sizeof(path), "%s/t1.db", dir);
    assert_int_equal(search_index_create(dir, &ix), CM_OK); /* registers trigram_cjk */
    write_old_file(path,
                   OLD_MESSAGES_TABLE
                   "CREATE INDEX messages_by_conv ON messages(conversation_id);"
                   "CREATE INDEX messages_by_sender ON messages(sender_id);"
                   "CREATE VIRTUAL TABLE msg_words USING fts5(text, content='messages',"
                   " content_rowid='rid', tokenize='unicode61 remove_diacritics 2',"
                   " prefix='2 3');"
                   "CREATE VIRTUAL TABLE msg_tri USING fts5(text, content='messages',"
                   " content_rowid='rid', tokenize='trigram_cjk');"
                   "INSERT INTO messages VALUES (4096, 'm1', 'c1', 'u2', 0, 1, 1, 1, 0, 0,"
                   " 'old pelican', 0);"
                   "INSERT INTO messages VALUES (8192, 'm2', 'c1-x', 'u2-x', 0, 2, 1, 1, 0, 0,"
                   " 'old pelican', 0);"
                   "INSERT INTO msg_words(msg_words) VALUES ('rebuild');"
                   "INSERT INTO msg_tri(msg_tri) VALUES ('rebuild');"
                   "PRAGMA user_version = 6;");
    apply(ix, "{\"type\":\"conversation.created\",\"tenant\":\"t1\",\"eseq\":1,\"data\":{\"id\":"
              "\"c1\",\"type\":\"group\",\"created_by\":\"u1\",\"created_at\":"
              "\"2024-01-01T00:00:00.000Z\",\"initial_members\":[{\"user_id\":\"u1\"}]}}");
    apply(ix, "{\"type\":\"conversation.created\",\"tenant\":\"t1\",\"eseq\":1,\"data\":{\"id\":"
              "\"c1-x\",\"type\":\"group\",\"created_by\":\"u1\",\"created_at\":"
              "\"2024-01-01T00:00:00.000Z\",\"initial_members\":[{\"user_id\":\"u1\"}]}}");
    assert_int_equal(count(ix, "u1", "pelican"), 2);
    assert_int_equal(count(ix, "u1", "pelican in:c1"), 1);
    assert_int_equal(count(ix, "u1", "in:c1"), 1);
    assert_int_equal(count(ix, "u1", "from:u2"), 1);
    assert_int_equal(count(ix, "u1", "from:u2-x"), 1);
    assert_int_equal(count(ix, "u1", "pelican from:u2 in:c1-x"), 0);
    /* an old message is still found by its rid (no unique index on id any more): its edit
     * replaces it, its redelivery changes nothing */
    apply(ix, "{\"type\":\"message.updated\",\"tenant\":\"t1\",\"eseq\":5,\"data\":{\"id\":"
              "\"m1\",\"conversation_id\":\"c1\",\"seq\":0,\"sender_id\":\"u2\",\"type\":"
              "\"text\",\"text\":\"new heron\",\"created_at\":\"1970-01-01T00:00:00.001Z\"}}");
    apply(ix, "{\"type\":\"message.created\",\"tenant\":\"t1\",\"eseq\":1,\"data\":{\"id\":"
              "\"m1\",\"conversation_id\":\"c1\",\"seq\":0,\"sender_id\":\"u2\",\"type\":"
              "\"text\",\"text\":\"old pelican\",\"created_at\":\"1970-01-01T00:00:00.001Z\"}}");
    assert_int_equal(count(ix, "u1", "pelican"), 1);
    assert_int_equal(count(ix, "u1", "heron in:c1"), 1);
    assert_int_equal(count(ix, "u1", "in:c1"), 1);
    search_index_destroy(ix);
    assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
    assert_int_equal(scalar_int(db, "PRAGMA user_version"), 9);
    assert_int_equal(scalar_int(db, "SELECT count(*) FROM pragma_index_list('messages')"), 0);
    assert_int_equal(scalar_int(db, "SELECT count(*) FROM pragma_table_info('msg_ids')"), 2);
    assert_int_equal(scalar_int(db, "SELECT v FROM msg_ids_config WHERE k = 'automerge'"), 16);
    /* the built index is the content's (FTS5's own consistency check) */
    assert_int_equal(sqlite3_exec(db, "INSERT INTO msg_ids(msg_ids) VALUES ('integrity-check')",
                                  NULL, NULL, NULL),
                     SQLITE_OK);
    sqlite3_close(db);
    remove_index(dir);
}

/* A version 8 file (0..4095 rid slots per millisecond) as version 8's apply_message left it:
 * m1..m3 at 2024-01-02T00:00:00.000Z with seq 15 in c1..c3 (rids ms*4096+15, +16, +17),
 * m4 at the next millisecond with seq 0 (ms*4096+4096, its own slot). */
#define V8_MS "1704153600000"
/* the first of V8_MS's rid slots in version 9 (SEARCH_RID_EPOCH_MS 2020-01-01, 16 per ms) */
#define V9_OWN "(" V8_MS " - 1577836800000) * 16"
static void make_version_8(const char *dir, const char *path, int burst)
{
    search_index *ix;
    char sql[2048];
    assert_int_equal(search_index_create(dir, &ix), CM_OK);
    for (int c = 1; c <= 3; c++) {
        char ev[512];
        snprintf(ev, sizeof(ev),
                 "{\"type\":\"conversation.created\",\"tenant\":\"t1\",\"eseq\":1,\"data\":"
                 "{\"id\":\"c%d\",\"type\":\"group\",\"created_by\":\"u1\",\"created_at\":"
                 "\"2024-01-01T00:00:00.000Z\",\"initial_members\":[{\"user_id\":\"u1\"}]}}",
                 c);
        apply(ix, ev);
    }
    search_index_destroy(ix);
    snprintf(sql, sizeof(sql),
             "INSERT INTO messages VALUES (" V8_MS " * 4096 + 15, 'm1', 'c1', 'u1', 15, " V8_MS
             ", 16, 16, 0, 0, 'old heron', 0), (" V8_MS " * 4096 + 16, 'm2', 'c2', 'u2', 15, "
             V8_MS ", 16, 16, 0, 0, 'old heron', 0), (" V8_MS " * 4096 + 17, 'm3', 'c3', 'u1',"
             " 15, " V8_MS ", 16, 16, 0, 0, 'old heron 北京', 0), ((" V8_MS " + 1) * 4096, 'm4',"
             " 'c1', 'u1', 0, " V8_MS " + 1, 2, 2, 0, 0, 'old egret', 0);"
             /* with `burst`: 1100 more in one millisecond, more than SEARCH_RID_SPILL slots
              * can hold */
             "WITH RECURSIVE n(v) AS (SELECT 0 UNION ALL SELECT v + 1 FROM n WHERE v < 1099)"
             " INSERT INTO messages SELECT (" V8_MS " + 5) * 4096 + v, 'x' || v, 'c1', 'u1', v, "
             V8_MS " + 5, 1, 1, 0, 0, 'x', 0 FROM n WHERE %d;"
             "INSERT INTO msg_words(msg_words) VALUES ('rebuild');"
             "INSERT INTO msg_ids(msg_ids) VALUES ('rebuild');"
             "INSERT INTO msg_tri(msg_tri) VALUES ('rebuild');"
             "PRAGMA user_version = 8;",
             burst);
    write_old_file(path, sql);
}

/* Version 8 -> 9: messages are renumbered with 16 rid slots per millisecond from 2020, each
 * where apply_message puts it (its own slot (created_ms - epoch) * 16 + seq % 16, or the first
 * free one above), and the three FTS5 indexes rebuilt: old messages are found by words, CJK, ids and
 * time, and an old message's redelivery or edit finds its row. */
static void test_migrates_version_8(void **state)
{
    char dir[] = "/tmp/search-test-XXXXXX", path[64];
    search_index *ix;
    sqlite3 *db;
    (void)state;
    assert_non_null(mkdtemp(dir));
    snprintf(path, sizeof(path), "%s/t1.db", dir);
    make_version_8(dir, path, 0);
    assert_int_equal(search_index_create(dir, &ix), CM_OK);
    /* the indexer's next event opens the writer, which migrates */
    apply(ix, "{\"type\":\"member.added\",\"tenant\":\"t1\",\"eseq\":3,\"data\":{"
              "\"conversation_id\":\"c2\",\"user_id\":\"u1\"}}");
    assert_int_equal(count(ix, "u1", "heron"), 3);
    assert_int_equal(count(ix, "u1", "北京"), 1);
    assert_int_equal(count(ix, "u1", "in:c1"), 2);
    assert_int_equal(count(ix, "u1", "from:u2"), 1);
    assert_int_equal(count(ix, "u1", "before:2024-01-02T00:00:00.001Z"), 3);
    assert_int_equal(count(ix, "u1", "egret after:2024-01-02T00:00:00.000Z"), 1);
    /* m4's own slot (ms+1)*16 is m2's now: its redelivery and edit walk up to it */
    apply(ix, "{\"type\":\"message.created\",\"tenant\":\"t1\",\"eseq\":2,\"data\":{\"id\":"
              "\"m4\",\"conversation_id\":\"c1\",\"seq\":0,\"sender_id\":\"u1\",\"type\":"
              "\"text\",\"text\":\"old egret\",\"created_at\":\"2024-01-02T00:00:00.001Z\"}}");
    apply(ix, "{\"type\":\"message.updated\",\"tenant\":\"t1\",\"eseq\":17,\"data\":{\"id\":"
              "\"m3\",\"conversation_id\":\"c3\",\"seq\":15,\"sender_id\":\"u1\",\"type\":"
              "\"text\",\"text\":\"new ibis\",\"created_at\":\"2024-01-02T00:00:00.000Z\"}}");
    apply(ix, "{\"type\":\"message.updated\",\"tenant\":\"t1\",\"eseq\":3,\"data\":{\"id\":"
              "\"m4\",\"conversation_id\":\"c1\",\"seq\":0,\"sender_id\":\"u1\",\"type\":"
              "\"text\",\"text\":\"new stork\",\"created_at\":\"2024-01-02T00:00:00.001Z\"}}");
    assert_int_equal(count(ix, "u1", "heron"), 2);
    assert_int_equal(count(ix, "u1", "北京"), 0);
    assert_int_equal(count(ix, "u1", "egret"), 0);
    assert_int_equal(count(ix, "u1", "ibis before:2024-01-02T00:00:00.001Z"), 1);
    assert_int_equal(count(ix, "u1", "stork in:c1 after:2024-01-02T00:00:00.000Z"), 1);
    search_index_destroy(ix);
    assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
    assert_int_equal(scalar_int(db, "PRAGMA user_version"), 9);
    assert_int_equal(scalar_int(db, "SELECT count(*) FROM sqlite_schema WHERE name = 'msg_ids'"
                                    " AND sql LIKE '%tokenchars%'"), 1);
    assert_int_equal(scalar_int(db, "SELECT count(*) FROM messages"), 4);
    /* own slots (ms - epoch)*16+15 (m1, m2, m3) and +16 (m4), each at the first free one */
    assert_int_equal(scalar_int(db, "SELECT count(*) FROM messages WHERE"
                                    " (id = 'm1' AND rid = " V9_OWN " + 15) OR"
                                    " (id = 'm2' AND rid = " V9_OWN " + 16) OR"
                                    " (id = 'm3' AND rid = " V9_OWN " + 17) OR"
                                    " (id = 'm4' AND rid = " V9_OWN " + 18)"),
                     4);
    for (int i = 0; i < 3; i++) {
        static const char *const CHECK[] = {
            "INSERT INTO msg_words(msg_words) VALUES ('integrity-check')",
            "INSERT INTO msg_ids(msg_ids) VALUES ('integrity-check')",
            "INSERT INTO msg_tri(msg_tri) VALUES ('integrity-check')"};
        if (sqlite3_exec(db, CHECK[i], NULL, NULL, NULL) != SQLITE_OK)
            fail_msg("%s: %s", CHECK[i], sqlite3_errmsg(db));
    }
    sqlite3_close(db);
    remove_index(dir);
}

/* A version 8 file with more messages in one millisecond than SEARCH_RID_SPILL slots hold is
 * not migrated: the event fails (CM_EIO, the indexer retries) and the file stays as it was,
 * rather than holding rids outside their time's window. */
static void test_migration_9_refuses_a_burst(void **state)
{
    char dir[] = "/tmp/search-test-XXXXXX", path[64];
    search_index *ix;
    sqlite3 *db;
    cJSON *ev;
    (void)state;
    assert_non_null(mkdtemp(dir));
    snprintf(path, sizeof(path), "%s/t1.db", dir);
    make_version_8(dir, path, 1);
    assert_int_equal(search_index_create(dir, &ix), CM_OK);
    ev = cJSON_Parse("{\"type\":\"member.added\",\"tenant\":\"t1\",\"eseq\":3,\"data\":{"
                     "\"conversation_id\":\"c2\",\"user_id\":\"u1\"}}");
    assert_int_equal(search_index_apply(ix, ev, why, sizeof(why)), CM_EIO);
    cJSON_Delete(ev);
    search_index_destroy(ix);
    assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
    assert_int_equal(scalar_int(db, "PRAGMA user_version"), 8);
    assert_int_equal(scalar_int(db, "SELECT count(*) FROM messages WHERE rid = " V8_MS
                                    " * 4096 + 15 AND id = 'm1'"),
                     1);
    sqlite3_close(db);
    remove_index(dir);
}

/* in: and from: are exact: msg_ids finds the ids by their tokens (unicode61 splits at
 * - _ . @ and folds case), and the stored id is tested too, so an id that contains another's
 * tokens (c1 in c1-x, U1 for u1) is not the other. On every path of the query: the ids alone,
 * with words, with CJK terms of 3+ and of 1-2 characters, with an id without letters or digits
 * (no token: every row tested); words never match an id; erasure by sender is exact too. */
/* Version 7 -> 8: msg_tri is recreated with trigram_cjk and rebuilt (version 8 indexes CJK
 * runs as unigrams only, no trigram): CJK terms of 3+ characters find old rows, and an old
 * row's edit leaves none of its old tokens behind. The version 7 file's msg_tri is built here
 * with plain trigrams, which version 7's trigram_cjk emitted for CJK runs too. */
static void test_migrates_version_7(void **state)
{
    char dir[] = "/tmp/search-test-XXXXXX", path[64];
    search_index *ix;
    sqlite3 *db;
    (void)state;
    assert_non_null(mkdtemp(dir));
    snprintf(path, sizeof(path), "%s/t1.db", dir);
    assert_int_equal(search_index_create(dir, &ix), CM_OK);
    apply(ix, "{\"type\":\"conversation.created\",\"tenant\":\"t1\",\"eseq\":1,\"data\":{\"id\":"
              "\"c1\",\"type\":\"group\",\"created_by\":\"u1\",\"created_at\":"
              "\"2024-01-01T00:00:00.000Z\",\"initial_members\":[{\"user_id\":\"u1\"}]}}");
    apply(ix, "{\"type\":\"message.created\",\"tenant\":\"t1\",\"eseq\":2,\"data\":{\"id\":"
              "\"m1\",\"conversation_id\":\"c1\",\"seq\":1,\"sender_id\":\"u1\",\"type\":"
              "\"text\",\"text\":\"打开文件名称\",\"created_at\":\"2024-01-01T00:00:00.000Z\"}}");
    search_index_destroy(ix);
    write_old_file(path, "DROP TABLE msg_tri;"
                         "CREATE VIRTUAL TABLE msg_tri USING fts5(text,"
                         " content='messages', content_rowid='rid',"
                         " tokenize='trigram');"
                         "INSERT INTO msg_tri(msg_tri) VALUES ('rebuild');"
                         "PRAGMA user_version = 7;");
    assert_int_equal(search_index_create(dir, &ix), CM_OK);
    /* the indexer's next event opens the writer, which migrates */
    apply(ix, "{\"type\":\"member.added\",\"tenant\":\"t1\",\"eseq\":3,\"data\":{"
              "\"conversation_id\":\"c1\",\"user_id\":\"u2\"}}");
    assert_int_equal(count(ix, "u1", "文件名"), 1);
    assert_int_equal(count(ix, "u1", "打开文件名称"), 1);
    assert_int_equal(count(ix, "u1", "文"), 1);
    apply(ix, "{\"type\":\"message.updated\",\"tenant\":\"t1\",\"eseq\":4,\"data\":{\"id\":"
              "\"m1\",\"conversation_id\":\"c1\",\"seq\":1,\"sender_id\":\"u1\",\"type\":"
              "\"text\",\"text\":\"保存\",\"created_at\":\"2024-01-01T00:00:00.000Z\"}}");
    assert_int_equal(count(ix, "u1", "文件名"), 0);
    assert_int_equal(count(ix, "u1", "保存"), 1);
    search_index_destroy(ix);
    assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
    assert_int_equal(scalar_int(db, "PRAGMA user_version"), 9);
    assert_int_equal(scalar_int(db, "SELECT count(*) FROM sqlite_schema WHERE name = 'msg_tri'"
                                    " AND sql LIKE '%trigram_cjk%'"), 1);
    /* the index holds exactly the tokens of the current text ('integrity-check' compares
     * it with the content table) */
    assert_int_equal(sqlite3_exec(db, "INSERT INTO msg_tri(msg_tri) VALUES ('integrity-check')",
                                  NULL, NULL, NULL),
                     SQLITE_OK);
    sqlite3_close(db);
    remove_index(dir);
}

static void test_ids_are_exact(void **state)
{
    static const char *const CONV[] = {"c1", "c1-x", "C1", "c1", "___", "c1"};
    static const char *const SENDER[] = {"u1", "u1", "u1-x", "U1", "u1", "..."};
    char dir[] = "/tmp/search-test-XXXXXX", ev[640];
    search_index *ix;
    (void)state;
    assert_non_null(mkdtemp(dir));
    assert_int_equal(search_index_create(dir, &ix), CM_OK);
    for (int c = 0; c < 6; c++) {
        if (c == 3 || c == 5)
            continue; /* c1 again */
        snprintf(ev, sizeof(ev),
                 "{\"type\":\"conversation.created\",\"tenant\":\"t1\",\"eseq\":1,\"data\":"
                 "{\"id\":\"%s\",\"type\":\"group\",\"created_by\":\"u1\",\"created_at\":"
                 "\"2024-01-01T00:00:00.000Z\",\"initial_members\":[{\"user_id\":\"r\"}]}}",
                 CONV[c]);
        apply(ix, ev);
    }
    /* message m<i>: conversation CONV[i], sender SENDER[i], text "heron 北京开会 <i>" */
    for (int i = 0; i < 6; i++) {
        snprintf(ev, sizeof(ev),
                 "{\"type\":\"message.created\",\"tenant\":\"t1\",\"eseq\":%d,\"data\":"
                 "{\"id\":\"m%d\",\"conversation_id\":\"%s\",\"sender_id\":\"%s\",\"seq\":%d,"
                 "\"type\":\"text\",\"text\":\"heron 北京开会\",\"created_at\":"
                 "\"2024-01-02T00:00:0%d.000Z\"}}",
                 i + 2, i, CONV[i], SENDER[i], i + 1, i);
        apply(ix, ev);
    }
    assert_int_equal(count(ix, "r", "heron"), 6);
    assert_int_equal(count(ix, "r", "in:c1"), 3);          /* m0, m3, m5: not c1-x, not C1 */
    assert_int_equal(count(ix, "r", "heron in:c1"), 3);
    assert_int_equal(count(ix, "r", "北京开 in:c1"), 3);   /* msg_tri drives */
    assert_int_equal(count(ix, "r", "北京 in:c1"), 3);     /* a short CJK term drives */
    assert_int_equal(count(ix, "r", "in:c1-x"), 1);
    assert_int_equal(count(ix, "r", "in:C1"), 1);
    assert_int_equal(count(ix, "r", "in:c"), 0);
    assert_int_equal(count(ix, "r", "from:u1"), 3);        /* m0, m1, m4 */
    assert_int_equal(count(ix, "r", "from:u1 in:c1"), 1);
    assert_int_equal(count(ix, "r", "heron from:U1"), 1);
    assert_int_equal(count(ix, "r", "from:u1-x"), 1);
    assert_int_equal(count(ix, "r", "in:___"), 1); /* - _ . @ are token characters of ids */
    assert_int_equal(count(ix, "r", "heron from:..."), 1);
    assert_int_equal(count(ix, "r", "北京 from:... in:c1"), 1);
    /* an id is no word of the text */
    assert_int_equal(count(ix, "r", "u1"), 0);
    assert_int_equal(count(ix, "r", "c1"), 0);
    /* newest first, the ids alone: rid order */
    {
        cJSON *items = cJSON_CreateArray();
        int more = 0;
        assert_int_equal(search_query_parse("in:c1", &q, why, sizeof(why)), CM_OK);
        assert_int_equal(search_index_messages(ix, "t1", "r", &q, 1, 0, 2, items, &more), CM_OK);
        assert_int_equal(cJSON_GetArraySize(items), 2);
        assert_int_equal(more, 1);
        assert_string_equal(cJSON_GetStringValue(cJSON_GetObjectItem(
                                cJSON_GetArrayItem(items, 0), "id")), "m5");
        assert_string_equal(cJSON_GetStringValue(cJSON_GetObjectItem(
                                cJSON_GetArrayItem(items, 1), "id")), "m3");
        cJSON_Delete(items);
    }
    /* u1 erased: its three messages lose their text and sender; u1-x's and U1's stay */
    apply(ix, "{\"type\":\"user.deleted\",\"tenant\":\"t1\",\"time\":"
              "\"2024-01-03T00:00:00.000Z\",\"data\":{\"user_id\":\"u1\","
              "\"erase_policy\":\"anonymize\"}}");
    assert_int_equal(count(ix, "r", "heron"), 3);
    assert_int_equal(count(ix, "r", "from:u1"), 0);
    assert_int_equal(count(ix, "r", "from:u1-x"), 1);
    assert_int_equal(count(ix, "r", "heron from:U1"), 1);
    assert_int_equal(count(ix, "r", "北京 from:U1"), 1);
    /* an id of dots only is a token too */
    apply(ix, "{\"type\":\"user.deleted\",\"tenant\":\"t1\",\"time\":"
              "\"2024-01-03T00:00:00.000Z\",\"data\":{\"user_id\":\"...\","
              "\"erase_policy\":\"delete\"}}");
    assert_int_equal(count(ix, "r", "heron"), 2);
    assert_int_equal(count(ix, "r", "from:..."), 0);
    search_index_destroy(ix);
    {
        sqlite3 *db;
        char path[64];
        snprintf(path, sizeof(path), "%s/t1.db", dir);
        assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
        /* what is left: the erased messages under the deleted user, in msg_ids too */
        assert_int_equal(scalar_int(db, "SELECT count(*) FROM messages WHERE sender_id ="
                                        " 'deleted-user' AND text = ''"),
                         4);
        assert_int_equal(scalar_int(db, "SELECT count(*) FROM msg_ids WHERE msg_ids MATCH"
                                        " 'sender_id : \"deleted-user\"'"),
                         4);
        assert_int_equal(
            sqlite3_exec(db, "INSERT INTO msg_words(msg_words) VALUES ('integrity-check');"
                             "INSERT INTO msg_tri(msg_tri) VALUES ('integrity-check');"
                             "INSERT INTO msg_ids(msg_ids) VALUES ('integrity-check')",
                         NULL, NULL, NULL),
            SQLITE_OK);
        sqlite3_close(db);
    }
    remove_index(dir);
}

/* A search that comes between the creation of a tenant's file and the commit of its schema
 * (the writer of the tenant's first event) finds an empty database: no results, not an
 * error (it was a 503, seen by the merge-mode reindex e2e test). */
static void test_reader_before_the_schema(void **state)
{
    char dir[] = "/tmp/search-test-XXXXXX", path[64];
    search_index *ix;
    FILE *f;
    (void)state;
    assert_non_null(mkdtemp(dir));
    snprintf(path, sizeof(path), "%s/t1.db", dir);
    assert_non_null(f = fopen(path, "w")); /* the file as sqlite3_open_v2 leaves it */
    fclose(f);
    assert_int_equal(search_index_create(dir, &ix), CM_OK);
    assert_int_equal(count(ix, "u1", "anything"), 0);
    search_index_destroy(ix);
    remove_index(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_terms_are_quoted),
        cmocka_unit_test(test_operators),
        cmocka_unit_test(test_id_match),
        cmocka_unit_test(test_refusals),
        cmocka_unit_test(test_time),
        cmocka_unit_test(test_snippet_offsets_are_code_points),
        cmocka_unit_test(test_index_lifecycle),
        cmocka_unit_test(test_text_path),
        cmocka_unit_test(test_cjk_short_terms),
        cmocka_unit_test(test_time_filters_and_rid_clashes),
        cmocka_unit_test(test_migrates_version_3),
        cmocka_unit_test(test_migrates_version_6),
        cmocka_unit_test(test_migrates_version_7),
        cmocka_unit_test(test_migrates_version_8),
        cmocka_unit_test(test_migration_9_refuses_a_burst),
        cmocka_unit_test(test_ids_are_exact),
        cmocka_unit_test(test_reader_before_the_schema),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
