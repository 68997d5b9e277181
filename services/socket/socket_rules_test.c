/* socket_rules_test.c - unit tests of the socket service's plain rules: frame validation, acks,
 * event renderings, the order decision and the circuit breaker. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "socket.h"

static cm_err parse(const char *text, socket_frame_in *f, char *code, char *id)
{
    char detail[256];

    return socket_frame_parse(text, strlen(text), f, code, 32, detail, sizeof(detail), id);
}

static void test_frames_are_validated(void **state)
{
    socket_frame_in f;
    char code[32], id[SOCKET_FRAME_ID_MAX + 1];

    (void)state;
    assert_int_equal(parse("nope", &f, code, id), CM_EINVAL);
    assert_string_equal(code, "bad-json");
    assert_int_equal(parse("[1]", &f, code, id), CM_EINVAL);
    assert_string_equal(code, "bad-json");
    assert_int_equal(parse("{\"type\":\"fly\",\"id\":\"a1\"}", &f, code, id), CM_EINVAL);
    assert_string_equal(code, "unknown-type");
    assert_string_equal(id, "a1"); /* so the rejection can be acked */
    assert_int_equal(parse("{\"type\":\"message.send\",\"id\":\"a2\"}", &f, code, id), CM_EINVAL);
    assert_string_equal(code, "validation");
    assert_int_equal(parse("{\"type\":\"message.send\",\"conversation_id\":\"../x\"}", &f, code, id),
                     CM_EINVAL);
    assert_int_equal(parse("{\"type\":\"message.read\",\"conversation_id\":\"ab\",\"seq\":-1}", &f,
                           code, id),
                     CM_EINVAL);
    assert_int_equal(parse("{\"type\":\"presence.set\",\"status\":\"busy\"}", &f, code, id), CM_EINVAL);
    assert_int_equal(parse("{\"type\":\"message.read\",\"conversation_id\":\"ab-01\",\"seq\":7}", &f,
                           code, id),
                     CM_OK);
    assert_int_equal(f.cmd, SOCKET_CMD_READ);
    assert_int_equal(f.seq, 7);
    assert_null(f.id);
    socket_frame_in_cleanup(&f);
}

static void test_send_body_drops_the_envelope(void **state)
{
    socket_frame_in f;
    char code[32], id[SOCKET_FRAME_ID_MAX + 1], *body;

    (void)state;
    assert_int_equal(parse("{\"type\":\"message.send\",\"id\":\"s\",\"conversation_id\":\"ab\","
                           "\"text\":\"hi\",\"client_msg_id\":\"c1\"}",
                           &f, code, id),
                     CM_OK);
    body = socket_send_body(&f);
    assert_string_equal(body, "{\"text\":\"hi\",\"client_msg_id\":\"c1\"}");
    free(body);
    socket_frame_in_cleanup(&f);
}

static void test_rejections_say_whether_to_retry(void **state)
{
    char *a = socket_rejected_json("x", 0, NULL, "messaging unavailable");
    char *b = socket_rejected_json("y", 404, "{\"type\":\"urn:chat:problem:not-found\",\"status\":404}",
                                   "refused by messaging");
    char *c = socket_rejected_json("z", 429, NULL, "rate-limited");

    (void)state;
    assert_non_null(strstr(a, "\"retryable\":true"));
    assert_non_null(strstr(a, "\"status\":\"rejected\""));
    assert_non_null(strstr(b, "\"retryable\":false"));
    assert_non_null(strstr(b, "urn:chat:problem:not-found"));
    /* The socket's own rate cap: the same problem type as the HTTP side's 429. */
    assert_non_null(strstr(c, "\"retryable\":true"));
    assert_non_null(strstr(c, "urn:chat:problem:rate-limited"));
    assert_non_null(strstr(c, "\"status\":429"));
    free(a);
    free(b);
    free(c);
}

static void test_order_decision(void **state)
{
    (void)state;
    assert_int_equal(socket_order_decide(4, 5), 1);  /* the next one */
    assert_int_equal(socket_order_decide(5, 5), 0);  /* already applied: a duplicate */
    assert_int_equal(socket_order_decide(5, 2), 0);
    assert_int_equal(socket_order_decide(5, 7), 2);  /* a gap: catch up first */
    assert_int_equal(socket_order_decide(-1, 1), 2); /* unknown conversation */
}

static void test_breaker_opens_and_half_opens(void **state)
{
    socket_breaker b = {.threshold = 3, .open_ms = 1000};

    (void)state;
    for (int i = 0; i < 3; i++) {
        assert_true(socket_breaker_allow(&b, 0));
        socket_breaker_record(&b, 0, 0);
    }
    assert_false(socket_breaker_allow(&b, 500));
    assert_true(socket_breaker_allow(&b, 1000));  /* one trial */
    assert_false(socket_breaker_allow(&b, 1001)); /* only one */
    socket_breaker_record(&b, 0, 1001);           /* failed: open again */
    assert_false(socket_breaker_allow(&b, 1500));
    assert_true(socket_breaker_allow(&b, 2001));
    socket_breaker_record(&b, 1, 2001);
    assert_true(socket_breaker_allow(&b, 2002));
}

static void test_cloudevents_become_frames(void **state)
{
    const char *ce = "{\"specversion\":\"1.0\",\"id\":\"e1\",\"type\":\"message.created\","
                     "\"tenant\":\"t1\",\"eseq\":3,\"time\":\"2026-01-01T00:00:00.000Z\","
                     "\"data\":{\"text\":\"hi\"}}";
    const char *rev = "{\"type\":\"session.revoked\",\"tenant\":\"t1\",\"data\":{\"session_id\":\"s9\","
                      "\"user_id\":\"bob\"}}";
    socket_event *ev = NULL;

    (void)state;
    assert_int_equal(socket_event_from_cloudevent("messages", "c1", 2, ce, strlen(ce), &ev), CM_OK);
    assert_int_equal(ev->eseq, 3);
    assert_string_equal(ev->conversation_id, "c1");
    assert_int_equal(ev->key, cm_cursor_key("c1"));
    assert_non_null(strstr(ev->frame, "\"event_id\":\"e1\""));
    /* Open at the end: the connection appends ,"cursor":"..." and the closing brace. */
    assert_string_equal(ev->frame + ev->frame_len - 21, ",\"data\":{\"text\":\"hi\"}");
    socket_event_release(ev);
    assert_int_equal(socket_event_from_cloudevent("users", "bob", 3, rev, strlen(rev), &ev), CM_OK);
    assert_int_equal(ev->kind, SOCKET_EV_REVOKED);
    assert_string_equal(ev->sid, "s9");
    socket_event_release(ev);
    assert_int_equal(socket_event_from_cloudevent("messages", "c1", 2, "{", 1, &ev), CM_EINVAL);
    /* notification.created: whole frame for its recipient; notification.requested is not ours;
     * one without a recipient is malformed. */
    static const char note[] =
        "{\"id\":\"n1\",\"type\":\"notification.created\",\"tenant\":\"t1\","
        "\"time\":\"2024-07-01T12:00:01.250Z\",\"data\":{\"id\":\"n1\",\"user_id\":\"bob\","
        "\"type\":\"custom\",\"text\":\"hi\"}}";
    assert_int_equal(socket_event_from_cloudevent("notifications", "bob", 3, note, strlen(note), &ev),
                     CM_OK);
    assert_int_equal(ev->kind, SOCKET_EV_NOTIFICATION);
    assert_string_equal(ev->user_id, "bob");
    assert_string_equal(ev->event_id, "n1");
    assert_string_equal(ev->frame,
                        "{\"type\":\"notification.created\",\"event_id\":\"n1\",\"time\":"
                        "\"2024-07-01T12:00:01.250Z\",\"data\":{\"id\":\"n1\",\"user_id\":\"bob\","
                        "\"type\":\"custom\",\"text\":\"hi\"}}");
    assert_int_equal(ev->frame_len, strlen(ev->frame));
    socket_event_release(ev);
    static const char req[] = "{\"id\":\"r1\",\"type\":\"notification.requested\",\"tenant\":"
                              "\"t1\",\"data\":{}}";
    assert_int_equal(socket_event_from_cloudevent("notifications", "r1", 2, req, strlen(req), &ev),
                     CM_ENOTFOUND);
    static const char bad[] = "{\"id\":\"n2\",\"type\":\"notification.created\",\"tenant\":"
                              "\"t1\",\"data\":{\"id\":\"n2\"}}";
    assert_int_equal(socket_event_from_cloudevent("notifications", "bob", 3, bad, strlen(bad), &ev),
                     CM_EINVAL);
}

/* A log event's frame from the CloudEvent's text: the data's bytes as the producer wrote them
 * (the fast path, no tree); unusual events take the tree path and come out printed by cJSON. */
static void test_log_events_forward_their_data_as_written(void **state)
{
    static const char spaced[] =
        "{\"specversion\":\"1.0\",\"id\":\"e7\",\"type\":\"message.updated\",\"tenant\":\"t1\","
        "\"eseq\":12,\"time\":\"2026-01-01T00:00:00.000Z\",\"audience\":\"bob\","
        "\"data\":{\"text\": \"caf\u00e9 {[\\\"]}\",  \"n\":1.50, \"tags\":[1,{\"a\":null}]}}";
    static const char expect[] =
        "{\"type\":\"message.updated\",\"event_id\":\"e7\",\"conversation_id\":\"c1\",\"eseq\":12,"
        "\"time\":\"2026-01-01T00:00:00.000Z\",\"data\":{\"text\": \"caf\u00e9 {[\\\"]}\",  "
        "\"n\":1.50, \"tags\":[1,{\"a\":null}]}";
    socket_event *ev = NULL;

    (void)state;
    assert_int_equal(socket_event_from_cloudevent("messages", "c1", 2, spaced, strlen(spaced), &ev),
                     CM_OK);
    assert_string_equal(ev->frame, expect);
    assert_int_equal(ev->frame_len, strlen(expect));
    assert_int_equal(ev->eseq, 12);
    assert_string_equal(ev->type, "message.updated");
    assert_string_equal(ev->tenant, "t1");
    assert_string_equal(ev->audience, "bob");
    assert_int_equal(ev->key, cm_cursor_key("c1"));
    socket_event_release(ev);

    /* A newline between tokens: the tree path, which prints the data again. */
    static const char nl[] = "{\"id\":\"e1\",\"type\":\"message.created\",\"tenant\":\"t1\",\"eseq\":3,"
                             "\"data\":{\"text\": \"hi\",\n\"n\":1.50}}";
    assert_int_equal(socket_event_from_cloudevent("messages", "c1", 2, nl, strlen(nl), &ev), CM_OK);
    assert_string_equal(ev->frame, "{\"type\":\"message.created\",\"event_id\":\"e1\","
                                   "\"conversation_id\":\"c1\",\"eseq\":3,\"data\":{\"text\":\"hi\","
                                   "\"n\":1.5}");
    socket_event_release(ev);
    /* An escaped envelope string and a key that needs escaping: printed by cJSON. */
    static const char esc[] = "{\"id\":\"e\\\"2\",\"type\":\"message.created\",\"tenant\":\"t1\","
                              "\"eseq\":4,\"data\":{}}";
    assert_int_equal(socket_event_from_cloudevent("messages", "c\"1", 3, esc, strlen(esc), &ev),
                     CM_OK);
    assert_string_equal(ev->frame, "{\"type\":\"message.created\",\"event_id\":\"e\\\"2\","
                                   "\"conversation_id\":\"c\\\"1\",\"eseq\":4,\"data\":{}");
    socket_event_release(ev);
    /* Membership events keep their members and user (the index follows them). */
    static const char added[] = "{\"id\":\"e3\",\"type\":\"member.added\",\"tenant\":\"t1\","
                                "\"eseq\":5,\"data\":{\"user_id\":\"carol\",\"members\":[\"carol\",\"dan\"]}}";
    assert_int_equal(socket_event_from_cloudevent("conversations", "c1", 2, added, strlen(added), &ev),
                     CM_OK);
    assert_string_equal(ev->user_id, "carol");
    assert_int_equal(ev->nmembers, 2);
    assert_string_equal(ev->members[1], "dan");
    socket_event_release(ev);
    /* Not a log event (no eseq), a fractional eseq, malformed JSON, invalid UTF-8: as before. */
    static const char noseq[] = "{\"type\":\"message.created\",\"tenant\":\"t1\",\"data\":{}}";
    assert_int_equal(socket_event_from_cloudevent("messages", "c1", 2, noseq, strlen(noseq), &ev),
                     CM_ENOTFOUND);
    static const char frac[] = "{\"type\":\"message.created\",\"tenant\":\"t1\",\"eseq\":6.0,\"data\":{}}";
    assert_int_equal(socket_event_from_cloudevent("messages", "c1", 2, frac, strlen(frac), &ev), CM_OK);
    assert_int_equal(ev->eseq, 6);
    socket_event_release(ev);
    static const char cut[] = "{\"type\":\"message.created\",\"tenant\":\"t1\",\"eseq\":7,\"data\":{";
    assert_int_equal(socket_event_from_cloudevent("messages", "c1", 2, cut, strlen(cut), &ev),
                     CM_EINVAL);
    static const char trail[] = "{\"type\":\"message.created\",\"tenant\":\"t1\",\"eseq\":7,\"data\":{}} x";
    assert_int_equal(socket_event_from_cloudevent("messages", "c1", 2, trail, strlen(trail), &ev),
                     CM_EINVAL);
    static const char bad8[] = "{\"type\":\"message.created\",\"tenant\":\"t1\",\"eseq\":8,"
                               "\"data\":{\"text\":\"\xff\"}}";
    assert_int_equal(socket_event_from_cloudevent("messages", "c1", 2, bad8, strlen(bad8), &ev),
                     CM_EINVAL);
    /* A control byte after a non-ASCII character (past the word-at-a-time ASCII prefix): the
     * tree path, which prints the data again without it. DEL and valid UTF-8 stay on the fast
     * path, as written. */
    static const char *const cases[][2] = {
        {"{\"type\":\"message.created\",\"tenant\":\"t1\",\"eseq\":10,"
         "\"data\":{\"text\":\"\u00e9\",\t\"n\":1.50}}",
         "{\"type\":\"message.created\",\"conversation_id\":\"c1\","
         "\"eseq\":10,\"data\":{\"text\":\"\u00e9\",\"n\":1.5}"},
        {"{\"type\":\"message.created\",\"tenant\":\"t1\",\"eseq\":11,"
         "\"data\":{\"text\":\"\x7f\u00e9\"}}",
         "{\"type\":\"message.created\",\"conversation_id\":\"c1\","
         "\"eseq\":11,\"data\":{\"text\":\"\x7f\u00e9\"}"},
    };
    for (size_t k = 0; k < sizeof(cases) / sizeof(cases[0]); k++) {
        assert_int_equal(socket_event_from_cloudevent("messages", "c1", 2, cases[k][0],
                                                      strlen(cases[k][0]), &ev), CM_OK);
        assert_string_equal(ev->frame, cases[k][1]);
        socket_event_release(ev);
    }
    /* An escaped NUL in data: the tree path, which refuses it. */
    static const char nul[] = "{\"type\":\"message.created\",\"tenant\":\"t1\",\"eseq\":12,"
                              "\"data\":{\"text\":\"a\\u0000b\"}}";
    assert_int_not_equal(socket_event_from_cloudevent("messages", "c1", 2, nul, strlen(nul), &ev), CM_OK);
    /* More tokens than the fast path reads: the tree path delivers it whole. */
    char big[4096];
    size_t o = (size_t)snprintf(big, sizeof(big), "{\"type\":\"message.created\",\"tenant\":\"t1\","
                                                  "\"eseq\":9,\"data\":{\"ids\":[");
    for (int i = 0; i < 300; i++)
        o += (size_t)snprintf(big + o, sizeof(big) - o, "%s%d", i ? "," : "", i);
    o += (size_t)snprintf(big + o, sizeof(big) - o, "]}}");
    assert_int_equal(socket_event_from_cloudevent("messages", "c1", 2, big, o, &ev), CM_OK);
    assert_non_null(strstr(ev->frame, ",298,299]}"));
    socket_event_release(ev);
}

static void test_index_sets(void **state)
{
    socket_index *ix = socket_index_create();
    int a, b;
    char key[32];

    (void)state;
    for (int i = 0; i < 500; i++) { /* grows past its first bucket array */
        snprintf(key, sizeof(key), "t/c%d", i);
        assert_int_equal(socket_index_add(ix, key, &a), CM_OK);
    }
    assert_int_equal(socket_index_add(ix, "t/c1", &b), CM_OK);
    assert_int_equal(socket_index_add(ix, "t/c1", &b), CM_OK); /* once */
    assert_int_equal(socket_index_get(ix, "t/c1")->n, 2);
    socket_index_remove(ix, "t/c1", &a);
    socket_index_remove(ix, "t/c1", &b);
    assert_null(socket_index_get(ix, "t/c1"));
    assert_int_equal(socket_index_keys(ix), 499);
    socket_index_destroy(ix);
}

static void test_presence_batches_keep_each_users_latest(void **state)
{
    socket_presence_item items[4] = {
        {"bob", "online", 0, 1}, {"amy", "away", 5, 2}, {"bob", "offline", 1700000000000, 3},
        {"amy", "online", 6, 4}};
    char *text;
    cJSON *o, *a;

    (void)state;
    assert_null(socket_presence_batch_json(items, 0));
    text = socket_presence_batch_json(items, 4);
    o = cJSON_Parse(text);
    a = cJSON_GetObjectItem(o, "items");
    assert_string_equal(cJSON_GetObjectItem(o, "type")->valuestring, "presence");
    assert_int_equal(cJSON_GetArraySize(a), 2);
    assert_string_equal(cJSON_GetObjectItem(cJSON_GetArrayItem(a, 0), "user_id")->valuestring,
                        "amy");
    assert_string_equal(cJSON_GetObjectItem(cJSON_GetArrayItem(a, 0), "status")->valuestring,
                        "online");
    assert_string_equal(cJSON_GetObjectItem(cJSON_GetArrayItem(a, 1), "status")->valuestring,
                        "offline");
    assert_string_equal(cJSON_GetObjectItem(cJSON_GetArrayItem(a, 1), "last_seen")->valuestring,
                        "2023-11-14T22:13:20.000Z");
    cJSON_Delete(o);
    free(text);
}

static void test_ephemeral_messages_round_trip(void **state)
{
    char *convs[2] = {"c1", "c2"};
    char *msg = socket_typing_message("t", "c1", "bob", 1), *prefix, full[512];
    socket_event *ev = NULL;

    (void)state;
    assert_int_equal(socket_event_from_ephemeral(msg, strlen(msg), &ev), CM_OK);
    assert_int_equal(ev->kind, SOCKET_EV_EPHEMERAL);
    assert_string_equal(ev->type, "typing");
    assert_string_equal(ev->state, "start");
    assert_string_equal(ev->conversation_id, "c1");
    assert_non_null(strstr(ev->frame, "\"user_id\":\"bob\""));
    socket_event_release(ev);
    free(msg);
    /* The presence prefix is completed by the Redis script. */
    prefix = socket_presence_prefix("t", "bob", convs, 2);
    snprintf(full, sizeof(full), "%s,\"status\":\"away\",\"last_seen\":42}", prefix);
    assert_int_equal(socket_event_from_ephemeral(full, strlen(full), &ev), CM_OK);
    assert_string_equal(ev->type, "presence");
    assert_string_equal(ev->state, "away");
    assert_int_equal(ev->last_seen, 42);
    assert_int_equal(ev->nmembers, 2);
    assert_string_equal(ev->members[1], "c2");
    socket_event_release(ev);
    free(prefix);
    /* Unknown kinds, states and statuses are refused. */
    static const char *const bad[] = {
        "{}", "not json", "{\"k\":\"other\",\"tenant\":\"t\",\"user_id\":\"u\"}",
        "{\"k\":\"typing\",\"tenant\":\"t\",\"user_id\":\"u\",\"state\":\"maybe\","
        "\"conversation_id\":\"c\"}",
        "{\"k\":\"presence\",\"tenant\":\"t\",\"user_id\":\"u\",\"status\":\"invisible\","
        "\"conversations\":[]}",
        "{\"k\":\"presence\",\"tenant\":\"t\",\"user_id\":\"u\",\"status\":\"online\","
        "\"conversations\":[1]}"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        assert_int_equal(socket_event_from_ephemeral(bad[i], strlen(bad[i]), &ev), CM_EINVAL);
}

static void test_origins(void **state)
{
    static const char list[] = "https://app.example.com, http://localhost:3000";

    (void)state;
    assert_int_equal(socket_origin_allowed("", "https://evil.example"), 1);
    assert_int_equal(socket_origin_allowed(list, NULL), 1);
    assert_int_equal(socket_origin_allowed(list, "https://app.example.com"), 1);
    assert_int_equal(socket_origin_allowed(list, "HTTPS://APP.example.com"), 1);
    assert_int_equal(socket_origin_allowed(list, "http://localhost:3000"), 1);
    assert_int_equal(socket_origin_allowed(list, "https://app.example.com.evil"), 0);
    assert_int_equal(socket_origin_allowed(list, "https://app.example.co"), 0);
    assert_int_equal(socket_origin_allowed(list, "null"), 0);
    assert_int_equal(socket_origin_allowed(list, ""), 0);
    assert_int_equal(socket_origin_allowed("a, *", "https://x"), 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_frames_are_validated),
        cmocka_unit_test(test_send_body_drops_the_envelope),
        cmocka_unit_test(test_rejections_say_whether_to_retry),
        cmocka_unit_test(test_order_decision),
        cmocka_unit_test(test_breaker_opens_and_half_opens),
        cmocka_unit_test(test_cloudevents_become_frames),
        cmocka_unit_test(test_log_events_forward_their_data_as_written),
        cmocka_unit_test(test_index_sets),
        cmocka_unit_test(test_presence_batches_keep_each_users_latest),
        cmocka_unit_test(test_ephemeral_messages_round_trip),
        cmocka_unit_test(test_origins),
    };
    return cmocka_run_group_tests_name("socket_rules", tests, NULL, NULL);
}
