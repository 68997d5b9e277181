/* messaging_attachments.c - GET /internal/v1/messaging/attachments/{media_id}?tenant=&user=:
 * the media service asks whether a user may read a media object because a message that
 * references it is in a conversation the user sees (issue 8: "members of a conversation whose
 * message references it"). The rule itself is messaging_member_sees (messaging_rules.c). */
#include <stdio.h>
#include <string.h>

#include "common/auth.h"
#include "common/log.h"
#include "messaging.h"

/* Messages looked at per question: a media object is referenced by its message and by the
 * forwarded copies of it (at most 5 conversations per forward); past this many references
 * the answer is "no" rather than an unbounded scan. */
#define REFS_MAX 200

typedef struct access_scan {
    messaging_ctx *ctx;
    const char *user;
    cm_err rc;
    int seen;
    char cid[CM_UUID_STRLEN]; /* the conversation that grants access */
    char mid[CM_UUID_STRLEN];
    char last_cid[CM_UUID_STRLEN]; /* memo of the last member record read */
    int have_member;
    bson_t member;
} access_scan;

static int look_at(const bson_t *msg, void *ud)
{
    access_scan *a = ud;
    const char *cid = cm_bson_str(msg, "conversation_id", "");
    char key[MSG_MEMBER_KEY_MAX];

    a->seen++;
    if (strcmp(cid, a->last_cid) != 0) {
        if (a->have_member)
            bson_destroy(&a->member);
        a->have_member = 0;
        snprintf(a->last_cid, sizeof(a->last_cid), "%s", cid);
        messaging_member_key(cid, a->user, key);
        /* Any state: a record that says "left" still grants what was sent before. */
        cm_err rc = messaging_find_id(a->ctx, MSG_COLL_MEMBERS, key, &a->member);
        if (rc == CM_OK)
            a->have_member = 1;
        else if (rc != CM_ENOTFOUND) {
            a->rc = rc;
            return 1;
        }
    }
    if (a->have_member &&
        messaging_member_sees(cm_bson_str(&a->member, "state", NULL),
                              cm_bson_int(&a->member, "left_seq", -1),
                              cm_bson_int(&a->member, "left_at", 0), cm_bson_int(msg, "seq", 0),
                              cm_bson_int(msg, "created_at", 0))) {
        snprintf(a->cid, sizeof(a->cid), "%s", cid);
        snprintf(a->mid, sizeof(a->mid), "%s", cm_bson_str(msg, "_id", ""));
        return 1;
    }
    return 0;
}

void messaging_attachment_access(cm_http_req *req, void *ud)
{
    messaging_ctx *ctx = ud;
    const char *tenant = cm_http_query(req, "tenant"), *user = cm_http_query(req, "user");
    const char *media = cm_http_param(req, "media_id");
    bson_t f = BSON_INITIALIZER, opts = BSON_INITIALIZER, sort, proj;
    access_scan a = {0};
    cm_err rc;

    if (tenant == NULL || !cm_user_id_valid(tenant) || user == NULL || !cm_user_id_valid(user)) {
        cm_http_reply_error(req, CM_EINVAL, "query parameters 'tenant' and 'user' are required");
        goto out;
    }
    if (media == NULL || !cm_uuid_valid(media)) {
        cm_http_reply_error(req, CM_ENOTFOUND, "no message of a conversation the user sees references this media");
        goto out;
    }
    BSON_APPEND_UTF8(&f, "attachments", media);
    BSON_APPEND_UTF8(&f, "tenant", tenant);
    /* Grouped by conversation, so one member record is read per conversation. */
    BSON_APPEND_DOCUMENT_BEGIN(&opts, "sort", &sort);
    BSON_APPEND_INT32(&sort, "conversation_id", 1);
    BSON_APPEND_INT32(&sort, "seq", 1);
    bson_append_document_end(&opts, &sort);
    BSON_APPEND_DOCUMENT_BEGIN(&opts, "projection", &proj);
    BSON_APPEND_INT32(&proj, "conversation_id", 1);
    BSON_APPEND_INT32(&proj, "seq", 1);
    BSON_APPEND_INT32(&proj, "created_at", 1);
    bson_append_document_end(&opts, &proj);
    BSON_APPEND_INT64(&opts, "limit", REFS_MAX);
    a.ctx = ctx;
    a.user = user;
    a.rc = CM_OK;
    rc = cm_mongo_find(ctx->db, MSG_COLL_MESSAGES, &f, &opts, look_at, &a);
    if (a.have_member)
        bson_destroy(&a.member);
    if (rc == CM_OK)
        rc = a.rc;
    if (rc != CM_OK) {
        cm_http_reply_error(req, rc, "the messages could not be read");
        goto out;
    }
    if (a.cid[0] == '\0') {
        if (a.seen == REFS_MAX)
            cm_warn("media %s: more than %d references; access checked on the first only", media, REFS_MAX);
        cm_http_reply_error(req, CM_ENOTFOUND, "no message of a conversation the user sees references this media");
        goto out;
    }
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "conversation_id", a.cid);
    cJSON_AddStringToObject(o, "message_id", a.mid);
    cm_http_reply_json(req, 200, o);
out:
    bson_destroy(&f);
    bson_destroy(&opts);
}
