/* socket_presence_http.c - GET /v1/users/{id}/presence on the socket service's HTTP side. */
#include <string.h>

#include "common/auth.h"
#include "common/clock.h"
#include "socket_ephemeral.h"

/* GET /v1/users/{id}/presence: what the user looks like to others (invisible reads offline)
 * and when they were last seen online. Scoped to the caller's tenant: a user who never
 * connected in it, or another tenant's, is a 404. The user themself also sees the status they
 * chose (`own`). */
void socket_presence_get(cm_http_req *req, void *ud)
{
    socket_presence_ctx *ctx = ud;
    const char *id = cm_http_param(req, "id");
    char status[16], own[16], when[CM_RFC3339_LEN];
    int64_t seen = 0;
    cm_jwt_claims claims;
    cJSON *body;
    cm_err rc;

    if (cm_auth_bearer(req, ctx->verifier, &claims) != CM_OK)
        return;
    if (!cm_user_id_valid(id)) {
        cm_http_problem(req, 404, "not-found", "Not Found", "no such user");
        return;
    }
    rc = socket_ephemeral_read(ctx->eph, claims.tid, id, status, &seen, own);
    if (rc == CM_ENOTFOUND) {
        cm_http_problem(req, 404, "not-found", "Not Found", "no presence known for this user");
        return;
    }
    if (rc != CM_OK) {
        cm_http_reply_error(req, rc, "presence store unavailable");
        return;
    }
    body = cJSON_CreateObject();
    cJSON_AddStringToObject(body, "user_id", id);
    cJSON_AddStringToObject(body, "status", status);
    if (seen > 0) {
        cm_clock_rfc3339(seen, when);
        cJSON_AddStringToObject(body, "last_seen", when);
    } else {
        cJSON_AddNullToObject(body, "last_seen");
    }
    if (strcmp(claims.sub, id) == 0)
        cJSON_AddStringToObject(body, "own", own);
    cm_http_reply_json(req, 200, body);
}
