/* notification_contacts.c - where a user is reached besides the app: their e-mail address,
 * phone number (E.164) and locale, set by the tenant's backend (tenant_admin), which knows
 * which addresses it verified (PUT/GET/DELETE /v1/notifications/contacts/{user_id}). Users do
 * not set their own: an address anyone could point at a stranger would make the service a
 * spam and SMS-pumping relay. Scoped by the token's tenant. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/auth.h"
#include "common/clock.h"
#include "common/json.h"
#include "notification_channels.h"

int nf_email_valid(const char *s)
{
    size_t n = s ? strlen(s) : 0;
    const char *at, *dot;

    if (n < 3 || n > NF_EMAIL_MAX)
        return 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c <= 0x20 || c >= 0x7f || strchr("<>\"(),;:[]\\", c))
            return 0;
    }
    at = strchr(s, '@');
    if (at == NULL || at == s || strchr(at + 1, '@') != NULL)
        return 0;
    dot = strrchr(at + 1, '.');
    return dot != NULL && dot > at + 1 && dot[1] != '\0';
}

int nf_phone_valid(const char *s)
{
    size_t n = s ? strlen(s) : 0;
    /* ITU-T E.164: at most 15 digits; national numbers are never shorter than 8 with code. */
    if (n < 9 || n > 16 || s[0] != '+' || s[1] == '0')
        return 0;
    return strspn(s + 1, "0123456789") == n - 1;
}

static int locale_valid(const char *s)
{
    size_t n = strlen(s);
    /* BCP 47, loosely: a 2..3 letter language, then -subtags of 2..8 letters or digits. */
    if (n < 2 || n > 35 || strspn(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-") != n)
        return 0;
    return strcspn(s, "-") >= 2 && strcspn(s, "-") <= 3 && s[n - 1] != '-' && !strstr(s, "--");
}

cm_err nf_contact_load(nf_ctx *ctx, const char *tenant, const char *user, nf_contact *c)
{
    char id[200];
    bson_t f = BSON_INITIALIZER, doc;
    cm_err rc;

    memset(c, 0, sizeof(*c));
    snprintf(id, sizeof(id), "%s/%s", tenant, user);
    BSON_APPEND_UTF8(&f, "_id", id);
    rc = cm_mongo_find_one(ctx->db, NF_COLL_CONTACTS, &f, NULL, &doc);
    bson_destroy(&f);
    if (rc == CM_ENOTFOUND)
        return CM_OK;
    if (rc != CM_OK)
        return rc;
    snprintf(c->email, sizeof(c->email), "%s", cm_bson_str(&doc, "email", ""));
    snprintf(c->phone, sizeof(c->phone), "%s", cm_bson_str(&doc, "phone", ""));
    snprintf(c->locale, sizeof(c->locale), "%s", cm_bson_str(&doc, "locale", ""));
    bson_destroy(&doc);
    return CM_OK;
}

static cJSON *contact_json(const char *user, const nf_contact *c)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "user_id", user);
    if (c->email[0])
        cJSON_AddStringToObject(o, "email", c->email);
    else
        cJSON_AddNullToObject(o, "email");
    if (c->phone[0])
        cJSON_AddStringToObject(o, "phone", c->phone);
    else
        cJSON_AddNullToObject(o, "phone");
    if (c->locale[0])
        cJSON_AddStringToObject(o, "locale", c->locale);
    else
        cJSON_AddNullToObject(o, "locale");
    return o;
}

/* The {user_id} of the route, checked; 0 (answered) when it is not a user id. */
static const char *target(cm_http_req *req)
{
    const char *u = cm_http_param(req, "user_id");
    if (u == NULL || !cm_user_id_valid(u)) {
        cm_http_problem(req, 404, "not-found", "Not Found", "no user %s", u ? u : "");
        return NULL;
    }
    return u;
}

static int admin(cm_http_req *req, const cm_jwt_claims *c)
{
    if (cm_auth_can(c, "tenant.manage"))
        return 1;
    cm_http_problem(req, 403, "forbidden", "Forbidden",
                    "contacts are set by the tenant's backend: the permission tenant.manage");
    return 0;
}

/* A string field that may be absent or null (-> ""), else must pass `valid`. */
static cm_err field(const cJSON *body, const char *key, int (*valid)(const char *), char *out,
                    size_t cap, const char *rule, char *why, size_t n)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(body, key);
    out[0] = '\0';
    if (v == NULL || cJSON_IsNull(v))
        return CM_OK;
    if (!cJSON_IsString(v) || strlen(v->valuestring) >= cap || !valid(v->valuestring)) {
        snprintf(why, n, "field '%s' must be %s, or null", key, rule);
        return CM_EINVAL;
    }
    snprintf(out, cap, "%s", v->valuestring);
    return CM_OK;
}

/* PUT /v1/notifications/contacts/{user_id} {"email", "phone", "locale"}: replaces the user's
 * contact (a field left out or null: none). 200 with it as stored. */
void nf_contacts_put(cm_http_req *req, void *ud)
{
    static const char *const allowed[] = {"email", "phone", "locale", NULL};
    nf_ctx *ctx = ud;
    cm_jwt_claims c;
    cJSON *body;
    const char *user;
    nf_contact ct;
    char why[200], id[200];
    bson_t f = BSON_INITIALIZER, doc = BSON_INITIALIZER;
    cm_err rc;

    if (cm_auth_bearer(req, ctx->verifier, &c) != CM_OK || !admin(req, &c) ||
        (user = target(req)) == NULL || cm_http_json_body(req, &body) != CM_OK)
        goto out;
    if (cm_json_only_keys(body, allowed, why, sizeof(why)) ||
        field(body, "email", nf_email_valid, ct.email, sizeof(ct.email),
              "an e-mail address (local@domain, at most 254 characters)", why, sizeof(why)) ||
        field(body, "phone", nf_phone_valid, ct.phone, sizeof(ct.phone),
              "an E.164 phone number ('+' and 8..15 digits)", why, sizeof(why)) ||
        field(body, "locale", locale_valid, ct.locale, sizeof(ct.locale),
              "a BCP 47 language tag such as fr or pt-BR", why, sizeof(why))) {
        cm_http_reply_error(req, CM_EINVAL, why);
        goto out;
    }
    snprintf(id, sizeof(id), "%s/%s", c.tid, user);
    BSON_APPEND_UTF8(&f, "_id", id);
    {
        /* $set what is given, $unset what is not: the whole contact is replaced, as by PUT. */
        static const char *const names[] = {"email", "phone", "locale"};
        const char *vals[] = {ct.email, ct.phone, ct.locale};
        bson_t set, un;
        int unset = 0;
        BSON_APPEND_DOCUMENT_BEGIN(&doc, "$set", &set);
        BSON_APPEND_UTF8(&set, "tenant", c.tid);
        BSON_APPEND_UTF8(&set, "user_id", user);
        for (int i = 0; i < 3; i++)
            if (vals[i][0])
                BSON_APPEND_UTF8(&set, names[i], vals[i]);
        BSON_APPEND_DATE_TIME(&set, "updated_at", cm_clock_now_ms());
        bson_append_document_end(&doc, &set);
        for (int i = 0; i < 3; i++)
            unset |= vals[i][0] == '\0';
        if (unset) {
            BSON_APPEND_DOCUMENT_BEGIN(&doc, "$unset", &un);
            for (int i = 0; i < 3; i++)
                if (vals[i][0] == '\0')
                    BSON_APPEND_UTF8(&un, names[i], "");
            bson_append_document_end(&doc, &un);
        }
    }
    if ((rc = cm_mongo_update(ctx->db, NF_COLL_CONTACTS, &f, &doc, 1, 0, NULL)) != CM_OK) {
        cm_http_reply_error(req, rc, "the contact could not be stored");
        goto out;
    }
    cm_http_reply_json(req, 200, contact_json(user, &ct));
out:
    bson_destroy(&f);
    bson_destroy(&doc);
}

/* GET /v1/notifications/contacts/{user_id}: a tenant_admin, or the user themselves. */
void nf_contacts_get(cm_http_req *req, void *ud)
{
    nf_ctx *ctx = ud;
    cm_jwt_claims c;
    const char *user;
    nf_contact ct;
    cm_err rc;

    if (cm_auth_bearer(req, ctx->verifier, &c) != CM_OK || (user = target(req)) == NULL)
        return;
    if (strcmp(c.sub, user) != 0 && !admin(req, &c))
        return;
    if ((rc = nf_contact_load(ctx, c.tid, user, &ct)) != CM_OK) {
        cm_http_reply_error(req, rc, "the contact could not be read");
        return;
    }
    cm_http_reply_json(req, 200, contact_json(user, &ct));
}

/* DELETE /v1/notifications/contacts/{user_id}: 204, also when there was none. */
void nf_contacts_delete(cm_http_req *req, void *ud)
{
    nf_ctx *ctx = ud;
    cm_jwt_claims c;
    const char *user;
    char id[200];
    bson_t f = BSON_INITIALIZER;
    cm_err rc;

    if (cm_auth_bearer(req, ctx->verifier, &c) != CM_OK || !admin(req, &c) ||
        (user = target(req)) == NULL)
        goto out;
    snprintf(id, sizeof(id), "%s/%s", c.tid, user);
    BSON_APPEND_UTF8(&f, "_id", id);
    if ((rc = cm_mongo_delete(ctx->db, NF_COLL_CONTACTS, &f, 0, NULL)) != CM_OK) {
        cm_http_reply_error(req, rc, "the contact could not be deleted");
        goto out;
    }
    cm_http_reply_json(req, 204, NULL);
out:
    bson_destroy(&f);
}
