/* notification_prefs.c - a user's notification preferences: per type and channel (in_app,
 * push, email, sms), and quiet hours in their IANA time zone (GET/PUT /v1/notifications/preferences). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/auth.h"
#include "common/json.h"
#include "notification.h"

static void hhmm(int minutes, char out[8])
{
    unsigned h = (unsigned)(minutes / 60) % 24u, m = (unsigned)minutes % 60u;
    out[0] = (char)('0' + h / 10);
    out[1] = (char)('0' + h % 10);
    out[2] = ':';
    out[3] = (char)('0' + m / 10);
    out[4] = (char)('0' + m % 10);
    out[5] = '\0';
}

/* Reads stored preferences document `doc` into `p` (over the defaults). */
static void prefs_of_doc(const bson_t *doc, nf_prefs *p)
{
    nf_prefs_default(p);
    for (int t = 0; t < NF_TYPE_COUNT; t++) {
        char path[64];
        snprintf(path, sizeof(path), "types.%s.in_app", nf_type_name((nf_type)t));
        p->in_app[t] = cm_bson_bool(doc, path, 1);
        snprintf(path, sizeof(path), "types.%s.push", nf_type_name((nf_type)t));
        p->push[t] = cm_bson_bool(doc, path, 1);
        snprintf(path, sizeof(path), "types.%s.email", nf_type_name((nf_type)t));
        p->email[t] = cm_bson_bool(doc, path, 0);
        snprintf(path, sizeof(path), "types.%s.sms", nf_type_name((nf_type)t));
        p->sms[t] = cm_bson_bool(doc, path, 0);
    }
    p->email_digest = cm_bson_bool(doc, "email_digest", 0);
    if (cm_bson_str(doc, "quiet.time_zone", NULL) != NULL) {
        p->quiet = 1;
        p->quiet_start = (int)cm_bson_int(doc, "quiet.start", 0);
        p->quiet_end = (int)cm_bson_int(doc, "quiet.end", 0);
        snprintf(p->time_zone, sizeof(p->time_zone), "%s", cm_bson_str(doc, "quiet.time_zone", ""));
    }
}

cm_err nf_prefs_load(nf_ctx *ctx, const char *tenant, const char *user, nf_prefs *p)
{
    return nf_prefs_load_many(ctx, tenant, &user, 1, p);
}

typedef struct prefs_many {
    const char *tenant;
    const char *const *users;
    size_t n;
    nf_prefs *out;
} prefs_many;

static int collect_prefs(const bson_t *doc, void *ud)
{
    prefs_many *pm = ud;
    const char *user = cm_bson_str(doc, "user_id", NULL), *id = cm_bson_str(doc, "_id", "");
    size_t tl = strlen(pm->tenant);

    /* Older documents may lack user_id: the _id is "<tenant>/<user>". */
    if (user == NULL && strncmp(id, pm->tenant, tl) == 0 && id[tl] == '/')
        user = id + tl + 1;
    for (size_t i = 0; user && i < pm->n; i++)
        if (strcmp(pm->users[i], user) == 0)
            prefs_of_doc(doc, &pm->out[i]); /* a user listed twice gets both */
    return 0;
}

cm_err nf_prefs_load_many(nf_ctx *ctx, const char *tenant, const char *const *users, size_t n,
                          nf_prefs *out)
{
    prefs_many pm = {tenant, users, n, out};
    bson_t f = BSON_INITIALIZER, in, arr;
    char id[320], idx[24];
    cm_err rc;

    for (size_t i = 0; i < n; i++)
        nf_prefs_default(&out[i]);
    if (n == 0)
        return CM_OK;
    BSON_APPEND_DOCUMENT_BEGIN(&f, "_id", &in);
    BSON_APPEND_ARRAY_BEGIN(&in, "$in", &arr);
    for (size_t i = 0; i < n; i++) {
        snprintf(id, sizeof(id), "%s/%s", tenant, users[i]);
        snprintf(idx, sizeof(idx), "%zu", i);
        BSON_APPEND_UTF8(&arr, idx, id);
    }
    bson_append_array_end(&in, &arr);
    bson_append_document_end(&f, &in);
    rc = cm_mongo_find(ctx->db, NF_COLL_PREFS, &f, NULL, collect_prefs, &pm);
    bson_destroy(&f);
    return rc;
}

static cJSON *prefs_json(const nf_prefs *p)
{
    cJSON *o = cJSON_CreateObject(), *types = cJSON_AddObjectToObject(o, "types");
    for (int t = 0; t < NF_TYPE_COUNT; t++) {
        cJSON *c = cJSON_AddObjectToObject(types, nf_type_name((nf_type)t));
        cJSON_AddBoolToObject(c, "in_app", p->in_app[t]);
        cJSON_AddBoolToObject(c, "push", p->push[t]);
        cJSON_AddBoolToObject(c, "email", p->email[t]);
        cJSON_AddBoolToObject(c, "sms", p->sms[t]);
    }
    cJSON_AddBoolToObject(o, "email_digest", p->email_digest);
    if (p->quiet) {
        cJSON *q = cJSON_AddObjectToObject(o, "quiet_hours");
        char a[8], b[8];
        hhmm(p->quiet_start, a);
        hhmm(p->quiet_end, b);
        cJSON_AddStringToObject(q, "start", a);
        cJSON_AddStringToObject(q, "end", b);
        cJSON_AddStringToObject(q, "time_zone", p->time_zone);
    } else {
        cJSON_AddNullToObject(o, "quiet_hours");
    }
    return o;
}

/* GET /v1/notifications/preferences: the caller's, every type listed. */
void nf_prefs_get(cm_http_req *req, void *ud)
{
    nf_ctx *ctx = ud;
    cm_jwt_claims c;
    nf_prefs p;
    cm_err rc;

    if (cm_auth_bearer(req, ctx->verifier, &c) != CM_OK)
        return;
    if ((rc = nf_prefs_load(ctx, c.tid, c.sub, &p)) != CM_OK) {
        cm_http_reply_error(req, rc, "the preferences could not be read");
        return;
    }
    cm_http_reply_json(req, 200, prefs_json(&p));
}

/* Parses the body of a PUT into `p`; CM_EINVAL with the reason in `why`. */
static cm_err parse(const cJSON *body, nf_prefs *p, char *why, size_t n)
{
    static const char *const top[] = {"types", "quiet_hours", "email_digest", NULL};
    static const char *const chans[] = {"in_app", "push", "email", "sms", NULL};
    static const char *const qkeys[] = {"start", "end", "time_zone", NULL};
    const cJSON *types = cJSON_GetObjectItemCaseSensitive(body, "types"),
                *q = cJSON_GetObjectItemCaseSensitive(body, "quiet_hours"), *it;
    const char *start = NULL, *end = NULL, *tz = NULL;

    nf_prefs_default(p);
    if (cm_json_only_keys(body, top, why, n))
        return CM_EINVAL;
    if (types != NULL && !cJSON_IsObject(types)) {
        snprintf(why, n, "field 'types' must be an object of notification types");
        return CM_EINVAL;
    }
    cJSON_ArrayForEach(it, types)
    {
        nf_type t = nf_type_parse(it->string);
        int v;
        if (t == NF_TYPE_COUNT) {
            snprintf(why, n, "unknown notification type '%.40s' (mention, reply, message, added, custom)",
                     it->string);
            return CM_EINVAL;
        }
        if (!cJSON_IsObject(it) || cm_json_only_keys(it, chans, why, n)) {
            if (!cJSON_IsObject(it))
                snprintf(why, n, "types.%s must be an object {\"in_app\": bool, \"push\": bool, \"email\": bool, \"sms\": bool}",
                         it->string);
            return CM_EINVAL;
        }
        v = 1;
        if (cm_json_bool(it, "in_app", 0, &v, why, n))
            return CM_EINVAL;
        p->in_app[t] = v;
        v = 1;
        if (cm_json_bool(it, "push", 0, &v, why, n))
            return CM_EINVAL;
        p->push[t] = v;
        v = 0;
        if (cm_json_bool(it, "email", 0, &v, why, n))
            return CM_EINVAL;
        p->email[t] = v;
        v = 0;
        if (cm_json_bool(it, "sms", 0, &v, why, n))
            return CM_EINVAL;
        p->sms[t] = v;
    }
    if (cm_json_bool(body, "email_digest", 0, &p->email_digest, why, n))
        return CM_EINVAL;
    if (q == NULL || cJSON_IsNull(q))
        return CM_OK;
    if (!cJSON_IsObject(q) || cm_json_only_keys(q, qkeys, why, n) ||
        cm_json_string(q, "start", 1, 5, 5, &start, why, n) ||
        cm_json_string(q, "end", 1, 5, 5, &end, why, n) ||
        cm_json_string(q, "time_zone", 1, 1, 63, &tz, why, n)) {
        if (!cJSON_IsObject(q))
            snprintf(why, n, "field 'quiet_hours' must be an object or null");
        return CM_EINVAL;
    }
    p->quiet_start = nf_parse_hhmm(start);
    p->quiet_end = nf_parse_hhmm(end);
    if (p->quiet_start < 0 || p->quiet_end < 0) {
        snprintf(why, n, "quiet_hours start and end must be HH:MM (00:00..23:59)");
        return CM_EINVAL;
    }
    if (p->quiet_start == p->quiet_end) {
        snprintf(why, n, "quiet_hours start and end must differ");
        return CM_EINVAL;
    }
    if (!nf_time_zone_valid(tz)) {
        snprintf(why, n, "quiet_hours time_zone must be an IANA time zone such as Europe/Paris");
        return CM_EINVAL;
    }
    p->quiet = 1;
    snprintf(p->time_zone, sizeof(p->time_zone), "%s", tz);
    return CM_OK;
}

/* PUT /v1/notifications/preferences: replaces the caller's preferences (types left out are
 * on; quiet_hours left out or null: none). Answers them as stored. */
void nf_prefs_put(cm_http_req *req, void *ud)
{
    nf_ctx *ctx = ud;
    cm_jwt_claims c;
    cJSON *body;
    nf_prefs p;
    char why[200], id[320];
    bson_t f = BSON_INITIALIZER, u = BSON_INITIALIZER, set, types, q, un;
    cm_err rc;

    if (cm_auth_bearer(req, ctx->verifier, &c) != CM_OK || cm_http_json_body(req, &body) != CM_OK)
        goto out;
    if (parse(body, &p, why, sizeof(why)) != CM_OK) {
        cm_http_reply_error(req, CM_EINVAL, why);
        goto out;
    }
    snprintf(id, sizeof(id), "%s/%s", c.tid, c.sub);
    BSON_APPEND_UTF8(&f, "_id", id);
    BSON_APPEND_DOCUMENT_BEGIN(&u, "$set", &set);
    BSON_APPEND_UTF8(&set, "tenant", c.tid);
    BSON_APPEND_UTF8(&set, "user_id", c.sub);
    BSON_APPEND_DOCUMENT_BEGIN(&set, "types", &types);
    for (int t = 0; t < NF_TYPE_COUNT; t++) {
        bson_t ch;
        BSON_APPEND_DOCUMENT_BEGIN(&types, nf_type_name((nf_type)t), &ch);
        BSON_APPEND_BOOL(&ch, "in_app", p.in_app[t]);
        BSON_APPEND_BOOL(&ch, "push", p.push[t]);
        BSON_APPEND_BOOL(&ch, "email", p.email[t]);
        BSON_APPEND_BOOL(&ch, "sms", p.sms[t]);
        bson_append_document_end(&types, &ch);
    }
    bson_append_document_end(&set, &types);
    BSON_APPEND_BOOL(&set, "email_digest", p.email_digest);
    if (p.quiet) {
        BSON_APPEND_DOCUMENT_BEGIN(&set, "quiet", &q);
        BSON_APPEND_INT32(&q, "start", p.quiet_start);
        BSON_APPEND_INT32(&q, "end", p.quiet_end);
        BSON_APPEND_UTF8(&q, "time_zone", p.time_zone);
        bson_append_document_end(&set, &q);
    }
    bson_append_document_end(&u, &set);
    if (!p.quiet) {
        BSON_APPEND_DOCUMENT_BEGIN(&u, "$unset", &un);
        BSON_APPEND_UTF8(&un, "quiet", "");
        bson_append_document_end(&u, &un);
    }
    if ((rc = cm_mongo_update(ctx->db, NF_COLL_PREFS, &f, &u, 1, 0, NULL)) != CM_OK) {
        cm_http_reply_error(req, rc, "the preferences could not be stored");
        goto out;
    }
    cm_http_reply_json(req, 200, prefs_json(&p));
out:
    bson_destroy(&f);
    bson_destroy(&u);
}
